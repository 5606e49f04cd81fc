"""A cell-counted slide's call, rule and verification in the reader's language (the summary's own
`call_text` and `rule`, made by `device.cells.count`, stay English for records and exports)."""

from __future__ import annotations

from typing import Any

from flask_babel import format_percent, gettext, ngettext

from device.web.i18n import percent_text


def _limit(pct: float | None) -> str:
    """A configured limit in percent ("2%", "2 %"): as many digits as it was given with."""
    return format_percent((pct or 0.0) / 100, "#,##0.##%")


def call_text(s: dict[str, Any]) -> str:
    """What `device.cells.count.differential` says as `call_text`, translated."""
    n, blasts, unclassified = int(s["counted"]), int(s["blasts"]), int(s["unclassified"])
    d = s.get("differential") or {}
    figures = {
        "n": n,
        "pct": percent_text(d.get("blast_fraction") or 0.0),
        "low": percent_text(d.get("ci_low") or 0.0),
        "high": percent_text(d.get("ci_high") or 0.0),
        "threshold": _limit(s.get("threshold_pct")),
    }
    if s["call"] == "suspicious":
        text = ngettext(
            "suspicious — refer: %(num)d blast in %(n)s white cells (%(pct)s, 95%% CI %(low)s–%(high)s), "
            "clearly above the %(threshold)s screening threshold",
            "suspicious — refer: %(num)d blasts in %(n)s white cells (%(pct)s, 95%% CI %(low)s–%(high)s), "
            "clearly above the %(threshold)s screening threshold",
            blasts,
            **figures,
        )
    elif s["call"] == "no_blasts_seen":
        text = gettext("no blasts seen in %(n)s white cells (upper 95%% bound %(high)s)", **figures)
    else:
        text = gettext("count more cells: %(n)s of %(goal)s", n=n, goal=s.get("goal") or s.get("target"))
        if blasts:
            text += ngettext(
                " (%(num)d blast, %(pct)s, 95%% CI %(low)s–%(high)s: not clearly above %(threshold)s)",
                " (%(num)d blasts, %(pct)s, 95%% CI %(low)s–%(high)s: not clearly above %(threshold)s)",
                blasts,
                **figures,
            )
        elif n >= int(s["target"]) and unclassified / (n + unclassified) > s["max_unclassified_pct"] / 100:
            text += gettext(
                " (%(u)s of %(total)s white cells unclassified: review them)",
                u=unclassified,
                total=n + unclassified,
            )
            unclassified = 0
    if unclassified:
        text += gettext("; %(n)s unclassified", n=unclassified)
    return text


def verified_text(s: dict[str, Any]) -> str:
    """Who verified the call (`device.slides.cells.VERIFY_RULE`), or what is left to review."""
    if s.get("verified"):
        return gettext("Verified by %(names)s.", names=", ".join(s.get("verified_by") or []))
    if s.get("to_review"):
        return gettext("Not verified yet: %(n)s blast or unclassified cell(s) to review.", n=s["to_review"])
    return gettext("Not verified yet: no cell reviewed.")


def rule_text(s: dict[str, Any]) -> str:
    """`device.cells.count.RULE` with the slide's settings, then the verification rule."""
    return " ".join(
        (
            gettext(
                "Blast share = blasts / classified white cells, with its exact (Clopper-Pearson) 95%% "
                "interval; unclassified cells are counted apart. 'suspicious — refer' when the interval's "
                "lower bound is above the screening threshold (%(threshold)s), at any count; 'no blasts "
                "seen in N white cells (upper 95%% bound x%%)' when N reaches the target (%(target)s) with "
                "no blast and at most %(unclassified)s of the white cells unclassified; otherwise 'count "
                "more cells'. A subtype is information and never decides the call. A reviewed cell counts "
                "by its reviewed label.",
                threshold=_limit(s.get("threshold_pct")),
                target=s.get("target"),
                unclassified=_limit(s.get("max_unclassified_pct")),
            ),
            gettext(
                "Verified when a person has reviewed every cell the classifier called a blast or left "
                "unclassified (and at least one cell); the names are everyone who reviewed a cell of the "
                "slide."
            ),
        )
    )


def group_title(key: str, display: str) -> str:
    """A gallery group's heading: the fixed groups translated, a label's display name as the bundle
    gives it."""
    fixed = {
        "unclassified": gettext("Unclassified"),
        "unnamed_white": gettext("White cell, type not named"),
        "not_white": gettext("Not counted (not a white cell by the detector)"),
        "not_a_cell": gettext("Excluded (not a white cell)"),
    }
    return fixed.get(key, display)
