"""The `cells` table: one row per detected cell of a 'cells' record, in the `CellRecord` shape
(`device.cells.record`). Plain SQL on a connection the caller holds, so the cells of a record are written
in the record's own transaction and read in the same snapshot as the records they belong to."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from device.cells.record import CellRecord

#: The most cells one record (one field of view) may hold: a frame holds tens of white cells, never
#: thousands; a larger list is a bug upstream, not a field.
MAX_CELLS_PER_RECORD = 2000

_COLUMNS = (
    "record_id, cell_index, x0, y0, x1, y1, x, y, kind, state, label, p_blast, probabilities_json, "
    "reason, reviewed_label, reviewer, reviewed_at"
)


def check_cells(cells: Sequence[CellRecord]) -> None:
    """Refuse what the table must never hold: repeated indices, a non-finite centre or probability."""
    if len(cells) > MAX_CELLS_PER_RECORD:
        raise ValueError(f"{len(cells)} cells in one record (at most {MAX_CELLS_PER_RECORD})")
    seen: set[int] = set()
    for c in cells:
        if not isinstance(c, CellRecord):
            raise ValueError(f"a cell must be a CellRecord, not {type(c).__name__}")
        if c.index in seen:
            raise ValueError(f"cell index {c.index} appears twice in one record")
        seen.add(c.index)
        values = [c.x, c.y, c.p_blast, *c.probabilities.values()]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"cell {c.index}: centre and probabilities must be finite numbers")


def insert_cells(conn: sqlite3.Connection, record_id: str, cells: Sequence[CellRecord]) -> None:
    """Write `cells` for `record_id` (inside the caller's transaction)."""
    marks = ", ".join("?" for _ in _COLUMNS.split(","))
    conn.executemany(
        f"INSERT INTO cells ({_COLUMNS}) VALUES ({marks})",
        [
            (
                record_id,
                c.index,
                *(int(v) for v in c.box),
                float(c.x),
                float(c.y),
                c.kind,
                c.state,
                c.label,
                float(c.p_blast),
                json.dumps({k: float(v) for k, v in c.probabilities.items()}),
                c.reason,
                c.reviewed_label,
                c.reviewer,
                c.reviewed_at,
            )
            for c in cells
        ],
    )


def cell_from_row(row: Mapping[str, Any]) -> CellRecord:
    return CellRecord(
        index=int(row["cell_index"]),
        box=(int(row["x0"]), int(row["y0"]), int(row["x1"]), int(row["y1"])),
        x=float(row["x"]),
        y=float(row["y"]),
        kind=row["kind"],
        state=row["state"],
        label=row["label"],
        p_blast=float(row["p_blast"]),
        probabilities={str(k): float(v) for k, v in json.loads(row["probabilities_json"] or "{}").items()},
        reason=row["reason"],
        reviewed_label=row["reviewed_label"],
        reviewer=row["reviewer"],
        reviewed_at=row["reviewed_at"],
    )


def cells_by_record(conn: sqlite3.Connection, record_ids: Iterable[str]) -> dict[str, list[CellRecord]]:
    """record id → its cells in index order (records without cells are absent)."""
    ids = list(dict.fromkeys(record_ids))
    out: dict[str, list[CellRecord]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" for _ in chunk)
        for row in conn.execute(
            f"SELECT * FROM cells WHERE record_id IN ({marks}) ORDER BY record_id, cell_index", chunk
        ):
            out.setdefault(row["record_id"], []).append(cell_from_row(row))
    return out


def get_cell(conn: sqlite3.Connection, record_id: str, index: int) -> CellRecord | None:
    row = conn.execute(
        "SELECT * FROM cells WHERE record_id = ? AND cell_index = ?", (record_id, int(index))
    ).fetchone()
    return cell_from_row(row) if row else None


def set_review(
    conn: sqlite3.Connection, record_id: str, index: int, label: str, reviewer: str, at: str
) -> None:
    conn.execute(
        "UPDATE cells SET reviewed_label = ?, reviewer = ?, reviewed_at = ? "
        "WHERE record_id = ? AND cell_index = ?",
        (label, reviewer, at, record_id, int(index)),
    )


def sample_cells(conn: sqlite3.Connection, sample_id: str) -> list[tuple[str, CellRecord]]:
    """(record id, cell) of every cell of the sample's 'cells' records, in capture order."""
    rows = conn.execute(
        "SELECT c.* FROM cells c JOIN results r ON r.id = c.record_id "
        "WHERE r.sample_id = ? AND r.kind = 'cells' ORDER BY r.seq, c.cell_index",
        (sample_id,),
    )
    return [(row["record_id"], cell_from_row(row)) for row in rows]
