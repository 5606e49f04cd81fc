"""The live page's words: what live.js writes (sent once with the page, translated) and the per-result
text the server adds to each live result (the time in the station's zone, advice for a missing call)."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext

from device.web import advice, i18n


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
    }


def view(result: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one live result beyond its figures: `time` (station zone, zone shown),
    `has_call` (bars may be read as a call) and `advice` (title, sentence, English details) when the
    field has no trustworthy call."""
    found = advice.for_live(result)
    return {
        "time": i18n.clock(result.get("captured_at")),
        "has_call": advice.has_call(result) and result.get("state") not in ("moving", "no_cells", "scale"),
        "advice": found.to_dict() if found else None,
        "quality": advice.quality_words(list((result.get("quality") or {}).get("reasons") or [])),
    }
