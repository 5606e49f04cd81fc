"""The station's time zone, for dates people read (the slide report). Records stay in UTC.

`[device] timezone` names an IANA zone; empty means the system's own zone (the target of
/etc/localtime, or /etc/timezone), else UTC.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LOCALTIME = Path("/etc/localtime")
TIMEZONE_FILE = Path("/etc/timezone")


def is_zone(name: str) -> bool:
    """Whether `name` is an IANA zone this system knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def system_zone_name(localtime: Path = LOCALTIME, timezone_file: Path = TIMEZONE_FILE) -> str:
    """The system's zone name: /etc/localtime's link target after `zoneinfo/`, else /etc/timezone,
    else "UTC". A zone the system cannot load counts as unknown."""
    candidates = []
    try:
        target = os.readlink(localtime)
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    with contextlib.suppress(OSError):
        candidates.append(timezone_file.read_text(encoding="utf-8").strip())
    for name in candidates:
        if name and is_zone(name):
            return name
    return "UTC"


def station_zone(name: str = "") -> ZoneInfo:
    """The configured zone (validated by the config), else the system's."""
    return ZoneInfo(name or system_zone_name())


def parse_utc(iso: str) -> datetime:
    """A record's UTC time ("2026-11-22T01:02:03.123Z") as an aware datetime."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)


def local_text(iso: str | None, zone: ZoneInfo) -> str:
    """ "2026-11-22 02:02 CET" for people; "" when there is no time."""
    if not iso:
        return ""
    return parse_utc(iso).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
