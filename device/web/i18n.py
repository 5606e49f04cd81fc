"""Languages and time on the technician's page (Flask-Babel).

The language is, in order: the user's own choice (`users.language`), the `smearscope_lang` cookie
(the login page, before anyone is known), the browser's Accept-Language, English. Dates people read
are formatted by Babel in the station's zone (`[device] timezone`), with the zone written after them.
The CLI, logs, exports and stored records stay English and UTC.
"""

from __future__ import annotations

import re
from datetime import datetime

from flask import Flask, current_app, g, request
from flask_babel import Babel, format_datetime, format_decimal, format_percent, get_locale

from device.localtime import parse_utc, station_zone

#: The page's languages, by code, each named in itself (what the picker lists).
LANGUAGES: dict[str, str] = {"en": "English", "fr": "Français", "pt": "Português", "es": "Español"}
DEFAULT = "en"
COOKIE = "smearscope_lang"
COOKIE_DAYS = 365


def known(code: str | None) -> str | None:
    """`code` when the page speaks it, else None."""
    return code if code in LANGUAGES else None


def select_locale() -> str:
    user = g.get("user")
    chosen = known(getattr(user, "language", None)) or known(request.cookies.get(COOKIE))
    return chosen or request.accept_languages.best_match(list(LANGUAGES)) or DEFAULT


def zone_name() -> str:
    return current_app.extensions["smearscope"].config.device.timezone or ""


def select_timezone() -> str:
    return station_zone(zone_name()).key


def when(iso: str | None, length: str = "medium") -> str:
    """A record's UTC time in the station's zone and the reader's language, zone shown:
    "7 déc. 2026, 15:58:04 CET". "" when there is no time."""
    if not iso:
        return ""
    try:
        moment = parse_utc(iso)
    except (TypeError, ValueError):
        return str(iso)
    return f"{format_datetime(moment, length)} {zone_label(moment)}"


def clock(iso: str | None) -> str:
    """The time of day only, zone shown ("15:58:04 CET"): the live overlay."""
    if not iso:
        return ""
    try:
        moment = parse_utc(iso)
    except (TypeError, ValueError):
        return ""
    return f"{format_datetime(moment, 'HH:mm:ss')} {zone_label(moment)}"


def zone_label(moment: datetime) -> str:
    """The zone's abbreviation at that moment ("CET", "EAT", "UTC"); its IANA name when the zone has
    only a numeric one ("+03")."""
    zone = station_zone(zone_name())
    abbr = moment.astimezone(zone).tzname() or zone.key
    return zone.key if abbr[:1] in "+-" else abbr


def scale_text(um_per_px: float | None) -> str:
    """A µm/px figure with 4 significant digits in the reader's language ("0,0725")."""
    if um_per_px is None:
        return ""
    return format_decimal(float(um_per_px), format="0.0###")


def percent_text(fraction: float | None) -> str:
    """A share with one decimal in the reader's language ("30.0%", "30,0 %"): the locale's own percent
    pattern (where the sign goes, its space) with one fraction digit. "—" when there is none."""
    if fraction is None:
        return "—"
    pattern = get_locale().percent_formats[None].pattern.split(";")[0]
    return format_percent(float(fraction), re.sub(r"0(?=[^0]*$)", "0.0", pattern, count=1))


def lang() -> str:
    return str(get_locale() or DEFAULT)


def init_app(app: Flask) -> Babel:
    """Flask-Babel with the selectors above; `when`, `clock`, `scale` and `percent` template filters."""
    babel = Babel(app, locale_selector=select_locale, timezone_selector=select_timezone)
    app.add_template_filter(when, "when")
    app.add_template_filter(clock, "clock")
    app.add_template_filter(scale_text, "scale")
    app.add_template_filter(percent_text, "percent")
    app.jinja_env.globals.update(languages=LANGUAGES, page_lang=lang)
    return babel
