"""CSV that a spreadsheet opens without running anything: a text cell that starts with a formula
trigger (= + - @, tab, CR, LF — also after leading whitespace, which spreadsheets skip) gets a leading
apostrophe, the OWASP "CSV injection" defence. Numbers stay numbers (-3.2 is data, not a formula).
Every CSV the hub writes goes through `writer` (tests/test_hub_hardening.py checks that)."""

from __future__ import annotations

import csv
import re
from typing import Any, Protocol

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class _Writable(Protocol):
    def write(self, s: str, /) -> Any: ...


def safe_cell(value: Any) -> Any:
    """`value` as a CSV cell that cannot be read as a formula."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    if _NUMBER.match(text):
        return text
    stripped = text.lstrip(" \t\r\n\u00a0\u3000")
    if text.startswith(TRIGGERS) or (stripped != text and stripped.startswith(TRIGGERS)):
        return "'" + text
    return text


class SafeWriter:
    """csv.writer whose rows are defused cell by cell."""

    def __init__(self, out: _Writable, **kwargs: Any) -> None:
        self._w = csv.writer(out, **kwargs)

    def writerow(self, row: Any) -> Any:
        return self._w.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Any) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: _Writable, **kwargs: Any) -> SafeWriter:
    return SafeWriter(out, **kwargs)
