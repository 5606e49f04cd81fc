"""A slide's running count: the white cells stored in a sample (plus the field on screen) as the live
page's `slide` (`{sample_id, counted, target, blasts, blast_pct, call, call_text, unclassified}`).
A cell reviewed as not a cell, and every body that is not a white cell, is left out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from device.cells.count import differential
from device.cells.detect import WHITE
from device.cells.record import CellRecord, labels_to_count
from device.models.bundle import Label
from device.screening.stages import ScreenSettings


def slide_summary(
    sample_id: str, cells: Iterable[CellRecord], labels: Sequence[Label], settings: ScreenSettings
) -> dict[str, Any]:
    white = [c for c in cells if c.kind == WHITE]
    d = differential(
        labels_to_count(white),
        labels,
        target=settings.target,
        threshold=settings.threshold,
        max_unclassified=settings.max_unclassified,
    )
    return {
        "sample_id": sample_id,
        "counted": d.counted,
        "target": d.target,
        "blasts": d.blasts,
        "blast_pct": round(100 * d.blast_fraction, 2) if d.blast_fraction is not None else None,
        "call": d.call,
        "call_text": d.call_text,
        "unclassified": d.unclassified,
    }
