"""Dashboard pages for records and their cells: a record with its counted cells (thumbnails cut from
the stored image, the classifier's call, the station's review), a sample with every record's cells and
the hub's count (hub/cells/counts.py), and the cells as CSV (one row per cell)."""

from __future__ import annotations

import functools
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
from flask import Blueprint, Response, abort, render_template, stream_with_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from common import csvsafe
from common.cell_fields import KEYS
from common.wording import DISCLAIMER
from hub.cells.counts import RULE, CellCounts, count_cells
from hub.cells.crop import ImageUnreadable, decode, thumbnail
from hub.cells.labels import label_book
from hub.cells.store import cells_of
from hub.extensions import session
from hub.login import login_required
from hub.models import Cell, Device, Image, Result, Sample

cells_dashboard = Blueprint("cells_dashboard", __name__)

#: The record's columns, then the cell's keys (common/cell_fields.py) with its box as four numbers.
CELLS_CSV_COLUMNS = [
    "record_id",
    "device",
    "sample_id",
    "captured_at",
    "image_sha256",
    "um_per_px",
    *(part for key in KEYS for part in (("x0", "y0", "x1", "y1") if key == "box" else (key,))),
    "disclaimer",
]


def _uuid_or_404(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        abort(404)


class _NoImage(LookupError):
    pass


@functools.lru_cache(maxsize=4)
def _decoded(sha: str) -> np.ndarray:
    """A record page asks for each of its cells' thumbnails: decode its image once, not per cell
    (images are stored by their sha256, so a cached one never goes stale)."""
    data = session().scalar(select(Image.data).where(Image.sha256 == sha))
    if data is None:
        raise _NoImage(sha)
    return decode(bytes(data))


@cells_dashboard.get("/records/<rid>")
@login_required
def record_page(rid: str) -> str:
    rid = _uuid_or_404(rid)
    s = session()
    row = s.execute(
        select(Result, Device.name).join(Device, Device.id == Result.device_id).where(Result.id == rid)
    ).first()
    if row is None:
        abort(404)
    r, device = row
    rec = json.loads(r.record_json)
    cells = cells_of(s, [rid]).get(rid, [])
    counts = count_cells(((c, rec) for c in cells), label_book(s)) if cells else None
    reviews = s.scalars(
        select(Result).where(Result.review_of == rid, Result.device_id == r.device_id).order_by(Result.seq)
    ).all()
    return render_template(
        "record.html", r=r, rec=rec, device=device, cells=cells, counts=counts, reviews=reviews, rule=RULE
    )


@cells_dashboard.get("/cells/<rid>/<index>.jpg")
@login_required
def cell_thumbnail(rid: str, index: str) -> Response:
    rid = _uuid_or_404(rid)
    if not (index.isascii() and index.isdigit() and len(index) <= 9):
        abort(404)
    s = session()
    cell = s.get(Cell, (rid, int(index)))
    sha = s.scalar(select(Result.image_sha256).where(Result.id == rid))
    if cell is None or sha is None:
        abort(404)
    try:
        jpeg = thumbnail(_decoded(sha), (cell.x0, cell.y0, cell.x1, cell.y1))
    except (ImageUnreadable, _NoImage):
        abort(404)
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


def _owned_records(s: Session, sample_ids: list[str]) -> dict[str, list[tuple[Result, str]]]:
    """Each sample's field records (reviews left out) of its owner: the device that described the
    sample, else the first to send a record for it (as the samples list counts)."""
    owners = dict(s.execute(select(Sample.id, Sample.device_id).where(Sample.id.in_(sample_ids))).all())
    rows = s.execute(
        select(Result, Device.name)
        .join(Device, Device.id == Result.device_id)
        .where(Result.sample_id.in_(sample_ids))
        .order_by(Result.received_at, Result.seq)
    ).all()
    out: dict[str, list[tuple[Result, str]]] = {}
    for r, name in rows:
        owner = owners.setdefault(r.sample_id, r.device_id)
        if r.device_id == owner and r.kind != "review":
            out.setdefault(r.sample_id, []).append((r, name))
    return out


@cells_dashboard.app_template_global()
def cell_rule() -> str:
    return RULE


@cells_dashboard.app_template_global()
def sample_cell_counts(sample_ids: list[str]) -> dict[str, CellCounts]:
    """The hub's cell count of each sample that has cells (the samples list's column)."""
    s = session()
    records = _owned_records(s, list(sample_ids))
    cells = cells_of(s, [r.id for rows in records.values() for r, _ in rows])
    if not cells:
        return {}
    book = label_book(s)
    out = {}
    for sid, rows in records.items():
        pairs = [(c, json.loads(r.record_json)) for r, _ in rows for c in cells.get(r.id, [])]
        if pairs:
            out[sid] = count_cells(pairs, book)
    return out


@cells_dashboard.get("/samples/<sid>")
@login_required
def sample_page(sid: str) -> str:
    sid = _uuid_or_404(sid)
    s = session()
    meta = s.get(Sample, sid)
    records = sorted(_owned_records(s, [sid]).get(sid, []), key=lambda x: x[0].seq)
    if meta is None and not records:
        abort(404)
    by_record = cells_of(s, [r.id for r, _ in records])
    book = label_book(s)
    items = []
    pairs = []
    for r, name in records:
        rec = json.loads(r.record_json)
        cells = by_record.get(r.id, [])
        pairs += [(c, rec) for c in cells]
        counts = count_cells(((c, rec) for c in cells), book)
        items.append({"r": r, "device": name, "n": len(cells), "counts": counts})
    total = count_cells(pairs, book)
    device_call = json.loads(meta.summary_json) if meta is not None and meta.summary_json else None
    return render_template(
        "sample.html", sid=sid, meta=meta, items=items, total=total, rule=RULE, device_call=device_call
    )


@cells_dashboard.get("/export/cells.csv")
@login_required
def export_cells_csv() -> Response:
    sessions = session

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        w = csvsafe.writer(buf)
        w.writerow(CELLS_CSV_COLUMNS)
        q = (
            select(Cell, Result, Device.name)
            .join(Result, Result.id == Cell.result_id)
            .join(Device, Device.id == Result.device_id)
            .order_by(Device.name, Result.seq, Cell.cell_index)
        )
        for c, r, name in sessions().execute(q.execution_options(yield_per=1000)):
            w.writerow(
                [
                    r.id,
                    name,
                    r.sample_id or "",
                    r.captured_at,
                    r.image_sha256 or "",
                    "" if r.um_per_px is None else f"{r.um_per_px:.6g}",
                    c.cell_index,
                    c.x0,
                    c.y0,
                    c.x1,
                    c.y1,
                    f"{c.x:.2f}",
                    f"{c.y:.2f}",
                    c.kind,
                    c.state,
                    c.label or "",
                    f"{c.p_blast:.4f}",
                    c.probabilities_json,
                    c.reason or "",
                    c.reviewed_label or "",
                    c.reviewer or "",
                    c.reviewed_at or "",
                    DISCLAIMER,
                ]
            )
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="smearscope-cells-{stamp}.csv"'},
    )
