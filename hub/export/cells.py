"""Reviewed cells out of the hub as a cell-classifier training folder (`export-dataset --cells`, the
dashboard's cells zip).

Layout (what `smearscope train --data DIR` reads as is; `convert` takes the labels from labels.json):

    DIR/<label>/<record id>.<cell index>.png  one square crop per reviewed cell (label = reviewed label)
    DIR/labels.json       "smearscope-labels/1" (device/datasets/labels.py): id, display, malignant, source
    DIR/manifest.json     format "smearscope-dataset" v1, kind "cells": one entry per crop
    DIR/manifest.csv      the same entries for a spreadsheet (formula-like cells defused)

Which cells: every cell a technician reviewed on the station (its latest review, as synced), from
the records (not reviews) of the chosen devices. Cells reviewed as not a cell (`not_a_cell`) are left
out (counted in `skipped`): the classifiers have no such class.

The crop: the square of `side_um` µm (24 µm by default: the cell bundles' 96 px x 0.25 µm/px) centred
on the cell's centre (its nucleus's, as the station centres its classifier crop), cut from the record's
stored image at the record's own µm/px (`round(side_um / um_per_px)` pixels wide, never resampled:
training brings it to the model's size), PNG (lossless). A square reaching outside the image is
filled by reflecting the image at its border, as the station's crop does, and flagged `reflected` in
the manifest. A record without a known µm/px gives no crops (skipped: the physical side cannot be cut).

Whether a label is a blast (labels.json `malignant`), most trusted first: `--blast-label` /
`--normal-label` given for the export; else what the label's records declare (their stored field
differential, made with the classifying bundle's labels), else the bundles they name as published on
this hub, else any bundle published here (hub/cells/labels.py). A label no source declares, or that its
first declaring source declares both ways, is left out (counted) unless given.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common import csvsafe
from common.cell_fields import NOT_A_CELL
from common.wording import DISCLAIMER
from hub import names
from hub.cells.crop import ImageUnreadable, decode, square
from hub.cells.labels import LabelBook, label_book
from hub.export.dataset import (
    FORMAT,
    LABEL_FOLD_RULE,
    VERSION,
    ExportError,
    ExportFilter,
    Sink,
    swap_into_place,
)
from hub.models import Cell, Device, Image, Result
from hub.records import parse_time

KIND = "cells"
LABELS_FILE = "labels.json"
LABELS_FORMAT = "smearscope-labels/1"  # device/datasets/labels.py reads it
DEFAULT_SIDE_UM = 24.0
MAX_SIDE_PX = 4096  # a crop wider than this means a wrong µm/px, not a cell
CSV_COLUMNS = [
    "path",
    "label",
    "record_id",
    "cell_index",
    "device",
    "sample_id",
    "group",
    "captured_at",
    "box",
    "x",
    "y",
    "crop_box",
    "side_um",
    "side_px",
    "um_per_px",
    "reflected",
    "model_state",
    "model_label",
    "p_blast",
    "reviewed_label",
    "reviewer",
    "reviewed_at",
    "source_image_sha256",
    "image_sha256",
]


@dataclass(frozen=True)
class CellExportOptions:
    side_um: float = DEFAULT_SIDE_UM
    blast_labels: tuple[str, ...] = ()  # declared blasts for this export (win over the bundles)
    normal_labels: tuple[str, ...] = ()  # declared not blasts

    def __post_init__(self) -> None:
        if not 1.0 <= self.side_um <= 500.0:
            raise ExportError(f"--cell-side-um {self.side_um}: must be between 1 and 500 µm")
        both = set(self.blast_labels) & set(self.normal_labels)
        if both:
            raise ExportError(f"given both as blast and as normal: {', '.join(sorted(both))}")

    def to_json(self) -> dict[str, Any]:
        return {
            "side_um": self.side_um,
            "blast_labels": sorted(self.blast_labels),
            "normal_labels": sorted(self.normal_labels),
        }


@dataclass(frozen=True)
class CellEntry:
    """One crop of the export (a row of the manifest)."""

    path: str
    label: str
    record_id: str
    cell_index: int
    device: str
    sample_id: str | None
    group: str
    captured_at: str
    box: list[int]  # the cell's box in the stored image
    x: float  # the cell's centre (its nucleus's), the crop's centre
    y: float
    crop_box: list[int]  # the square cut (x0, y0, x1, y1; may reach outside the image)
    side_um: float
    side_px: int
    um_per_px: float
    reflected: bool  # part of the square lay outside the image (filled by reflection)
    model_state: str
    model_label: str | None
    p_blast: float
    reviewed_label: str
    reviewer: str | None
    reviewed_at: str | None
    source_image_sha256: str
    image_sha256: str = ""  # the crop's PNG bytes (known once written)


@dataclass(frozen=True)
class LabelEntry:
    id: str
    display: str
    malignant: bool
    source: str


@dataclass
class CellSelection:
    entries: list[CellEntry] = field(default_factory=list)
    labels: dict[str, LabelEntry] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    spellings: dict[str, list[str]] = field(default_factory=dict)


def _resolve_labels(
    wanted: dict[str, dict[str, dict[str, Any]]], book: LabelBook, opts: CellExportOptions
) -> dict[str, LabelEntry | None]:
    """Each label's entry in labels.json (see the module doc), None when its blast status is unknown.
    `wanted`: label -> the records (by id) whose cells carry it."""
    out: dict[str, LabelEntry | None] = {}
    for label, records in wanted.items():
        key = names.fold(label)
        if key in {names.fold(x) for x in opts.blast_labels}:
            out[label] = LabelEntry(label, label, True, "--blast-label")
        elif key in {names.fold(x) for x in opts.normal_labels}:
            out[label] = LabelEntry(label, label, False, "--normal-label")
        else:
            fact = book.facts(label, records.values())
            if fact is None or fact.malignant is None:
                out[label] = None
            else:
                out[label] = LabelEntry(label, fact.display, fact.malignant, fact.source)
    return out


def select_cells(s: Session, flt: ExportFilter, opts: CellExportOptions) -> CellSelection:
    """The reviewed cells the filter keeps, sorted by path (no image is read here)."""
    if flt.include_unreviewed:
        raise ExportError("the cells export takes reviewed cells only (a model's own calls teach nothing)")
    devices, scope = _device_scope(s, flt)
    out = CellSelection()
    unreviewed = s.scalar(
        select(func.count())
        .select_from(Cell)
        .join(Result, Result.id == Cell.result_id)
        .where(*scope, Cell.reviewed_label.is_(None))
    )
    if unreviewed:
        out.skipped["not reviewed"] = unreviewed
    q = (
        select(Cell, Result)
        .join(Result, Result.id == Cell.result_id)
        .where(*scope, Cell.reviewed_label.is_not(None))  # the cells_reviewed index
        .order_by(Result.id, Cell.cell_index)
    )
    kept: list[tuple[Cell, Result]] = []
    records_of: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for c, r in s.execute(q.execution_options(yield_per=1000)):
        skip = _skip_reason(c, r, flt, opts)
        if skip is not None:
            out.skipped[skip] += 1
            continue
        kept.append((c, r))
        if r.id not in records_of[c.reviewed_label]:
            records_of[c.reviewed_label][r.id] = json.loads(r.record_json)
    have = _images_on_hub(s, {r.image_sha256 for _, r in kept})
    resolved = _resolve_labels(records_of, label_book(s), opts)
    for c, r in kept:
        if r.image_sha256 not in have:
            out.skipped["image not on the hub"] += 1
            continue
        lab = resolved[c.reviewed_label]
        if lab is None:
            out.skipped["label's blast status unknown (--blast-label / --normal-label)"] += 1
            continue
        out.entries.append(_entry(c, r, devices.get(r.device_id, ""), opts))
        out.labels.setdefault(lab.id, lab)
    _fold(out)
    out.entries.sort(key=lambda e: e.path)
    return out


def _device_scope(s: Session, flt: ExportFilter) -> tuple[dict[str, str], list[Any]]:
    """The hub's devices (id -> name) and the conditions on `Result` the export keeps: records, not
    reviews, of the chosen devices (all when none is chosen)."""
    devices = {d.id: d.name for d in s.scalars(select(Device))}
    scope: list[Any] = [Result.kind != "review"]
    if flt.devices:
        by_name = {n: i for i, n in devices.items()}
        unknown = sorted(set(flt.devices) - set(by_name))
        if unknown:
            raise ExportError(f"no device named {', '.join(unknown)} (known: {', '.join(sorted(by_name))})")
        scope.append(Result.device_id.in_([by_name[n] for n in flt.devices]))
    return devices, scope


def _skip_reason(c: Cell, r: Result, flt: ExportFilter, opts: CellExportOptions) -> str | None:
    """Why a reviewed cell stays out of the export (the `skipped` key), None when it can be cut."""
    if c.reviewed_label == NOT_A_CELL:
        return "reviewed as not a cell"
    if flt.disagreements_only and c.label is not None and names.fold(c.label) == names.fold(c.reviewed_label):
        return "agrees with the classifier"
    if flt.since is not None and parse_time(c.reviewed_at, "reviewed_at") < flt.since:
        return "before --since"
    if r.image_sha256 is None:
        return "no image"
    if r.um_per_px is None:
        return "record's µm/px unknown"
    if round(opts.side_um / r.um_per_px) > MAX_SIDE_PX:
        return f"crop wider than {MAX_SIDE_PX} px (µm/px too fine)"
    if names.problem(c.reviewed_label) is not None:
        return "label not usable as a folder name"
    return None


def _images_on_hub(s: Session, shas: set[str], chunk: int = 500) -> set[str]:
    """Which of `shas` the hub holds (queried in chunks: SQLite limits a statement's parameters)."""
    have: set[str] = set()
    ordered = sorted(shas)
    for i in range(0, len(ordered), chunk):
        have.update(s.scalars(select(Image.sha256).where(Image.sha256.in_(ordered[i : i + chunk]))))
    return have


def _entry(c: Cell, r: Result, device: str, opts: CellExportOptions) -> CellEntry:
    """A kept cell's manifest row (its crop box and the PNG's hash are known once cut)."""
    return CellEntry(
        path=f"{c.reviewed_label}/{r.id}.{c.cell_index}.png",
        label=c.reviewed_label,
        record_id=r.id,
        cell_index=c.cell_index,
        device=device,
        sample_id=r.sample_id,
        group=r.sample_id or r.id,
        captured_at=r.captured_at,
        box=[c.x0, c.y0, c.x1, c.y1],
        x=c.x,
        y=c.y,
        crop_box=[],
        side_um=opts.side_um,
        side_px=max(1, round(opts.side_um / r.um_per_px)),
        um_per_px=r.um_per_px,
        reflected=False,
        model_state=c.state,
        model_label=c.label,
        p_blast=round(float(c.p_blast), 6),
        reviewed_label=c.reviewed_label,
        reviewer=c.reviewer,
        reviewed_at=c.reviewed_at,
        source_image_sha256=r.image_sha256,
    )


def _fold(sel: CellSelection) -> None:
    """One class per label ignoring case (dataset.LABEL_FOLD_RULE)."""
    by_fold: dict[str, Counter[str]] = {}
    for e in sel.entries:
        by_fold.setdefault(names.fold(e.label), Counter())[e.label] += 1
    chosen = {k: min(c, key=lambda x: (-c[x], x)) for k, c in by_fold.items()}
    sel.spellings = {chosen[k]: sorted(c) for k, c in by_fold.items() if len(c) > 1}
    sel.entries = [
        replace(e, label=lab, path=f"{lab}/{e.record_id}.{e.cell_index}.png")
        for e in sel.entries
        for lab in [chosen[names.fold(e.label)]]
    ]
    used = set(chosen.values())
    labels = {}
    for lab in used:
        src = sel.labels.get(lab) or next(
            v for k, v in sel.labels.items() if names.fold(k) == names.fold(lab)
        )
        labels[lab] = replace(src, id=lab)
    sel.labels = dict(sorted(labels.items()))


def crops(sel: CellSelection, load: Callable[[str], bytes]) -> Iterator[tuple[CellEntry, bytes]]:
    """Each entry's PNG crop, with the entry completed (crop box, reflected, the PNG's sha256). The
    image of a record is decoded once; the cells of a stored image that does not decode are left out
    and counted in `sel.skipped` (read it after the crops are taken)."""
    current: tuple[str, Any] | None = None
    for e in sorted(sel.entries, key=lambda e: (e.source_image_sha256, e.path)):
        if current is None or current[0] != e.source_image_sha256:
            try:
                current = (e.source_image_sha256, decode(load(e.source_image_sha256)))
            except ImageUnreadable:
                current = (e.source_image_sha256, None)
        if current[1] is None:
            sel.skipped["stored image does not decode"] += 1
            continue
        sq = square(current[1], e.x, e.y, e.side_px)
        ok, buf = cv2.imencode(".png", sq.pixels)
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
            raise ExportError(f"{e.path}: the crop did not encode")
        data = buf.tobytes()
        yield (
            replace(
                e,
                crop_box=list(sq.box),
                reflected=sq.reflected,
                image_sha256=hashlib.sha256(data).hexdigest(),
            ),
            data,
        )


def labels_doc(sel: CellSelection, entries: list[CellEntry]) -> dict[str, Any]:
    """labels.json of a written export: the labels its crops carry."""
    used = {e.label for e in entries}
    return {"format": LABELS_FORMAT, "labels": [asdict(lb) for k, lb in sel.labels.items() if k in used]}


def manifest(
    sel: CellSelection, entries: list[CellEntry], flt: ExportFilter, opts: CellExportOptions
) -> dict[str, Any]:
    """The manifest.json document of a written export (`entries`: completed by `crops`)."""
    entries = sorted(entries, key=lambda e: e.path)
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": KIND,
        "disclaimer": DISCLAIMER,
        "labels": sorted({e.label for e in entries}),
        "filters": flt.to_json(),
        "crop": {
            **opts.to_json(),
            "rule": "the square of side_um centred on the cell's centre (x, y), cut at the record's own "
            "µm/px (side_px = round(side_um / um_per_px)); outside the image: reflected at the border "
            "(reflected=true)",
            "colour": "the station's stored image as is",
        },
        "counts": {
            "images": len(entries),
            "per_label": dict(sorted(Counter(e.label for e in entries).items())),
            "blasts": sum(sel.labels[e.label].malignant for e in entries),
            "reflected": sum(e.reflected for e in entries),
            "disagreements": sum(
                e.model_label is None or names.fold(e.model_label) != names.fold(e.label) for e in entries
            ),
            "groups": len({e.group for e in entries}),
            "skipped": dict(sorted(sel.skipped.items())),
        },
        "label_rule": "the technician's latest review of the cell on the station; 'not_a_cell' left out",
        "blast_rule": "--blast-label / --normal-label, else the records' own differential (the classifying "
        "bundle's labels), else the bundles the records name as published on this hub, else any published "
        "bundle; undeclared or conflicting: left out",
        "label_fold_rule": LABEL_FOLD_RULE,
        "label_spellings": sel.spellings,
        "group_rule": "sample id; record id for a field outside a sample",
        "images": [asdict(e) for e in entries],
    }


def manifest_csv(entries: list[CellEntry]) -> bytes:
    buf = io.StringIO()
    w = csvsafe.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in sorted(entries, key=lambda e: e.path):
        row = asdict(e)
        out = []
        for c in CSV_COLUMNS:
            v = row[c]
            out.append(
                ("true" if v else "false")
                if isinstance(v, bool)
                else " ".join(map(str, v))
                if isinstance(v, list)
                else v
            )
        w.writerow(out)
    return buf.getvalue().encode()


def write_cells_export(
    sel: CellSelection,
    flt: ExportFilter,
    opts: CellExportOptions,
    out: str | Path,
    load: Callable[[str], bytes],
) -> Path:
    """Write the cells export (a temporary folder swapped into place, as `dataset.write_export`)."""

    def fill(tmp: Path) -> dict[str, Any]:
        done = []
        for e, data in crops(sel, load):
            (tmp / e.label).mkdir(exist_ok=True)
            (tmp / e.path).write_bytes(data)
            done.append(e)
        (tmp / LABELS_FILE).write_text(json.dumps(labels_doc(sel, done), indent=2) + "\n")
        (tmp / "manifest.csv").write_bytes(manifest_csv(done))
        return manifest(sel, done, flt, opts)

    return swap_into_place(out, fill)


def iter_cells_zip(
    sel: CellSelection, flt: ExportFilter, opts: CellExportOptions, load: Callable[[str], bytes], root: str
) -> Iterator[bytes]:
    """The same export as a zip stream (a folder `root/` inside), one record's image decoded at a time."""
    sink = Sink()
    done = []
    with zipfile.ZipFile(sink, "w", allowZip64=True) as zf:  # type: ignore[arg-type]
        for e, data in crops(sel, load):
            zf.writestr(zipfile.ZipInfo(f"{root}/{e.path}", _zip_time(e.captured_at)), data)
            done.append(e)
            yield sink.take()
        for name, data in (
            (LABELS_FILE, (json.dumps(labels_doc(sel, done), indent=2) + "\n").encode()),
            ("manifest.csv", manifest_csv(done)),
            (
                "manifest.json",
                (json.dumps(manifest(sel, done, flt, opts), indent=1, ensure_ascii=False) + "\n").encode(),
            ),
        ):
            zf.writestr(f"{root}/{name}", data, compress_type=zipfile.ZIP_DEFLATED)
            yield sink.take()
    yield sink.take()


def _zip_time(captured_at: str) -> tuple[int, int, int, int, int, int]:
    try:
        t = parse_time(captured_at, "captured_at")
    except ValueError:
        return (1980, 1, 1, 0, 0, 0)
    return (max(t.year, 1980), t.month, t.day, t.hour, t.minute, t.second)
