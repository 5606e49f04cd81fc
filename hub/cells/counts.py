"""The hub's count of a record's or a sample's cells, shown as information beside the station's own
slide call (the station's count, with its thresholds and interval, is the one that calls a slide).

RULE: a cell reviewed as not a cell is left out; a reviewed cell counts as its reviewed label, which is
a blast when the record's own differential, else the bundles it names as published on this hub, declare
it malignant (hub/cells/labels.py), is left out when they declare it not a white cell, and is counted
unclassified when the hub cannot place it; an
unreviewed cell counts when the detector called it a white cell, as the classifier's state. Blast % is
blasts over the classified white cells.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from common.cell_fields import NOT_A_CELL
from hub.cells.labels import LabelBook
from hub.models import Cell

RULE = (
    "cells reviewed 'not a cell' left out; a reviewed cell counts as its reviewed label (a blast when "
    "the record's differential or its published bundles declare that label malignant, unclassified "
    "when the hub cannot place it); an unreviewed cell counts when detected as a white cell, as the "
    "classifier's state; blast % = blasts / classified white cells. Information only: the station's "
    "count calls the slide."
)


@dataclass
class CellCounts:
    counted: int = 0  # white cells in the count
    blasts: int = 0
    unclassified: int = 0
    excluded: int = 0  # reviewed as not a cell
    reviewed: int = 0
    per_label: Counter[str] = field(default_factory=Counter)  # named types (reviewed label wins)

    @property
    def classified(self) -> int:
        return self.counted - self.unclassified

    @property
    def blast_pct(self) -> float | None:
        return 100.0 * self.blasts / self.classified if self.classified else None


def count_cells(cells: Iterable[tuple[Cell, dict[str, Any]]], book: LabelBook) -> CellCounts:
    """Count `cells` (each with its record's JSON) by RULE."""
    out = CellCounts()
    for c, record in cells:
        if c.reviewed_label is not None:
            out.reviewed += 1
            if c.reviewed_label == NOT_A_CELL:
                out.excluded += 1
                continue
            fact = book.facts(c.reviewed_label, [record])
            if fact is not None and not fact.white:
                continue
            out.counted += 1
            out.per_label[c.reviewed_label] += 1
            if fact is None or fact.malignant is None:
                out.unclassified += 1
            elif fact.malignant:
                out.blasts += 1
            continue
        if c.kind != "white":
            continue
        out.counted += 1
        if c.state == "unclassified":
            out.unclassified += 1
        elif c.state == "blast":
            out.blasts += 1
        if c.label is not None and c.state != "unclassified":
            out.per_label[c.label] += 1
    return out
