"""Reviewed fields out of the hub as a training folder (`smearscope-hub export-dataset`, dashboard zip).

Layout (what `smearscope train --data DIR` reads as is):

    DIR/<label>/<record id>.jpg      one folder per label id (the reviewed label; see below)
    DIR/manifest.json                 format "smearscope-dataset" v1: filters, counts, one entry per image
    DIR/manifest.csv                  the same entries for a spreadsheet (formula-like cells defused)

Which label: a technician's latest review of the record (the highest device sequence number among its
reviews: the device's own order, which a clock jump cannot scramble). A review that agrees carries the
model's label, so it keeps it. Records without a review are left out unless `include_unreviewed`; they
then go under the model's call with `reviewed: false`. The group id (for splitting) is the sample id,
or the record id for a field taken outside a sample.

Labels are device text and become folder names: one that `hub.names` refuses (reserved, unsafe) is
skipped and counted. Labels equal ignoring case are one class (`Benign` and `benign` would otherwise be
two classes, and one folder on macOS or Windows): the class is named by the spelling most of its images
carry, ties going to the first in code-point order (`Benign` before `benign`); `reviewed_label` and
`model_label` keep what was sent, `label_spellings` in the manifest lists every merge.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common import csvsafe
from common.wording import DISCLAIMER
from hub import names
from hub.models import Device, Image, Result
from hub.records import RecordError, parse_time

FORMAT = "smearscope-dataset"
VERSION = 1
LABEL_FOLD_RULE = (
    "labels equal ignoring case (Unicode NFC + casefold) are one class, named by the spelling most of its "
    "images carry (ties: the first in code-point order)"
)
CSV_COLUMNS = [
    "path",
    "label",
    "reviewed",
    "record_id",
    "device",
    "sample_id",
    "group",
    "captured_at",
    "model_label",
    "model_confidence",
    "model_abstained",
    "reviewed_label",
    "reviewer",
    "reviewed_at",
    "review_id",
    "um_per_px",
    "image_sha256",
]
_IN_CHUNK = 500  # ids per IN (...) query
#: Rows fetched from the database at a time (memory stays bounded on a large hub).
FETCH_ROWS = 1000


class ExportError(RuntimeError):
    """The export cannot be written; the message says why."""


@dataclass(frozen=True)
class ExportFilter:
    since: datetime | None = None  # latest review time (capture time when unreviewed) at or after
    devices: tuple[str, ...] = ()  # device names; empty = all
    disagreements_only: bool = False  # the review changed the model's label
    include_unreviewed: bool = False  # unreviewed fields under the model's call, reviewed=false

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "devices": sorted(self.devices),
            "disagreements_only": self.disagreements_only,
            "include_unreviewed": self.include_unreviewed,
        }


@dataclass(frozen=True)
class ExportEntry:
    """One image of the export (a row of the manifest)."""

    path: str
    label: str
    reviewed: bool
    record_id: str
    device: str
    sample_id: str | None
    group: str
    captured_at: str
    model_label: str
    model_confidence: float
    model_abstained: bool
    reviewed_label: str | None
    reviewer: str | None
    reviewed_at: str | None
    review_id: str | None
    um_per_px: float | None
    image_sha256: str


@dataclass
class Selection:
    entries: list[ExportEntry] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    spellings: dict[str, list[str]] = field(default_factory=dict)  # class -> its spellings (when > 1)


def parse_since(text: str) -> datetime:
    """`2026-11-01` or a full ISO-8601 time (UTC when no zone is given)."""
    try:
        return parse_time(text, "--since")
    except RecordError as exc:
        raise ExportError(str(exc)) from exc


def _um_per_px(rec: dict[str, Any]) -> float | None:
    """The record's µm/px when the station knew it (calibrated acquisition), else None."""
    for value in (rec.get("um_per_px"), (rec.get("acquisition") or {}).get("um_per_px")):
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1000:
            return float(value)
    return None


def _latest_reviews(session: Session, device_ids: list[int] | None) -> dict[tuple[str, int], Result]:
    """The latest review per (reviewed record, device): only a review by the record's own device
    counts (another device's "review", stored before the hub enforced ownership, is ignored)."""
    q = select(Result).where(Result.kind == "review", Result.review_of.is_not(None))
    if device_ids is not None:
        q = q.where(Result.device_id.in_(device_ids))
    latest: dict[tuple[str, int], Result] = {}
    for r in session.scalars(q.execution_options(yield_per=FETCH_ROWS)):
        key = (r.review_of, r.device_id)
        cur = latest.get(key)
        if cur is None or (r.seq, r.received_at) > (cur.seq, cur.received_at):
            latest[key] = r
    return latest


def _existing_images(session: Session, shas: Iterable[str]) -> set[str]:
    wanted = sorted(set(shas))
    have: set[str] = set()
    for i in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[i : i + _IN_CHUNK]
        have.update(session.scalars(select(Image.sha256).where(Image.sha256.in_(chunk))))
    return have


def select_entries(session: Session, flt: ExportFilter) -> Selection:
    """The images the filter keeps, sorted by path (so the same hub state gives the same export)."""
    devices = {d.id: d.name for d in session.scalars(select(Device))}
    device_ids = _device_ids(devices, flt.devices)
    reviews = _latest_reviews(session, device_ids)
    out = Selection()
    q = select(Result).where(Result.kind == "classification")
    if device_ids is not None:
        q = q.where(Result.device_id.in_(device_ids))
    for r in session.scalars(q.execution_options(yield_per=FETCH_ROWS)):
        rv = reviews.get((r.id, r.device_id))
        skip = _skip_reason(r, rv, flt)
        if skip is not None:
            out.skipped[skip] += 1
            continue
        out.entries.append(_entry(r, rv, devices))
    have = _existing_images(session, (e.image_sha256 for e in out.entries))
    kept = [e for e in out.entries if e.image_sha256 in have]
    if len(kept) < len(out.entries):
        out.skipped["image not on the hub"] += len(out.entries) - len(kept)
    out.entries, out.spellings = fold_labels(kept)
    out.entries.sort(key=lambda e: e.path)
    return out


def _device_ids(devices: dict[int, str], wanted: Sequence[str]) -> list[int] | None:
    """The ids of the devices named in the filter (None: every device); an unknown name is an error."""
    if not wanted:
        return None
    by_name = {name: i for i, name in devices.items()}
    unknown = sorted(set(wanted) - set(by_name))
    if unknown:
        raise ExportError(f"no device named {', '.join(unknown)} (known: {', '.join(sorted(by_name))})")
    return [by_name[n] for n in wanted]


def _skip_reason(r: Result, rv: Result | None, flt: ExportFilter) -> str | None:
    """Why the filter leaves record `r` (with its latest review `rv`) out, or None when it keeps it."""
    if r.image_sha256 is None:
        return "no image"
    if rv is None and not flt.include_unreviewed:
        return "not reviewed"
    if flt.disagreements_only and (rv is None or names.fold(rv.label) == names.fold(r.label)):
        return "agrees with the model" if rv else "not reviewed"
    when = rv.captured_at if rv is not None else r.captured_at
    if flt.since is not None and parse_time(when, "captured_at") < flt.since:
        return "before --since"
    label = rv.label if rv is not None else r.label
    if names.problem(label) is not None:
        return "label not usable as a folder name"
    return None


def _entry(r: Result, rv: Result | None, devices: dict[int, str]) -> ExportEntry:
    """Record `r` as an export entry, under its reviewed label when it has a review."""
    label = rv.label if rv is not None else r.label
    rec = json.loads(r.record_json)
    review_rec = json.loads(rv.record_json) if rv is not None else {}
    return ExportEntry(
        path=f"{label}/{r.id}.jpg",
        label=label,
        reviewed=rv is not None,
        record_id=r.id,
        device=devices.get(r.device_id, ""),
        sample_id=r.sample_id,
        group=r.sample_id or r.id,
        captured_at=r.captured_at,
        model_label=r.label,
        model_confidence=round(float(r.confidence), 6),
        model_abstained=bool(r.abstained),
        reviewed_label=rv.label if rv is not None else None,
        reviewer=review_rec.get("reviewer") if rv is not None else None,
        reviewed_at=rv.captured_at if rv is not None else None,
        review_id=rv.id if rv is not None else None,
        um_per_px=_um_per_px(rec),
        image_sha256=r.image_sha256,
    )


def fold_labels(entries: list[ExportEntry]) -> tuple[list[ExportEntry], dict[str, list[str]]]:
    """One class per label ignoring case (LABEL_FOLD_RULE); returns the entries under their class's
    spelling and, for classes sent in more than one spelling, those spellings."""
    by_fold: dict[str, Counter[str]] = {}
    for e in entries:
        by_fold.setdefault(names.fold(e.label), Counter())[e.label] += 1
    chosen: dict[str, str] = {}
    spellings: dict[str, list[str]] = {}
    for key, counts in by_fold.items():
        chosen[key] = min(counts, key=lambda s: (-counts[s], s))
        if len(counts) > 1:
            spellings[chosen[key]] = sorted(counts)
    out = []
    for e in entries:
        label = chosen[names.fold(e.label)]
        out.append(e if label == e.label else replace(e, label=label, path=f"{label}/{e.record_id}.jpg"))
    return out, dict(sorted(spellings.items()))


def manifest(sel: Selection, flt: ExportFilter) -> dict[str, Any]:
    """The manifest.json document (no export time in it: the same hub state gives the same bytes)."""
    entries = sel.entries
    return {
        "format": FORMAT,
        "version": VERSION,
        "disclaimer": DISCLAIMER,
        "labels": sorted({e.label for e in entries}),
        "filters": flt.to_json(),
        "counts": {
            "images": len(entries),
            "reviewed": sum(e.reviewed for e in entries),
            "unreviewed": sum(not e.reviewed for e in entries),
            "disagreements": sum(
                e.reviewed and names.fold(e.label) != names.fold(e.model_label) for e in entries
            ),
            "per_label": dict(sorted(Counter(e.label for e in entries).items())),
            "groups": len({e.group for e in entries}),
            "skipped": dict(sorted(sel.skipped.items())),
        },
        "label_rule": "the latest technician review (highest device seq); unreviewed: the model's call",
        "label_fold_rule": LABEL_FOLD_RULE,
        "label_spellings": sel.spellings,
        "group_rule": "sample id; record id for a field outside a sample",
        "images": [asdict(e) for e in entries],
    }


def manifest_csv(entries: list[ExportEntry]) -> bytes:
    """The manifest for a spreadsheet: device text defused (common.csvsafe), booleans as true/false."""
    buf = io.StringIO()
    w = csvsafe.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in entries:
        row = asdict(e)
        w.writerow(
            [("true" if row[c] else "false") if isinstance(row[c], bool) else row[c] for c in CSV_COLUMNS]
        )
    return buf.getvalue().encode()


def image_loader(session: Session) -> Callable[[str], bytes]:
    def load(sha: str) -> bytes:
        data = session.scalar(select(Image.data).where(Image.sha256 == sha))
        if data is None:
            raise ExportError(f"image {sha} vanished from the hub during the export")
        data = bytes(data)
        if hashlib.sha256(data).hexdigest() != sha:
            raise ExportError(f"image {sha}: stored bytes do not match their sha256")
        return data

    return load


def _is_export(path: Path) -> bool:
    try:
        return json.loads((path / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_export(sel: Selection, flt: ExportFilter, out: str | Path, load: Callable[[str], bytes]) -> Path:
    """Write the export to a temporary folder beside `out`, then swap it into place. `out` may be
    missing or an earlier export (replaced whole); anything else is refused."""

    def fill(tmp: Path) -> dict[str, Any]:
        for label in {e.label for e in sel.entries}:
            (tmp / label).mkdir()
        for e in sel.entries:
            (tmp / e.path).write_bytes(load(e.image_sha256))
        (tmp / "manifest.csv").write_bytes(manifest_csv(sel.entries))
        return manifest(sel, flt)

    return swap_into_place(out, fill)


def swap_into_place(out: str | Path, fill: Callable[[Path], dict[str, Any]]) -> Path:
    """`fill` writes an export into a temporary folder beside `out` and returns its manifest, written
    last (fsynced) as `manifest.json`; the folder then replaces `out`. `out` may be missing or an earlier
    export (replaced whole); anything else is refused. A failure leaves `out` as it was."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_export(out))):
        raise ExportError(f"{out}: exists and is not an earlier smearscope export; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        doc = json.dumps(fill(tmp), indent=1, ensure_ascii=False) + "\n"
        with open(tmp / "manifest.json", "wb") as f:
            f.write(doc.encode())
            f.flush()
            os.fsync(f.fileno())
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class Sink:
    """A write-only, unseekable file for zipfile: it collects bytes for a streamed response."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def iter_zip(sel: Selection, flt: ExportFilter, load: Callable[[str], bytes], root: str) -> Iterator[bytes]:
    """The same export as a zip stream (a folder `root/` inside), one image in memory at a time.
    JPEGs are stored as is (already compressed); the manifests are deflated."""
    sink = Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as zf:  # type: ignore[arg-type]
        for e in sel.entries:
            zf.writestr(zipfile.ZipInfo(f"{root}/{e.path}", _zip_time(e)), load(e.image_sha256))
            yield sink.take()
        for name, data in (
            ("manifest.csv", manifest_csv(sel.entries)),
            ("manifest.json", (json.dumps(manifest(sel, flt), indent=1, ensure_ascii=False) + "\n").encode()),
        ):
            zf.writestr(f"{root}/{name}", data, compress_type=zipfile.ZIP_DEFLATED)
            yield sink.take()
    yield sink.take()


def _zip_time(e: ExportEntry) -> tuple[int, int, int, int, int, int]:
    try:
        t = parse_time(e.captured_at, "captured_at")
    except RecordError:
        return (1980, 1, 1, 0, 0, 0)
    return (max(t.year, 1980), t.month, t.day, t.hour, t.minute, t.second)
