"""The cell keys of a live result as the page receives them: `cells` (one box per detected cell),
`frame_size`, `field_line` and the running `slide` count. Each key is checked field by field, so the
page's script only ever draws well-formed boxes and words: a malformed cell is dropped whole, a
malformed key is left out, and nothing else of the result goes through."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from device.screening.result import BLAST_COLOUR, NOT_WHITE_COLOUR, TYPE_COLOURS, UNCLASSIFIED_COLOUR

KEYS = ("cells", "frame_size", "field_line", "slide", "second_reading")
#: `SecondReading.state` values (device/screening/stages.py) the page words.
SECOND_STATES = ("malignant", "not_malignant", "not_read")
STATES = ("blast", "not_blast", "unclassified")
#: The detector's kinds (`device.cells.detect`): only white cells are counted; the others are outlined
#: apart (dotted) so a technician sees what the detector found and left out.
KINDS = ("white", "platelet", "other")
#: More boxes than any field holds: a runaway detector cannot make the page draw without end.
MAX_CELLS = 500
MAX_TEXT = 300
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")

#: The screening's own colours (device/screening/result.py): one palette for the stored and the drawn
NOT_COUNTED_COLOUR = NOT_WHITE_COLOUR


def palette_colour(state: str, label: str | None, label_ids: Sequence[str] = (), kind: str = "white") -> str:
    """The box colour of a cell whose result names none: by kind and state, then by the label's index
    among the bundle's labels (a stable colour per type from field to field)."""
    if kind != "white":
        return NOT_COUNTED_COLOUR
    if state == "blast":
        return BLAST_COLOUR
    if state == "unclassified" or label is None:
        return UNCLASSIFIED_COLOUR
    index = list(label_ids).index(label) if label in label_ids else sum(map(ord, label))
    return TYPE_COLOURS[index % len(TYPE_COLOURS)]


@dataclass(frozen=True)
class LiveCell:
    index: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the published frame's pixels
    state: str
    label: str | None
    display: str
    colour: str  # "#rrggbb"
    kind: str = "white"  # what the detector found; only white cells are counted

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "box": list(self.box)}


@dataclass(frozen=True)
class SlideCount:
    counted: int  # classified white cells of the open sample, this field included
    target: int
    blasts: int
    blast_pct: float | None  # percent (0-100); None before any cell is counted
    call: str  # device.cells.count: suspicious | no_blasts_seen | count_more
    call_text: str  # the English call with its interval (shown as details)
    unclassified: int = 0  # white cells the classifier could not name, counted apart
    sample_id: str | None = None  # the sample counted (the page shows the count only for its own sample)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(value: Any, lo: int = 0) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if int(value) >= lo else None


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) else None


def _box(value: Any) -> tuple[int, int, int, int] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        out.append(round(v))
    x0, y0, x1, y1 = out
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def cell_of(raw: Any, label_ids: Sequence[str] = ()) -> LiveCell | None:
    """One published cell, or None when any of its fields is malformed."""
    if not isinstance(raw, dict):
        return None
    index, box, state = _int(raw.get("index")), _box(raw.get("box")), raw.get("state")
    label = raw.get("label")
    if index is None or box is None or state not in STATES or not (label is None or isinstance(label, str)):
        return None
    kind = raw.get("kind", "white")
    if kind not in KINDS:
        return None
    colour = raw.get("colour")
    if not (isinstance(colour, str) and _HEX.match(colour)):
        colour = palette_colour(state, label, label_ids, kind)
    display = _text(raw.get("display")) or label or state
    return LiveCell(index, box, state, label, display, colour, kind)


def slide_of(raw: Any) -> SlideCount | None:
    if not isinstance(raw, dict):
        return None
    counted, target, blasts = _int(raw.get("counted")), _int(raw.get("target"), 1), _int(raw.get("blasts"))
    pct = raw.get("blast_pct")
    if pct is not None and (isinstance(pct, bool) or not isinstance(pct, (int, float))):
        return None
    if pct is not None and not 0 <= pct <= 100:
        return None
    call, text = _text(raw.get("call")), _text(raw.get("call_text"))
    if counted is None or target is None or blasts is None or blasts > counted or call is None:
        return None
    unclassified = _int(raw.get("unclassified", 0))
    sample_id = raw.get("sample_id")
    if unclassified is None or not (sample_id is None or isinstance(sample_id, str)):
        return None
    pct = None if pct is None else float(pct)
    return SlideCount(counted, target, blasts, pct, call, text or "", unclassified, sample_id)


def second_of(raw: Any) -> dict[str, Any] | None:
    """The field models' second reading as the page may show it: its state, whether it called the
    field, and the label it read (words, bounded), or None when malformed."""
    if not isinstance(raw, dict) or raw.get("state") not in SECOND_STATES:
        return None
    decided = raw.get("decided")
    if not isinstance(decided, bool):
        return None
    shown = _text(raw.get("display")) or _text(raw.get("label"))
    return {"state": raw["state"], "decided": decided, "display": shown}


def cell_keys(result: dict[str, Any], label_ids: Sequence[str] = ()) -> dict[str, Any]:
    """The checked cell keys of a live result (only those present and well formed)."""
    out: dict[str, Any] = {}
    raw_cells = result.get("cells")
    if isinstance(raw_cells, list):
        cells = (cell_of(c, label_ids) for c in raw_cells[:MAX_CELLS])
        out["cells"] = [c.to_dict() for c in cells if c is not None]
    size = result.get("frame_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        w, h = _int(size[0], 1), _int(size[1], 1)
        if w is not None and h is not None:
            out["frame_size"] = [w, h]
    line = _text(result.get("field_line"))
    if line is not None:
        out["field_line"] = line
    slide = slide_of(result.get("slide"))
    if slide is not None:
        out["slide"] = slide.to_dict()
    second = second_of(result.get("second_reading"))
    if second is not None:
        out["second_reading"] = second
    return out
