"""Typed, finite, in-range numbers: the one check every value read from a file goes through.

The config's dataclasses (`device/config.py`), calibration profiles (`device/camera/profiles.py`) and
camera controls (`device/camera/controls.py`) declare a `Bounds` per number and call `Bounds.check(key,
value)`, which refuses booleans, strings, NaN and infinities as well as values out of range, with a
message naming the key, e.g. ``[web] mjpeg_fps: must be > 0 and <= 30 frames/s, not inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class BoundsError(ValueError):
    """A value is not a number of the right kind, not finite, or out of range; the message names it."""


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Bounds:
    """A closed (or, with `lo_open`/`hi_open`, open) interval of numbers; `integer` refuses fractions."""

    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        lo = None if self.lo is None else (">" if self.lo_open else ">=") + " " + _fmt(self.lo)
        hi = None if self.hi is None else ("<" if self.hi_open else "<=") + " " + _fmt(self.hi)
        if lo and hi and not (self.lo_open or self.hi_open):
            text = f"between {_fmt(self.lo)} and {_fmt(self.hi)}"  # type: ignore[arg-type]
        else:
            text = " and ".join(p for p in (lo, hi) if p) or ("an integer" if self.integer else "a number")
        return f"{text} {self.unit}".rstrip()

    def contains(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def check(self, key: str, value: Any) -> Any:
        """`value` as an int (integer bounds) or float; BoundsError naming `key` otherwise."""
        kind = "an integer" if self.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BoundsError(f"{key}: must be {kind}, not {value!r}")
        if self.integer and not isinstance(value, int):
            raise BoundsError(f"{key}: must be {kind}, not {value!r}")
        if not math.isfinite(value):
            raise BoundsError(f"{key}: must be a finite number, not {value!r}")
        if not self.contains(value):
            raise BoundsError(f"{key}: must be {self.describe()}, not {value!r}")
        return int(value) if self.integer else float(value)


def number(key: str, value: Any, lo: float | None = None, hi: float | None = None, unit: str = "") -> float:
    """A finite number in [lo, hi] (a shorthand for one-off checks)."""
    return Bounds(lo, hi, unit).check(key, value)


def integer(key: str, value: Any, lo: int | None = None, hi: int | None = None, unit: str = "") -> int:
    """An integer in [lo, hi]."""
    return Bounds(lo, hi, unit, integer=True).check(key, value)


def text(key: str, value: Any, max_len: int, *, optional: bool = False) -> str | None:
    """A string of at most `max_len` characters without control characters (None when `optional`)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BoundsError(f"{key}: must be a string, not {value!r}")
    if len(value) > max_len:
        raise BoundsError(f"{key}: must be at most {max_len} characters")
    if any(ord(c) < 32 and c not in "\t\n" or ord(c) == 127 for c in value):
        raise BoundsError(f"{key}: must not contain control characters")
    return value
