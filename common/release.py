"""A bundle's release order, read the same way by the station (install, updates) and the hub (publish):
the signed manifest's `version`, a UTC time, so "older" means the same on both sides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

VERSION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_version(value: Any) -> datetime | None:
    """A release version (`YYYY-MM-DDTHH:MM:SSZ`, UTC) as a datetime; None when absent or malformed."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, VERSION_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def new_version() -> str:
    """The version string of a bundle written now."""
    return datetime.now(UTC).strftime(VERSION_FORMAT)
