"""The live page's words: what live.js writes (sent once with the page, translated) and the per-result
text the server adds to each live result (the time in the station's zone, advice for a missing call)."""

from __future__ import annotations

from typing import Any

from flask_babel import format_percent, get_locale, gettext, ngettext

from device.cells.count import NO_BLASTS_SEEN, SUSPICIOUS
from device.web import advice, i18n, live_cells


def page_words() -> dict[str, str]:
    """Strings live.js shows, by key, in the reader's language (placeholders: {n}, {label}, ...)."""
    return {
        "good": gettext("good"),
        "poor": gettext("poor"),
        "moving": gettext("Field moving…"),
        "moving_sub": gettext("classified once the stage is still"),
        "uncertain_sub": gettext("top: {label}"),
        "poor_quality": gettext("{label} (poor quality field)"),
        "confidence": gettext("confidence {conf}"),
        "no_heatmap": gettext("the models in service have no heatmap output"),
        "tiles_line": gettext("{classified}/{tiles} tiles"),
        "camera_scale": gettext("Camera: {um} µm/px"),
        "camera_scale_profile": gettext("Camera: {um} µm/px (profile {profile})"),
        "need_sample": gettext("Start a sample first (Sample, below): captured fields go into it."),
        "no_field": gettext("No classified field yet: wait for the live call."),
        "cannot_capture": gettext("This field cannot be stored: {why}"),
        "moving_capture": gettext("The field is moving: hold the stage still until it is classified."),
        "stale_capture": gettext("No live result lately: is the camera running? (see Status)"),
        "store_field": gettext("Store this field in the sample"),
        "stale": gettext("No live result for {n} s"),
        "stale_sub": gettext("camera or classifier stopped? see Status"),
        "summary_counts": gettext(
            "{fields} fields · {confident} confident · {uncertain} uncertain · {reviewed} reviewed"
        ),
        "rule": gettext("Rule: {rule}"),
        "slide_rule": advice.summary_rule(),
        "call_suspicious": gettext(
            "suspicious for malignancy (most fields: {label}) — refer to a hematologist"
        ),
        "call_no_malignant_seen": gettext("no malignant fields seen"),
        "call_insufficient": gettext("insufficient — capture more confident fields"),
        "capturing": gettext("Capturing…"),
        "stored": gettext("Field stored: {call} ({n} fields in this sample)"),
        "uncertain_short": gettext("uncertain — refer"),
        "not_stored": gettext("Not stored: {why}"),
        "cells_call_suspicious": gettext("Suspicious — refer to a hematologist"),
        "cells_call_no_blasts_seen": gettext("No blasts seen in {n} white cells"),
        "cells_call_count_more": gettext("Count more cells: {n} of {target}"),
        "cells_summary_counts": gettext(
            "{fields} fields · {counted} white cells counted · {blasts} blasts · {unclassified} unclassified"
        ),
    }


def view(result: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one live result beyond its figures: `time` (station zone, zone shown),
    `has_call` (bars may be read as a call) and `advice` (title, sentence, English details) when the
    field has no trustworthy call."""
    found = advice.for_live(result)
    out = {
        "time": i18n.clock(result.get("captured_at")),
        "has_call": advice.has_call(result)
        and result.get("state") not in ("moving", "no_cells", "scale", "refused"),
        "advice": found.to_dict() if found else None,
        "quality": advice.quality_words(list((result.get("quality") or {}).get("reasons") or [])),
    }
    checked = live_cells.cell_keys(result)
    if checked:
        out["cells"] = cell_view(checked)
    return out


def cell_view(checked: dict[str, Any]) -> dict[str, Any]:
    """The words of a cell result (`live_cells.cell_keys` output) in the reader's language: the field
    line, the legend of the colours drawn, and the running slide count with its call when decided."""
    cells = checked.get("cells")
    line = checked.get("field_line")
    if cells and (line is None or get_locale().language != "en"):
        line = field_line(cells)  # the pipeline's own line is English
    slide = checked.get("slide")
    return {
        "field_line": line,
        "legend": legend(cells or []),
        "slide": slide_words(slide) if slide else None,
        "call": field_call(cells or [], checked.get("second_reading")) if cells is not None else None,
    }


def field_call(cells: list[dict[str, Any]], second: dict[str, Any] | None = None) -> dict[str, str]:
    """The call box of a field counted cell by cell: what its white cells say, never a field label with a
    confidence (the screen is the slide's count; a field shows its blasts and its unread cells). A field
    whose unread cells the field models' second reading called says so (device/screening/second.py)."""
    white = [c for c in cells if c["kind"] == "white"]
    blasts = sum(c["state"] == "blast" for c in white)
    unread = sum(c["state"] == "unclassified" for c in white)
    if not white:
        return {
            "kind": "uncertain",
            "title": gettext("No white cell in this field"),
            "sub": gettext("Move to a field with white cells."),
        }
    if blasts:
        return {
            "kind": "malignant",
            "title": ngettext("%(num)d blast in this field", "%(num)d blasts in this field", blasts),
            "sub": gettext("Capture it: every blast is checked in the sample's cell gallery."),
        }
    if unread and second and second.get("decided") and second.get("state") == "malignant":
        return {
            "kind": "malignant",
            "title": gettext("Read as malignant by the field models"),
            "sub": gettext("Capture it: its unread cells are checked in the sample's cell gallery."),
        }
    if unread:
        sub = gettext("Capture it and review them in the sample's cell gallery.")
        if second and second.get("decided") and second.get("state") == "not_malignant":
            sub = gettext(
                "The field models read it as benign; capture it and review them in the cell gallery."
            )
        return {
            "kind": "uncertain",
            "title": ngettext("%(num)d white cell not read", "%(num)d white cells not read", unread),
            "sub": sub,
        }
    return {
        "kind": "ok",
        "title": gettext("No blast in this field"),
        "sub": gettext("The slide is called from the count of all its fields."),
    }


def field_line(cells: list[dict[str, Any]]) -> str:
    """'7 white cells: 5 × Lymphocyte, 2 blasts' from the field's cells; bodies that are not white cells
    are listed after it, not counted."""
    white = [c for c in cells if c["kind"] == "white"]
    head = ngettext("%(num)d white cell", "%(num)d white cells", len(white))
    named: dict[str, int] = {}
    others: dict[str, int] = {}
    blasts = unclassified = 0
    for c in cells:
        if c["kind"] != "white":
            others[c["display"]] = others.get(c["display"], 0) + 1
        elif c["state"] == "blast":
            blasts += 1
        elif c["state"] == "unclassified":
            unclassified += 1
        else:
            named[c["display"]] = named.get(c["display"], 0) + 1
    parts = []
    if blasts:
        parts.append(ngettext("%(num)d blast", "%(num)d blasts", blasts))
    parts += [gettext("%(num)d × %(name)s", num=n, name=name) for name, n in named.items()]
    if unclassified:
        parts.append(ngettext("%(num)d unclassified", "%(num)d unclassified", unclassified))
    line = gettext("%(cells)s: %(types)s", cells=head, types=", ".join(parts)) if parts else head
    if others:
        listed = ", ".join(gettext("%(num)d × %(name)s", num=n, name=name) for name, n in others.items())
        line += " " + gettext("(not counted: %(list)s)", list=listed)
    return line


def legend(cells: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One entry per outline style drawn (kind, state, colour, words), in the order the cells come:
    colour is never the only sign, the words and the line (thick = blast, dashed = unclassified,
    dotted = not a white cell) say it too."""
    seen: dict[tuple[str, str, str], dict[str, str]] = {}
    for c in cells:
        key = (c["kind"], c["state"], c["colour"])
        if key in seen:
            continue
        if c["kind"] != "white":
            text = gettext("%(name)s — not counted", name=c["display"])
        elif c["state"] == "blast":
            text = gettext("%(name)s — blast", name=c["display"])
            if "blast" in c["display"].lower():
                text = c["display"]
        elif c["state"] == "unclassified":
            text = gettext("unclassified — review")
        else:
            text = c["display"]
        seen[key] = {"kind": c["kind"], "state": c["state"], "colour": c["colour"], "text": text}
    return list(seen.values())


def slide_words(slide: dict[str, Any]) -> dict[str, Any]:
    """'42 of 100 white cells counted; 3 blasts (7.1%)' and the call once it is decided."""
    line = ngettext(
        "%(counted)d of %(num)d white cell counted",
        "%(counted)d of %(num)d white cells counted",
        slide["target"],
        counted=slide["counted"],
    )
    blasts = ngettext("%(num)d blast", "%(num)d blasts", slide["blasts"])
    if slide["blast_pct"] is not None:
        blasts += f" ({format_percent(slide['blast_pct'] / 100, '#,##0.0%')})"
    if slide["unclassified"]:
        blasts = gettext(
            "%(counted)s; %(blasts)s",
            counted=blasts,
            blasts=ngettext("%(num)d unclassified", "%(num)d unclassified", slide["unclassified"]),
        )
    call = slide["call"]
    if call == SUSPICIOUS:
        text = gettext("Suspicious — refer to a hematologist")
    elif call == NO_BLASTS_SEEN:
        text = gettext("No blasts seen in %(num)d white cells", num=slide["counted"])
    else:
        text = ""
    return {
        "line": gettext("%(counted)s; %(blasts)s", counted=line, blasts=blasts),
        "call": call,
        "decided": call in (SUSPICIOUS, NO_BLASTS_SEEN),
        "call_words": text,
        "details": slide["call_text"],
        "sample_id": slide["sample_id"],
    }
