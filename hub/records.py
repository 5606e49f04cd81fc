"""Checking one result record (DEVELOPERS.md Contract 3) before the hub stores it."""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Any

SOURCES = ("camera", "upload", "review")
KINDS = ("classification", "review", "cells")  # cells: a field counted cell by cell (its `cells`)
SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")  # \Z: "$" would let a trailing newline through
MAX_LABEL = 100
MAX_PROFILE = 200
MAX_TIME = 40  # the width of the time columns: longer ISO strings (offsets with seconds) are refused
MAX_NAME = 200
# A capture time before this cannot be real (the software did not exist): a device whose clock was never
# set (no RTC, no network: 1970) or a forged value. Such records are stored but flagged, never dropped.
EARLIEST_PLAUSIBLE = datetime(2024, 1, 1, tzinfo=UTC)
# Unicode bidirectional controls: they make a label or slide id read differently from what it is.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


class RecordError(ValueError):
    """The record cannot be stored; the message is the reason sent back to the device."""


def parse_time(value: Any, what: str) -> datetime:
    """An aware UTC datetime from an ISO-8601 string (no zone = UTC); RecordError names the field."""
    if not isinstance(value, str):
        raise RecordError(f"{what}: must be an ISO-8601 string")
    if len(value) > MAX_TIME:
        raise RecordError(f"{what}: longer than {MAX_TIME} characters")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(text)
        return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise RecordError(f"{what}: not an ISO-8601 time in years 1-9999: {value[:MAX_TIME]!r}") from exc


def iso_utc(t: datetime) -> str:
    """`t` as UTC ISO-8601 with milliseconds and "Z": one spelling, so such times order as text."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def time_flag(captured: datetime, now: datetime, skew_s: float | None, limit_s: float) -> str | None:
    """Why a record's time cannot be trusted, or None. Records are kept (a clinic's result is not thrown
    away for a wrong clock) but flagged, and the flag is shown in the API, dashboard and CSV."""
    if captured < EARLIEST_PLAUSIBLE:
        return f"captured_at is before {EARLIEST_PLAUSIBLE:%Y-%m-%d}: the device clock was not set"
    ahead = (captured - now).total_seconds()
    if ahead > limit_s:
        return f"captured_at is {_span(ahead)} in the hub's future"
    if skew_s is not None and abs(skew_s) > limit_s:
        return f"device clock off by {'+' if skew_s > 0 else '-'}{_span(abs(skew_s))} (sent_at vs hub time)"
    return None


def _span(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds / n:.1f} {unit}"
    return f"{seconds:.0f} s"


def checked_text(
    value: Any, what: str, max_len: int, *, optional: bool = False, name: bool = False
) -> str | None:
    """A string the hub stores in a column: bounded, no NUL (PostgreSQL cannot store it); a `name`
    (label, slide id) also has no control or bidirectional-override characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise RecordError(f"{what}: must be a string{' or null' if optional else ''}")
    if len(value) > max_len:
        raise RecordError(f"{what}: longer than {max_len} characters")
    if "\x00" in value:
        raise RecordError(f"{what}: must not contain NUL characters")
    if name and any(c in _BIDI or unicodedata.category(c) == "Cc" for c in value):
        raise RecordError(f"{what}: must not contain control or bidirectional-override characters")
    return value


def _uuid(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError) as exc:
        raise RecordError(f"{what}: must be a UUID") from exc


def checked_number(value: Any, what: str, lo: float, hi: float) -> float:
    """A finite number (not a bool) in lo..hi, as a float; else RecordError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(f"{what}: must be a number")
    if not lo <= value <= hi:
        raise RecordError(f"{what}: must be between {lo} and {hi}")
    return float(value)


def _sha(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SHA256.match(value):
        raise RecordError(f"{what}: must be 64 lowercase hex digits or null")
    return value


def validate(rec: Any) -> dict[str, Any]:
    """The columns the hub indexes, taken from a record; raises RecordError naming the bad field."""
    if not isinstance(rec, dict):
        raise RecordError("record: must be a JSON object")
    rid = _uuid(rec.get("id"), "id")
    seq = rec.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq >= 2**31:
        raise RecordError("seq: must be a non-negative integer")
    parse_time(rec.get("captured_at"), "captured_at")
    source = rec.get("source")
    if source not in SOURCES:
        raise RecordError(f"source: must be one of {', '.join(SOURCES)}")
    kind = rec.get("kind", "classification")
    if kind not in KINDS:
        raise RecordError(f"kind: must be one of {', '.join(KINDS)}")
    review_of = _uuid(rec.get("review_of"), "review_of", optional=True)
    if kind == "review" and review_of is None:
        raise RecordError("review_of: a review must name the record it reviews")
    label = rec.get("label")
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
        raise RecordError(f"label: must be a non-empty string of at most {MAX_LABEL} characters")
    checked_text(label, "label", MAX_LABEL, name=True)
    confidence = checked_number(rec.get("confidence", 0.0), "confidence", 0.0, 1.0)
    abstained = rec.get("abstained", False)
    if not isinstance(abstained, bool):
        raise RecordError("abstained: must be true or false")
    probs = rec.get("probabilities", {})
    if not isinstance(probs, dict):
        raise RecordError("probabilities: must be an object of label → probability")
    for k, v in probs.items():
        checked_number(v, f"probabilities.{k}", 0.0, 1.0)
    if not isinstance(rec.get("models", []), list):
        raise RecordError("models: must be a list")
    if not isinstance(rec.get("quality") or {}, dict):
        raise RecordError("quality: must be an object")
    um_per_px = rec.get("um_per_px")
    if um_per_px is not None:
        um_per_px = checked_number(um_per_px, "um_per_px", 1e-6, 1000.0)
    profile = checked_text(rec.get("profile"), "profile", MAX_PROFILE, optional=True, name=True)
    for key in ("device_id", "boot_id", "reason", "filename", "reviewer", "comment"):
        if rec.get(key) is not None and not isinstance(rec.get(key), str):
            raise RecordError(f"{key}: must be a string or null")
    return {
        "id": rid,
        "seq": seq,
        "sample_id": _uuid(rec.get("sample_id"), "sample_id", optional=True),
        "captured_at": rec["captured_at"],
        "source": source,
        "kind": kind,
        "review_of": review_of,
        "label": label,
        "confidence": confidence,
        "abstained": abstained,
        "image_sha256": _sha(rec.get("image_sha256"), "image_sha256"),
        "heatmap_sha256": _sha(rec.get("heatmap_sha256"), "heatmap_sha256"),
        "um_per_px": um_per_px,
        "profile": profile,
    }


SAMPLE_STATUSES = ("open", "finished")


def validate_sample(s: Any) -> dict[str, Any]:
    """The columns of one sample (the device store's sample JSON); raises RecordError."""
    if not isinstance(s, dict):
        raise RecordError("sample: must be a JSON object")
    sid = _uuid(s.get("id"), "id")
    slide = s.get("slide_id")
    if not isinstance(slide, str) or not slide.strip() or len(slide) > MAX_NAME:
        raise RecordError(f"slide_id: must be a non-empty string of at most {MAX_NAME} characters")
    checked_text(slide, "slide_id", MAX_NAME, name=True)
    status = s.get("status")
    if status not in SAMPLE_STATUSES:
        raise RecordError(f"status: must be one of {', '.join(SAMPLE_STATUSES)}")
    parse_time(s.get("started_at"), "started_at")
    if s.get("finished_at") is not None:
        parse_time(s["finished_at"], "finished_at")
    summary = s.get("summary")
    if summary is not None and not isinstance(summary, dict):
        raise RecordError("summary: must be an object or null")
    checked_text(s.get("notes"), "notes", 100_000, optional=True)
    checked_text(s.get("created_by"), "created_by", MAX_NAME, optional=True)
    return {
        "id": sid,
        "slide_id": slide.strip(),
        "notes": (s.get("notes") or "")[:2000],
        "status": status,
        "started_at": s["started_at"],
        "finished_at": s.get("finished_at"),
        "created_by": s.get("created_by"),
        "summary_json": None if summary is None else json.dumps(summary, sort_keys=True),
    }
