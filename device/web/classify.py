"""Classify uploaded files: every file is checked first (and decoded, to be sure it is whole), then
classified; one bad file refuses the whole request, so a 4xx never leaves half of an upload stored.

Memory stays bounded with many large files and many requests: werkzeug spools uploads to temporary
files, each file is read and decoded on its own, decoding is capped in pixels (upload_check.
decode_bounded), at most `[web] decode_slots` files are decoded or classified at once across all
requests (others wait up to DECODE_WAIT_S, then get 503), and the decoded pixels of the check pass are
dropped (each accepted file is decoded a second time when its turn comes to be classified)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from flask import current_app
from flask_babel import gettext
from werkzeug.datastructures import FileStorage

from device.optics.analyse import ScaleArg, parse_scale
from device.store.store import DiskFullError
from device.web.upload_check import CheckedImage, UploadRejected, check_upload, decode_bounded

MAX_FILES = 50
#: How long a file waits for a decode slot before the request is answered 503 (try again).
DECODE_WAIT_S = 30.0


@contextlib.contextmanager
def decode_slot(slots: threading.Semaphore, wait_s: float = DECODE_WAIT_S) -> Iterator[None]:
    if not slots.acquire(timeout=wait_s):
        raise UploadRejected(
            503, gettext("the station is busy decoding other uploads: try again in a minute"), "busy"
        )
    try:
        yield
    finally:
        slots.release()


def resolve_sample(store, sample_id: str | None) -> str | None:
    sample_id = (sample_id or "").strip() or None
    if sample_id is None:
        return None
    sample = store.get_sample(sample_id)
    if sample is None:
        raise UploadRejected(404, gettext("no sample %(id)s", id=sample_id), "sample")
    if sample["status"] != "open":
        raise UploadRejected(
            409,
            gettext("sample %(slide)s is finished: start a new sample", slide=sample["slide_id"]),
            "finished",
        )
    return sample_id


def read_limited(fs: FileStorage, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes: enough to tell "too large" without reading a huge file in."""
    return fs.stream.read(max_bytes + 1)


def file_size(fs: FileStorage) -> int | None:
    """The upload's real size (werkzeug spools it to a seekable file), so a 413 names it."""
    try:
        pos = fs.stream.tell()
        fs.stream.seek(0, os.SEEK_END)
        size = fs.stream.tell()
        fs.stream.seek(pos)
        return size
    except (OSError, AttributeError, ValueError):
        return None


def check_files(
    files: list[FileStorage], max_bytes: int, max_decode_pixels: int, slots: threading.Semaphore
) -> list[tuple[FileStorage, CheckedImage]]:
    files = [f for f in files if f is not None and (f.filename or f.content_length)]
    if not files:
        raise UploadRejected(
            400, gettext("no file: send one or more images in the form field 'file'"), "no_file"
        )
    if len(files) > MAX_FILES:
        raise UploadRejected(
            413,
            gettext("%(n)s files in one upload; at most %(max)s", n=len(files), max=MAX_FILES),
            "files",
        )
    out = []
    for fs in files:
        size = file_size(fs)
        if size is not None and size > max_bytes:  # refused by its size alone: nothing is read in
            check_upload(fs.filename, b"", max_bytes=max_bytes, size=size)
        with decode_slot(slots):
            checked = check_upload(
                fs.filename,
                read_limited(fs, max_bytes),
                max_bytes=max_bytes,
                size=size,
                max_decode_pixels=max_decode_pixels,
            )
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
        raise UploadRejected(400, str(exc), "scale") from exc


def classify_files(
    files: list[FileStorage], sample_id: str | None, user: str | None, um_per_px: str | None = None
) -> list[dict]:
    ext = current_app.extensions["smearscope"]
    max_bytes = ext.config.web.max_upload_mb * 10**6
    scale = resolve_scale(um_per_px)
    sample_id = resolve_sample(ext.store, sample_id)
    if ext.store.refresh_disk_state():
        raise UploadRejected(
            507, gettext("storage full: nothing was stored; free disk space and upload again"), "storage"
        )
    max_decode = int(ext.config.web.max_decode_megapixels * 1e6)
    checked = check_files(files, max_bytes, max_decode, ext.decode_slots)
    out = []
    for fs, img in checked:
        fs.stream.seek(0)
        try:
            with decode_slot(ext.decode_slots):
                rgb = decode_bounded(
                    read_limited(fs, max_bytes), img.kind, img.width, img.height, max_pixels=max_decode,
                    name=img.filename,
                )  # fmt: skip
                rec = ext.services.classify_upload(
                    rgb, filename=img.filename, sample_id=sample_id, user=user, um_per_px=scale
                )
                del rgb
        except DiskFullError as exc:
            done = ", ".join(r["file"] for r in out) or "none"
            raise UploadRejected(
                507,
                f"storage full: {img.filename} and the files after it were NOT stored ({exc}); "
                f"stored before it: {done}. Free disk space and upload the rest again",
                "storage_partial",
            ) from exc
        out.append(
            {"file": img.filename, "format": img.kind, "width": img.width, "height": img.height, **rec}
        )
    return out
