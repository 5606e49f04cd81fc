"""A slide's running count while it is captured: the cells stored in a sample plus the field on screen,
counted by the slide report's own rule (`device.slides.cells.slide_differential`), as the live page's
`slide` (`{sample_id, counted, target, blasts, blast_pct, call, call_text, unclassified}`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from device.cells.count import label_infos
from device.cells.record import CellRecord
from device.models.bundle import Label
from device.screening.stages import ScreenSettings
from device.slides.cells import slide_differential


def slide_summary(
    sample_id: str, cells: Iterable[CellRecord], labels: Sequence[Label], settings: ScreenSettings
) -> dict[str, Any]:
    d = slide_differential(list(cells), label_infos(labels), settings)  # type: ignore[arg-type]
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
