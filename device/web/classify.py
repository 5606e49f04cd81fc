"""Classify uploaded files: every file is checked first (and decoded, to be sure it is whole), then
classified; one bad file refuses the whole request, so a 4xx never leaves half of an upload stored.

Memory stays bounded with many large files: werkzeug spools uploads to temporary files, each file is
read and decoded on its own, and the decoded pixels of the check pass are dropped (each accepted file
is decoded a second time when its turn comes to be classified)."""

from __future__ import annotations

from flask import current_app
from werkzeug.datastructures import FileStorage

from device.optics.analyse import ScaleArg, parse_scale
from device.preprocess import decode_image
from device.web.upload_check import CheckedImage, UploadRejected, check_upload

MAX_FILES = 50


def resolve_sample(store, sample_id: str | None) -> str | None:
    sample_id = (sample_id or "").strip() or None
    if sample_id is None:
        return None
    sample = store.get_sample(sample_id)
    if sample is None:
        raise UploadRejected(404, f"no sample {sample_id}")
    if sample["status"] != "open":
        raise UploadRejected(409, f"sample {sample['slide_id']} is finished: start a new sample")
    return sample_id


def read_limited(fs: FileStorage, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes: enough to tell "too large" without reading a huge file in."""
    return fs.stream.read(max_bytes + 1)


def check_files(files: list[FileStorage], max_bytes: int) -> list[tuple[FileStorage, CheckedImage]]:
    files = [f for f in files if f is not None and (f.filename or f.content_length)]
    if not files:
        raise UploadRejected(400, "no file: send one or more images in the form field 'file'")
    if len(files) > MAX_FILES:
        raise UploadRejected(413, f"{len(files)} files in one upload; at most {MAX_FILES}")
    out = []
    for fs in files:
        checked = check_upload(fs.filename, read_limited(fs, max_bytes), max_bytes=max_bytes)
        checked.rgb = None  # decoded again when classified: one image in memory at a time
        out.append((fs, checked))
    return out


def resolve_scale(value: str | None) -> ScaleArg | str:
    """The form's `um_per_px`: empty or "profile" → the active profile; "auto"; "model" (assumed at
    the models' scale, the old behaviour); or a number of µm per pixel."""
    v = (value or "").strip().lower()
    if v in ("", "profile"):
        return "profile"
    if v == "model":
        return None
    try:
        return parse_scale(v)
    except ValueError as exc:
        raise UploadRejected(400, str(exc)) from exc


def classify_files(
    files: list[FileStorage], sample_id: str | None, user: str | None, um_per_px: str | None = None
) -> list[dict]:
    ext = current_app.extensions["smearscope"]
    max_bytes = ext.config.web.max_upload_mb * 10**6
    scale = resolve_scale(um_per_px)
    sample_id = resolve_sample(ext.store, sample_id)
    checked = check_files(files, max_bytes)
    out = []
    for fs, img in checked:
        fs.stream.seek(0)
        rgb = decode_image(read_limited(fs, max_bytes), name=img.filename)
        rec = ext.services.classify_upload(
            rgb, filename=img.filename, sample_id=sample_id, user=user, um_per_px=scale
        )
        out.append(
            {"file": img.filename, "format": img.kind, "width": img.width, "height": img.height, **rec}
        )
    return out
