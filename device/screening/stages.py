"""The typed stages of the frame → cells → result path (one frozen dataclass per stage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.cells.count import Differential
from device.cells.decide import CellDecision
from device.cells.detect import WHITE, Cell
from device.cells.field import FieldEvidence
from device.cells.record import CellRecord
from device.colour import WhiteReference
from device.optics.analyse import AcquisitionSettings
from device.optics.scalecheck import ScaleCheck
from device.screening.detail import Detail

COUNTED = "counted"
NO_CELLS = "no_cells"
REFUSED = "refused"
FIELD_STATES = (COUNTED, NO_CELLS, REFUSED)
#: `SecondReading.state`: the field models call the field malignant | not malignant | give no call
MALIGNANT = "malignant"
NOT_MALIGNANT = "not_malignant"
NOT_READ = "not_read"


@dataclass(frozen=True)
class ScreenSettings:
    """The scale keys (`[quality] scale_check`, `scale_tolerance`, `[optics] rbc_diameter_um`) and the
    differential's `[cells]` keys (`target`, `threshold_pct`, `max_unclassified_pct`)."""

    acquisition: AcquisitionSettings = field(default_factory=AcquisitionSettings)
    target: int = 100
    threshold: float = 0.02  # a fraction
    max_unclassified: float = 0.10  # a fraction
    detail_check: bool = True  # `[quality] enabled`: noise and JPEG blocks (device/screening/detail.py)
    max_noise: float = 6.0
    max_blockiness: float = 1.6

    @classmethod
    def from_config(cls, config) -> ScreenSettings:
        cells, q = config.cells, config.quality
        return cls(
            AcquisitionSettings.from_config(config),
            cells.target,
            cells.threshold,
            cells.max_unclassified,
            q.enabled,
            q.max_noise,
            q.max_blockiness,
        )


@dataclass(frozen=True, eq=False)
class PreparedFrame:
    """A frame made ready for detection, or refused before it."""

    image: np.ndarray  # the frame as given: stored, shown, and searched for cells (the detector
    # references its own working copy's white)
    um_per_px: float | None  # the frame's µm/px (None: refused before a scale was known)
    scale_source: str  # "given" | "profile:<name>" | "auto"
    scale_check: ScaleCheck
    refused: str | None  # why the frame is not screened
    white: WhiteReference | None = None  # applied to each cell's crop window (not the whole frame)
    prepare_ms: float = 0.0

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def refusal_category(self) -> str:
        """One of `device.reason_categories.REFUSAL_REASONS` for a refused frame."""
        c = self.scale_check
        return "scale_mismatch" if c.ran and not c.ok else "scale_unknown"


@dataclass(frozen=True)
class DetectedCells:
    cells: tuple[Cell, ...]  # every nucleated body found, frame pixels
    detect_ms: float = 0.0

    @property
    def white(self) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.kind == WHITE)


@dataclass(frozen=True)
class ClassifiedCell:
    cell: Cell
    decision: CellDecision | None  # None: not a white cell (platelet, other), not classified
    probabilities: dict[str, float] = field(default_factory=dict)  # calibrated, ensemble mean
    unfamiliar: str | None = None  # the content/colour checks' reason, when they fired


@dataclass(frozen=True)
class ClassifiedCells:
    cells: tuple[ClassifiedCell, ...]  # in the detector's order
    crop_ms: float = 0.0
    infer_ms: float = 0.0


@dataclass(frozen=True)
class Timings:
    prepare_ms: float = 0.0
    detect_ms: float = 0.0
    crop_ms: float = 0.0
    infer_ms: float = 0.0
    result_ms: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class LiveCell:
    """One cell as the live page outlines it (`FieldCells.live_cells`)."""

    index: int
    box: tuple[int, int, int, int]  # frame pixels
    kind: str
    state: str
    label: str | None
    display: str
    colour: str  # CSS hex colour of its class

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "box": list(self.box)}


@dataclass(frozen=True)
class SecondReading:
    """What the field models made of a field the cells left uncertain (`device/screening/second.py`),
    and whether it decided the field's call."""

    models: tuple[str, ...]
    state: str  # MALIGNANT | NOT_MALIGNANT | NOT_READ (refused, abstained, unfamiliar)
    label: str | None  # the field models' label (their own vocabulary)
    display: str | None  # ... as their bundle names it
    confidence: float
    reason: str | None  # why it was not read, or why its reading did not decide the call
    decided: bool = False  # the reading called the field
    leaning: str | None = None  # NOT_READ: which way the field models lean all the same
    ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "state": self.state,
            "label": self.label,
            "display": self.display,
            "confidence": round(self.confidence, 4),
            "reason": self.reason,
            "decided": self.decided,
            "leaning": self.leaning,
            "ms": round(self.ms, 1),
        }


@dataclass(frozen=True, eq=False)
class FieldCells:
    """The field's result: its cells, their differential and the record's call."""

    state: str  # COUNTED | NO_CELLS | REFUSED
    records: tuple[CellRecord, ...]  # every detected body (`kind` says which are white cells)
    differential: Differential | None  # the field's white cells (None unless COUNTED)
    field_line: str  # e.g. "7 white cells: 5 lymphocytes, 2 blasts"
    label: str  # the record's label (see result.py's rule)
    abstained: bool
    reason: str | None
    confidence: float
    probabilities: dict[str, float]  # mean calibrated probabilities over the field's white cells
    prepared: PreparedFrame
    live: tuple[LiveCell, ...] = ()
    timings: Timings = field(default_factory=Timings)
    evidence: FieldEvidence | None = None  # the field rule's pooled cells (None: none pooled)
    second: SecondReading | None = None  # the field models' reading (device/screening/second.py)
    detail: Detail | None = None  # noise and JPEG blocks (device/screening/detail.py)

    @property
    def display(self) -> str:
        """What a page says of the field."""
        if self.state == REFUSED:
            return f"not screened: {self.prepared.refused}"
        return self.field_line

    @property
    def white_records(self) -> tuple[CellRecord, ...]:
        return tuple(r for r in self.records if r.kind == WHITE)

    def to_dict(self) -> dict[str, Any]:
        """The field's summary for pages and JSON (records' `quality.cells_field`, uploads' `field`)."""
        p = self.prepared
        return {
            "state": self.state,
            "display": self.display,
            "field_line": self.field_line,
            "frame_size": list(p.frame_size),
            "um_per_px": round(p.um_per_px, 5) if p.um_per_px else None,
            "scale_source": p.scale_source,
            "scale_check": p.scale_check.to_dict(),
            "white_cells": len(self.white_records),
            "differential": self.differential.to_dict() if self.differential is not None else None,
            "cells": [c.to_dict() for c in self.live],
            "timings": self.timings.to_dict(),
            "second_reading": self.second.to_dict() if self.second is not None else None,
            "detail": self.detail.to_dict() if self.detail is not None else None,
        }
