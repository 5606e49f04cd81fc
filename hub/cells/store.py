"""A record's counted cells on the hub: checking them (common/cell_fields.py is the shape), storing them
exactly once, and applying the station's later cell reviews.

A record is stored once (by UUID) and so are its cells (primary key record id + cell index). A station
re-sends a record after a technician reviewed one of its cells; the hub then answers `duplicate` as
before and copies the newer reviews onto the stored cells (the detector's and classifier's fields never
change). A review only replaces an older one (by its `reviewed_at`); a resend without a review never
erases one the hub holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from common.cell_fields import KINDS, STATES
from hub.models import Cell
from hub.records import RecordError, checked_number, checked_text, iso_utc, parse_time

#: At most this many cells per record (a 100x oil field holds a few dozen white cells; more is junk).
MAX_CELLS = 500
#: Box and centre coordinates lie in 0..MAX_FRAME_PX (frame pixels; a 12 MP camera is ~4000 wide).
MAX_FRAME_PX = 65_535
#: At most this many entries in one cell's probabilities (a bundle's labels).
MAX_PROBABILITIES = 64
MAX_REASON = 1000
_IN_CHUNK = 500
#: The hub's "Awaiting review" page lists a cells record while this holds (the station's verification
#: rule, device/slides/cells.py VERIFY_RULE, per record).
AWAITING_REVIEW_RULE = (
    "A cells record awaits review while any of its white cells the classifier called a blast or left "
    "unclassified has not been reviewed."
)
TO_REVIEW_STATES = ("blast", "unclassified")


def cells_to_review(result_id: Any) -> Any:
    """How many cells of the record `result_id` (a column or value) still await review by
    AWAITING_REVIEW_RULE: a scalar subquery, correlated when given a column."""
    return (
        select(func.count())
        .select_from(Cell)
        .where(
            Cell.result_id == result_id,
            Cell.kind == "white",
            Cell.state.in_(TO_REVIEW_STATES),
            Cell.reviewed_label.is_(None),
        )
        .scalar_subquery()
    )


@dataclass(frozen=True)
class CellRow:
    """One checked cell, as the hub stores it."""

    index: int
    box: tuple[int, int, int, int]
    x: float
    y: float
    kind: str
    state: str
    label: str | None
    p_blast: float
    probabilities: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    reviewed_label: str | None = None
    reviewer: str | None = None
    reviewed_at: str | None = None  # normalised UTC ISO (milliseconds, Z) so times order as text

    def columns(self, result_id: str) -> dict[str, Any]:
        x0, y0, x1, y1 = self.box
        return {
            "result_id": result_id,
            "cell_index": self.index,
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "x": self.x,
            "y": self.y,
            "kind": self.kind,
            "state": self.state,
            "label": self.label,
            "p_blast": self.p_blast,
            "probabilities_json": json.dumps(self.probabilities, sort_keys=True),
            "reason": self.reason,
            "reviewed_label": self.reviewed_label,
            "reviewer": self.reviewer,
            "reviewed_at": self.reviewed_at,
        }


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RecordError(f"{what}: must be an integer between {lo} and {hi}")
    return value


def validate_cell(c: Any, where: str) -> CellRow:
    """One cell of a record (`where` names it in the reason, e.g. "cells[3]"); raises RecordError."""
    if not isinstance(c, dict):
        raise RecordError(f"{where}: must be a JSON object")
    index = _int(c.get("index"), f"{where}.index", 0, MAX_CELLS * 100)
    box = c.get("box")
    if not isinstance(box, list) or len(box) != 4:
        raise RecordError(f"{where}.box: must be [x0, y0, x1, y1]")
    x0, y0, x1, y1 = (_int(v, f"{where}.box", 0, MAX_FRAME_PX) for v in box)
    if not (x0 < x1 and y0 < y1):
        raise RecordError(f"{where}.box: must have x0 < x1 and y0 < y1")
    x = checked_number(c.get("x"), f"{where}.x", 0.0, MAX_FRAME_PX)
    y = checked_number(c.get("y"), f"{where}.y", 0.0, MAX_FRAME_PX)
    kind = c.get("kind", "white")
    if kind not in KINDS:
        raise RecordError(f"{where}.kind: must be one of {', '.join(KINDS)}")
    state = c.get("state")
    if state not in STATES:
        raise RecordError(f"{where}.state: must be one of {', '.join(STATES)}")
    label = checked_text(c.get("label"), f"{where}.label", 100, optional=True, name=True)
    p_blast = checked_number(c.get("p_blast"), f"{where}.p_blast", 0.0, 1.0)
    probs = c.get("probabilities", {})
    if not isinstance(probs, dict) or len(probs) > MAX_PROBABILITIES:
        raise RecordError(f"{where}.probabilities: must be an object of at most {MAX_PROBABILITIES} labels")
    probabilities = {}
    for k, v in probs.items():
        checked_text(k, f"{where}.probabilities key", 100, name=True)
        probabilities[k] = checked_number(v, f"{where}.probabilities.{k}", 0.0, 1.0)
    reason = checked_text(c.get("reason"), f"{where}.reason", MAX_REASON, optional=True)
    reviewed = checked_text(c.get("reviewed_label"), f"{where}.reviewed_label", 100, optional=True, name=True)
    reviewer = reviewed_at = None
    if reviewed is not None:
        if not reviewed.strip():
            raise RecordError(f"{where}.reviewed_label: must not be empty")
        reviewer = checked_text(c.get("reviewer"), f"{where}.reviewer", 200, optional=True, name=True)
        reviewed_at = iso_utc(parse_time(c.get("reviewed_at"), f"{where}.reviewed_at"))
    return CellRow(
        index=index,
        box=(x0, y0, x1, y1),
        x=x,
        y=y,
        kind=kind,
        state=state,
        label=label,
        p_blast=p_blast,
        probabilities=probabilities,
        reason=reason,
        reviewed_label=reviewed,
        reviewer=reviewer,
        reviewed_at=reviewed_at,
    )


def validate_cells(value: Any, kind: str) -> list[CellRow]:
    """A record's `cells` (missing, null or [] = none; only a 'cells' record has any); raises
    RecordError naming the first bad cell."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError("cells: must be a list of cells")
    if value and kind != "cells":
        raise RecordError(f"cells: only a 'cells' record has cells (this is a {kind} record)")
    if len(value) > MAX_CELLS:
        raise RecordError(f"cells: at most {MAX_CELLS} cells per record")
    rows = [validate_cell(c, f"cells[{i}]") for i, c in enumerate(value)]
    seen: set[int] = set()
    for r in rows:
        if r.index in seen:
            raise RecordError(f"cells: index {r.index} appears twice")
        seen.add(r.index)
    return rows


def store_cells(s: Session, result_id: str, cells: Sequence[CellRow], insert: Any) -> int:
    """Store the cells of a record: new ones inserted (ON CONFLICT DO NOTHING: `insert` is the
    dialect's insert of `Cell`), and a newer review copied onto a stored cell. Returns how many stored
    cells took a newer review. Runs in the caller's transaction."""
    if not cells:
        return 0
    s.execute(
        insert.on_conflict_do_nothing(index_elements=["result_id", "cell_index"]),
        [c.columns(result_id) for c in cells],
    )
    updated = 0
    for c in cells:
        if c.reviewed_label is None:
            continue
        updated += s.execute(
            update(Cell)
            .where(
                Cell.result_id == result_id,
                Cell.cell_index == c.index,
                or_(Cell.reviewed_at.is_(None), Cell.reviewed_at < c.reviewed_at),
            )
            .values(reviewed_label=c.reviewed_label, reviewer=c.reviewer, reviewed_at=c.reviewed_at)
        ).rowcount
    return updated


def cell_json(c: Cell) -> dict[str, Any]:
    """A stored cell in the station's shape (common/cell_fields.KEYS)."""
    return {
        "index": c.cell_index,
        "box": [c.x0, c.y0, c.x1, c.y1],
        "x": c.x,
        "y": c.y,
        "kind": c.kind,
        "state": c.state,
        "label": c.label,
        "p_blast": c.p_blast,
        "probabilities": json.loads(c.probabilities_json),
        "reason": c.reason,
        "reviewed_label": c.reviewed_label,
        "reviewer": c.reviewer,
        "reviewed_at": c.reviewed_at,
    }


def cells_of(s: Session, result_ids: Iterable[str]) -> dict[str, list[Cell]]:
    """The stored cells of these records, by record id, in index order."""
    out: dict[str, list[Cell]] = {}
    ids = sorted(set(result_ids))
    for i in range(0, len(ids), _IN_CHUNK):
        q = select(Cell).where(Cell.result_id.in_(ids[i : i + _IN_CHUNK]))
        for c in s.scalars(q.order_by(Cell.result_id, Cell.cell_index)):
            out.setdefault(c.result_id, []).append(c)
    return out
