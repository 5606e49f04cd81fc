"""The sample page's cell gallery: every cell of the slide grouped by what it counts as (blasts first,
then unclassified, then the normal types, then what is not counted), and the labels a technician may
give a cell (the records' labels and "not a white cell"). Plain data for the template and the JSON
answer of a reclassification; no Flask here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from device.cells.count import UNNAMED, UNNAMED_DISPLAY
from device.cells.record import NOT_A_CELL, CellRecord
from device.slides.cells import counts_as_white

UNCLASSIFIED_GROUP = "unclassified"
NOT_WHITE_GROUP = "not_white"  # the detector's platelets and debris nobody relabelled


@dataclass
class GalleryCell:
    record_id: str
    index: int
    group: str
    state: str
    label: str | None
    p_blast: float
    reviewed_label: str | None
    reviewer: str | None
    reason: str | None
    sha: str | None  # the stored frame's hash (None: no frame stored)


@dataclass
class GalleryGroup:
    key: str  # a label id, UNCLASSIFIED_GROUP, UNNAMED, NOT_WHITE_GROUP or NOT_A_CELL
    display: str  # English; the template translates the fixed groups
    blast: bool
    cells: list[GalleryCell] = field(default_factory=list)


@dataclass
class Choice:
    key: str  # what a number key picks: "1".."9", "0" for not a white cell
    label: str
    display: str
    blast: bool


def group_of(cell: CellRecord, known: set[str]) -> str:
    if cell.excluded:
        return NOT_A_CELL
    if not counts_as_white(cell):
        return NOT_WHITE_GROUP
    lab = cell.counted_as()
    if lab is None or (lab != UNNAMED and lab not in known):
        return UNCLASSIFIED_GROUP
    return lab


def build_gallery(
    cells: Sequence[tuple[str, CellRecord]],
    labels: Sequence[Mapping[str, Any]],
    frames: Mapping[str, str | None],
) -> list[GalleryGroup]:
    """Non-empty groups in page order. `labels`: the summary's labels ({id, display, blast, white});
    `frames`: record id → its stored frame's sha256."""
    known = {lb["id"] for lb in labels}
    order: list[GalleryGroup] = [GalleryGroup(lb["id"], lb["display"], True) for lb in labels if lb["blast"]]
    order.append(GalleryGroup(UNCLASSIFIED_GROUP, "Unclassified", False))
    order += [
        GalleryGroup(lb["id"], lb["display"], False) for lb in labels if not lb["blast"] and lb["white"]
    ]
    order.append(GalleryGroup(UNNAMED, UNNAMED_DISPLAY, False))
    order += [
        GalleryGroup(lb["id"], lb["display"], False) for lb in labels if not lb["blast"] and not lb["white"]
    ]
    order.append(GalleryGroup(NOT_WHITE_GROUP, "Not counted (not a white cell by the detector)", False))
    order.append(GalleryGroup(NOT_A_CELL, "Excluded (not a white cell)", False))
    by_key = {g.key: g for g in order}
    for record_id, c in cells:
        key = group_of(c, known)
        by_key[key].cells.append(
            GalleryCell(
                record_id, c.index, key, c.state, c.label, c.p_blast, c.reviewed_label, c.reviewer, c.reason,
                frames.get(record_id),
            )
        )  # fmt: skip
    return [g for g in order if g.cells]


def choices(labels: Sequence[Mapping[str, Any]]) -> list[Choice]:
    """The reclassification menu: blasts first, then the other labels, then "not a white cell" (key 0).
    Number keys 1-9 pick the first nine."""
    ordered = [lb for lb in labels if lb["blast"]] + [lb for lb in labels if not lb["blast"]]
    out = [
        Choice(str(i + 1) if i < 9 else "", lb["id"], lb["display"], bool(lb["blast"]))
        for i, lb in enumerate(ordered)
    ]
    out.append(Choice("0", NOT_A_CELL, "Not a white cell", False))
    return out
