"""Names that become folder names or name a station: dataset-export labels and device names.

A label is a folder of the training export, unpacked on Linux, macOS and Windows alike, so a name is
refused when any of them would misread it: empty or over 100 characters, `.`/`..`, a path separator,
a control or invisible formatting character (bidi overrides, zero-width), a character Windows forbids
(`<>:"|?*`), a leading or trailing dot or space, or a Windows device name (CON, PRN, AUX, NUL, COM1-9,
LPT1-9, in any case, with or without an extension: `aux.jpg` is the AUX device there). Names are also
compared case-insensitively (`fold`): macOS and Windows file systems see `Benign` and `benign` as one
folder.
"""

from __future__ import annotations

import unicodedata

MAX_NAME = 100
_DIGITS = "123456789¹²³"  # Windows also reserves COM¹-COM³ and LPT¹-LPT³
RESERVED = frozenset({"CON", "PRN", "AUX", "NUL"} | {f"{p}{d}" for p in ("COM", "LPT") for d in _DIGITS})
WINDOWS_FORBIDDEN = set('<>:"|?*')


def fold(name: str) -> str:
    """The form two names are compared in: Unicode NFC, case-folded (`Benign` == `benign`)."""
    return unicodedata.normalize("NFC", name).casefold()


def problem(name: object) -> str | None:
    """Why `name` cannot be a folder name / device name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters"
    if name in (".", ".."):
        return "must not be . or .."
    if "/" in name or "\\" in name:
        return "must not contain a path separator (/ or \\)"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "must not contain control or invisible formatting characters"
    if WINDOWS_FORBIDDEN & set(name):
        return 'must not contain < > : " | ? * (Windows refuses them in file names)'
    if name[0] in ". " or name[-1] in ". " or name != name.strip():
        return "must not start or end with a dot or a space"
    if name.split(".", 1)[0].rstrip(" ").upper() in RESERVED:
        return "is a reserved device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9)"
    return None


def check(name: object, what: str) -> str:
    """`name` itself, or ValueError saying why it is refused (`what` says whose name it is)."""
    why = problem(name)
    if why is not None:
        raise ValueError(f"{what} {name!r}: {why}")
    return name  # type: ignore[return-value]
