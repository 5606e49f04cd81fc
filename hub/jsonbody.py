"""Parsing untrusted JSON bodies with bounds. Python's parser recurses, so `[[[[…` thousands deep raised
RecursionError → 500: here it is a 400, and so is anything that parses but nests deeper than MAX_DEPTH
(checked without recursion, before any handler walks the value). Only strict JSON is taken: no
NaN/Infinity, and an integer past Python's digit limit is a 422, not a 500."""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32  # a record is 3 levels deep inside its envelope; 32 leaves room and bounds every walker


class BodyError(ValueError):
    """The body cannot be taken; `status` is the HTTP answer (400 too deep, 422 not JSON)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def depth(value: Any, stop: int = 1_000_000) -> int:
    """How deeply arrays/objects nest in a parsed value (a scalar is 0), level by level without
    recursion; counting stops once past `stop`."""
    level = [value] if isinstance(value, dict | list) else []
    d = 0
    while level and d <= stop:
        d += 1
        children: list[Any] = []
        for v in level:
            children.extend(v.values() if type(v) is dict else v)
        level = [c for c in children if type(c) is dict or type(c) is list]
    return d


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (strict JSON only)")


def loads(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed body, or BodyError (400: nested deeper than `max_depth`; 422: not strict JSON)."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError as exc:  # the C parser counts its own recursion and stops cleanly
        raise BodyError(f"body nests arrays/objects deeper than {max_depth} levels", 400) from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, NaN, a 5,000-digit integer
        raise BodyError(f"body is not JSON: {str(exc)[:200]}", 422) from exc
    if depth(value, max_depth) > max_depth:
        raise BodyError(f"body nests arrays/objects deeper than {max_depth} levels", 400)
    return value
