"""CSV that a spreadsheet opens without running anything (the OWASP "CSV injection" defence).

A text cell whose first character, or first one after leading whitespace (which Excel and LibreOffice
skip), starts a formula gets a leading apostrophe: = + - @ and their full-width forms, or a tab, CR or
LF. Numbers stay numbers: -3.2 is data, not a formula. Station and hub exports both write through
`safe_cell` / `writer`.
"""

from __future__ import annotations

import csv
import re
from typing import Any, Protocol

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
#: Whitespace a spreadsheet skips before it looks for a formula.
_LEADING_SPACE = " \t\r\n\x0b\x0c\u00a0\u3000"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class _Writable(Protocol):
    def write(self, s: str, /) -> Any: ...


def safe_cell(value: Any) -> Any:
    """`value` as a CSV cell that cannot be read as a formula (non-text values unchanged)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    if not text or _NUMBER.match(text):
        return text
    if text.startswith(TRIGGERS) or text.lstrip(_LEADING_SPACE).startswith(TRIGGERS):
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
