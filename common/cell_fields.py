"""The keys and values of one cell of a record, as the station stores, exports and syncs it and the
hub checks and stores it (`device.cells.record.CellRecord.to_dict` writes exactly these keys)."""

from __future__ import annotations

#: Every key of a cell's JSON, in `to_dict` order.
KEYS = (
    "index",
    "box",
    "x",
    "y",
    "kind",
    "state",
    "label",
    "p_blast",
    "probabilities",
    "reason",
    "reviewed_label",
    "reviewer",
    "reviewed_at",
)
#: The technician's part of a cell: the only keys that change after the cell is first stored.
REVIEW_KEYS = ("reviewed_label", "reviewer", "reviewed_at")
#: The classifier's decision on a cell.
STATES = ("blast", "not_blast", "unclassified")
#: The detector's kind of a cell.
KINDS = ("white", "platelet", "other")
#: A reviewed label meaning "this is not a white cell": excluded from every count.
NOT_A_CELL = "not_a_cell"
