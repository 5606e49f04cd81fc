"""One counted cell as stored, exported and synced: the detector's box, the classifier's decision and
the technician's review. The station's store, its exports, the sync payload and the hub all read and
write this one shape (`to_dict` / `from_dict`), so a cell means the same everywhere."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from common.cell_fields import KEYS, NOT_A_CELL, STATES
from device.cells.count import count_label

__all__ = ["KEYS", "NOT_A_CELL", "STATES", "CellRecord", "labels_to_count"]


@dataclass(frozen=True)
class CellRecord:
    index: int  # order in its frame (stable: a review names a cell by record id + index)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the stored frame's pixels
    x: float  # centre, frame pixels
    y: float
    kind: str  # the detector's kind: "white" | "platelet" | "other"
    state: str  # the classifier's decision: "blast" | "not_blast" | "unclassified"
    label: str | None  # the named type (a bundle label id); None when not named
    p_blast: float
    probabilities: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # why unclassified / type not named (English, shown as details)
    reviewed_label: str | None = None  # a bundle label id or NOT_A_CELL
    reviewer: str | None = None
    reviewed_at: str | None = None  # UTC ISO time

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"cell state {self.state!r} is not one of {STATES}")
        if len(self.box) != 4:
            raise ValueError("a cell box is (x0, y0, x1, y1)")

    @property
    def excluded(self) -> bool:
        """Reviewed as not a white cell: counted nowhere."""
        return self.reviewed_label == NOT_A_CELL

    def counted_as(self) -> str | None:
        """What the differential counts (`device.cells.count.differential`): the reviewed label when a
        person gave one, else the classifier's decision. Call only for cells that are not `excluded`."""
        if self.reviewed_label is not None and not self.excluded:
            return self.reviewed_label
        return count_label(self.state, self.label)

    def reviewed(self, label: str, reviewer: str, at: str) -> CellRecord:
        return replace(self, reviewed_label=label, reviewer=reviewer, reviewed_at=at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "box": list(self.box),
            "x": round(self.x, 2),
            "y": round(self.y, 2),
            "kind": self.kind,
            "state": self.state,
            "label": self.label,
            "p_blast": round(self.p_blast, 6),
            "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()},
            "reason": self.reason,
            "reviewed_label": self.reviewed_label,
            "reviewer": self.reviewer,
            "reviewed_at": self.reviewed_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellRecord:
        box = tuple(int(v) for v in d["box"])
        return cls(
            index=int(d["index"]),
            box=(box[0], box[1], box[2], box[3]),
            x=float(d["x"]),
            y=float(d["y"]),
            kind=str(d.get("kind") or "white"),
            state=str(d["state"]),
            label=d.get("label"),
            p_blast=float(d.get("p_blast") or 0.0),
            probabilities={str(k): float(v) for k, v in (d.get("probabilities") or {}).items()},
            reason=d.get("reason"),
            reviewed_label=d.get("reviewed_label"),
            reviewer=d.get("reviewer"),
            reviewed_at=d.get("reviewed_at"),
        )


def labels_to_count(cells: Iterable[CellRecord]) -> list[str | None]:
    """The labels `differential` counts for these cells (excluded cells left out)."""
    return [c.counted_as() for c in cells if not c.excluded]
