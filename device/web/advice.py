"""Words a technician can act on: every refusal or doubt the page shows, as one short translated
sentence saying what happened and what to do, with the engineer's English reason kept as the details.

Results come from the pipeline in English (records, logs and exports keep that text); the sentence is
chosen here at display time from the reason's fixed category (`device/reason_categories.py`) or, for
refusals and the quality gate, from the fixed wording the optics and quality modules write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask_babel import gettext, lazy_gettext, ngettext

from device.reason_categories import abstention_category
from device.web import cell_words
from device.web.i18n import scale_text

#: The safety sentences of common/wording.py, translated where the page shows them (the English
#: constants stay for logs, CLI and exports; tests check both spell the same words).
DISCLAIMER_TEXT = lazy_gettext("A screening aid for trained staff, not a diagnosis.")
UNCERTAIN_TEXT = lazy_gettext("uncertain — refer to a hematologist")


#: How a record's reason starts when the field got no call at all (field.py's wording).
REFUSAL_PREFIXES = ("no white cells", "not classified")


@dataclass(frozen=True)
class Advice:
    """What the page says about a result with no trustworthy call."""

    kind: str  # the category: a reason_categories name, a quality reason or a refusal kind
    title: str  # a few words: "Not classified", "Uncertain — refer"
    sentence: str  # what happened and what to do, in the reader's language
    details: str  # the engineer's English reason (figures, thresholds, model names)
    refused: bool = False  # no call at all (not classified), rather than a doubtful one

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "title": self.title,
            "sentence": self.sentence,
            "details": self.details,
            "refused": self.refused,
        }


def _abstention_sentences() -> dict[str, str]:
    return {
        "unfamiliar_input": gettext(
            "This image does not look like the slides the models learned from: check the stain, the "
            "objective and the focus; if it stays, refer the slide to a hematologist."
        ),
        "low_confidence": gettext(
            "The models are not sure about this field: look at other fields, and refer the slide to a "
            "hematologist if the doubt stays."
        ),
        "models_disagree": gettext(
            "The models disagree about this field: refer the slide to a hematologist."
        ),
        "tiles_disagree": gettext(
            "The cells in this field point to different classes: refer the slide to a hematologist."
        ),
        "doubtful_leans_malignant": gettext(
            "Some cells in this field are doubtful and lean malignant: refer the slide to a hematologist."
        ),
        "image_quality": gettext(
            "The image quality is too low to trust a call: take the picture again, in focus and well lit."
        ),
        "other": gettext("The models cannot call this field: refer the slide to a hematologist."),
    }


def _quality_sentences() -> dict[str, str]:
    return {
        "blank field (no contrast)": gettext("The field is blank: move to a part of the smear with cells."),
        "no stained smear": gettext(
            "No stained smear in view: check the slide is stained and under the objective."
        ),
        "out of focus": gettext("The field is out of focus: turn the fine focus until the cells are sharp."),
        "over-exposed": gettext("The picture is too bright: lower the lamp or the exposure."),
        "under-exposed": gettext("The picture is too dark: raise the lamp or the exposure."),
    }


def quality_words(reasons: list[str] | tuple[str, ...]) -> list[str]:
    """The quality gate's reasons as short words in the reader's language (unknown ones as they are)."""
    table = {
        "blank field (no contrast)": gettext("blank field (no contrast)"),
        "no stained smear": gettext("no stained smear"),
        "out of focus": gettext("out of focus"),
        "over-exposed": gettext("over-exposed"),
        "under-exposed": gettext("under-exposed"),
    }
    return [table.get(r, r) for r in reasons]


def _refusal(text: str) -> tuple[str, str]:
    """(kind, sentence) for a refused field's English reason."""
    low = text.lower()
    if low.startswith("no white cells"):
        return "no_cells", gettext("No white cells in this field: move to a field with white cells.")
    if low.startswith("scale unknown") or "could not tell" in low:
        return "scale_unknown", gettext(
            "The scale could not be told from the red cells: type the image's scale (µm per pixel) or "
            "choose the calibration profile, then try again."
        )
    if "image would be" in low:
        return "image_size", gettext(
            "At the models' scale this image would be far too large: check the scale (µm per pixel) "
            "given for it."
        )
    if "of a " in low and "tile" in low:
        return "image_size", gettext(
            "The picture is too small to judge: use a higher magnification or upload the whole field."
        )
    if low.startswith("uncertain for this field"):
        return "scale_doubt", gettext(
            "This field's red cells look the wrong size, so it is not judged: move to another field. "
            "If several fields in a row say so, check the objective and the calibration profile."
        )
    if "magnification differs" in low or "scale differs" in low or "red cells say" in low:
        return "scale_mismatch", gettext(
            "The red cells look the wrong size for the chosen scale: check the objective and the "
            "calibration profile (or the scale given for an upload), then try again."
        )
    return "other", gettext("This field was not classified: see the details, or ask an admin.")


def _upload_sentences() -> dict[str, str]:
    from device.web.classify import MAX_FILES

    return {
        "name": gettext(
            "The file's name cannot be used: rename it (letters, digits, dashes) and upload it again."
        ),
        "too_big": gettext(
            "The file is too large for this station: export it smaller (for example as JPEG) and upload "
            "it again."
        ),
        "empty": gettext("The file is empty: export the image again and upload it."),
        "type": gettext(
            "This kind of file is not accepted: save the image as JPEG, PNG, BMP or TIFF and upload it again."
        ),
        "not_image": gettext("This file is not a picture: choose a JPEG, PNG, BMP or TIFF image."),
        "damaged": gettext(
            "The file is damaged or incomplete: copy it again from the microscope's computer and upload "
            "it again."
        ),
        "pixels": gettext(
            "The picture has too many pixels for this station: export it smaller and upload it again."
        ),
        "busy": gettext("The station is busy with other uploads: wait a minute and upload again."),
        "sample": gettext("That sample does not exist: choose another sample, or none."),
        "finished": gettext("That sample is finished: start a new sample, or choose an open one."),
        "no_file": gettext("No file was chosen: choose one or more images, then press Classify."),
        "files": gettext("Too many files at once: upload them in groups of at most %(max)s.", max=MAX_FILES),
        "scale": gettext(
            "The scale is not one this station can use: type it in µm per pixel (for example 0.25), "
            "or choose another scale."
        ),
        "storage": gettext(
            "The station's storage is full: ask an admin to free disk space, then upload again."
        ),
        "storage_partial": gettext(
            "The station's storage filled up during the upload: the details name the files that were "
            "not kept. Ask an admin to free disk space, then upload those again."
        ),
    }


def upload_refusal(kind: str, message: str) -> Advice:
    """An upload refused before anything was classified (device/web/upload_check.py's kinds, and
    classify.py's); `message` is the engineer's reason, kept as the details."""
    sentence = _upload_sentences().get(kind) or gettext(
        "The upload was refused: see the details, or ask an admin."
    )
    title = gettext("Upload stopped") if kind == "storage_partial" else gettext("Nothing was stored")
    return Advice(kind, title, sentence, message, refused=True)


def calibration_failure(error: str | None) -> Advice:
    """A calibration run that ended without a result (device/optics/calibrate.py's and jobs.py's
    English reasons, kept as the details)."""
    low = (error or "").lower()
    table = (
        (
            "confident red-cell",
            gettext(
                "Too few frames showed red cells clearly: move to a thin area of the smear where red cells "
                "lie side by side, focus, and measure again (or use a stage micrometer)."
            ),
        ),
        (
            "estimates disagree",
            gettext(
                "The frames gave different scales: stay on thin, focused areas of one smear with one "
                "objective, and measure again (or use a stage micrometer)."
            ),
        ),
        (
            "not blank",
            gettext(
                "The field is not empty: move beside the smear, where there are no cells, and measure again."
            ),
        ),
        ("clipped", gettext("The background is too bright: turn the lamp down and measure again.")),
        ("too dark", gettext("The background is too dark: turn the lamp up (or open the condenser).")),
        (
            "camera",
            gettext("No pictures came from the camera: check it is running (Status page) and try again."),
        ),
        (
            "no red-cell scale estimator",
            gettext("This station cannot measure from red cells: use a stage micrometer or type the scale."),
        ),
    )
    sentence = next((said for key, said in table if key in low), None) or gettext(
        "The measurement did not finish: see the details, or ask an admin."
    )
    return Advice("calibration", gettext("Not measured"), sentence, error or "", refused=True)


def quality(reasons: list[str] | tuple[str, ...]) -> Advice:
    """A frame the quality gate rejected."""
    table = _quality_sentences()
    said = [table[r] for r in reasons if r in table]
    sentence = " ".join(dict.fromkeys(said)) or gettext(
        "The picture is not good enough to judge: check focus, light and stain."
    )
    kind = next((r for r in reasons if r in table), "quality")
    return Advice(kind, gettext("No call — fix the field"), sentence, "; ".join(reasons), refused=True)


def refusal(reason: str | None) -> Advice:
    """A field or image the pipeline would not classify (reason in English)."""
    text = (reason or "").removeprefix("not classified: ").removeprefix("frame rejected: ")
    text = text.removeprefix("not screened: ")
    kind, sentence = _refusal(text)
    title = gettext("No white cells in view") if kind == "no_cells" else gettext("Not classified")
    return Advice(kind, title, sentence, text, refused=True)


def abstention(reason: str | None) -> Advice:
    """A field the models abstained on (reason in English)."""
    kind = abstention_category(reason)
    return Advice(kind, gettext("Uncertain — refer"), _abstention_sentences()[kind], reason or "")


def for_record(rec: dict[str, Any]) -> Advice | None:
    """A stored or just-classified record: None when it carries a call."""
    if not rec.get("abstained"):
        return None
    reason = rec.get("reason") or ""
    field = rec.get("field") if isinstance(rec.get("field"), dict) else {}
    if field.get("state") in ("refused", "no_cells") or reason.startswith(REFUSAL_PREFIXES):
        return refusal(reason)
    # a stored refusal keeps only its reason: one the refusal wording knows is not a doubt
    if abstention_category(reason) == "other" and _refusal(reason)[0] != "other":
        return refusal(reason)
    return abstention(reason)


def has_call(rec: dict[str, Any]) -> bool:
    """Whether probability bars may be shown as a call: not abstained, not refused."""
    return bool(rec.get("label")) and not rec.get("abstained") and not rec.get("rejected")


def for_live(result: dict[str, Any]) -> Advice | None:
    """A live result: None when it carries a call (or the field is moving)."""
    state = result.get("state")
    if state == "moving":
        return None
    if state == "no_cells":
        return refusal("no white cells in view")
    if state == "scale":
        return refusal(result.get("display"))
    if state == "refused":  # a cell ensemble's field not screened (its scale): the reason says why
        return refusal(result.get("reason"))
    if state == "rejected" or result.get("rejected") or not result.get("label"):
        return quality(list((result.get("quality") or {}).get("reasons") or []))
    if result.get("abstained"):
        return abstention(result.get("reason"))
    return None


#: The field rule of device/optics/field.py (RULE), translated where the live page shows it.
FIELD_RULE_TEXT = lazy_gettext(
    "Field rule: tiles without a white cell are skipped (none at all: 'no white cells in view'); "
    "confident tiles that disagree between benign and malignant, or on the malignant subtype, make the "
    "field 'uncertain — refer'; one confident malignant tile makes the field malignant; a benign field "
    "needs every confident tile benign and no doubtful tile leaning malignant."
)


def models_scale_text(scale: dict[str, Any] | None) -> str:
    """The one name and number for the models' µm/px (the bundles' `input.um_per_px`): the scale every
    image is brought to before the models see it. The camera's own scale is the calibration profile's."""
    um = (scale or {}).get("models_um_per_px")
    if not um:
        return gettext("Models' scale: unknown (the models declare none; images are not rescaled).")
    return gettext("Models' scale: %(um)s µm/px", um=scale_text(um))


def scale_source_words(source: str | None) -> str:
    """Where an image's scale came from (device/optics/analyse.py `scale_source`), in the reader's words."""
    src = source or "unknown"
    if src.startswith("profile"):
        name = src.partition(":")[2]
        return gettext("calibration profile %(name)s", name=name) if name else gettext("calibration profile")
    words = {
        "auto": gettext("from the red cells"),
        "given": gettext("typed"),
        "assumed": gettext("assumed at the models' scale"),
        "unknown": gettext("unknown"),
    }
    return words.get(src, src)


def summary_call(summary: dict[str, Any] | None) -> str:
    """A slide summary's call (`device/slides/summary.py`) in the reader's language."""
    from device.slides.summary import MIN_FIELDS

    s = summary or {}
    if s.get("kind") == "cells":
        return cell_words.call_text(s)
    call = s.get("call")
    if call == "suspicious":
        return gettext(
            "suspicious for malignancy (most fields: %(label)s) — refer to a hematologist",
            label=s.get("top_malignant_label") or "?",
        )
    if call == "no_malignant_seen":
        return gettext("no malignant fields seen")
    if call == "insufficient":
        need = max(MIN_FIELDS - int(s.get("confident_fields") or 0), 1)
        return ngettext(
            "insufficient — capture at least %(num)d more confident field",
            "insufficient — capture at least %(num)d more confident fields",
            need,
        )
    return str(s.get("call_text") or "")


def summary_rule() -> str:
    """The slide rule of `device/slides/summary.py` (RULE) in the reader's language."""
    from device.slides.summary import MIN_FIELDS, MIN_MALIGNANT, MIN_MALIGNANT_FRACTION

    return gettext(
        "suspicious if at least %(n)d confident fields have a malignant label and they are at least "
        "%(pct)d%% of confident fields; 'no malignant fields seen' if at least %(min)d confident fields "
        "and none malignant; otherwise insufficient. Uncertain fields are counted but never decide; a "
        "reviewed field counts by its reviewed label.",
        n=MIN_MALIGNANT,
        pct=int(MIN_MALIGNANT_FRACTION * 100),
        min=MIN_FIELDS,
    )


def init_app(app: Flask) -> None:
    """The template helpers that turn results, scales and summaries into the reader's words."""
    app.jinja_env.globals.update(
        advice_for=for_record,
        quality_words=quality_words,
        scale_source_words=scale_source_words,
        models_scale_text=models_scale_text,
        summary_call=summary_call,
        summary_rule=summary_rule,
        cells_rule=cell_words.rule_text,
        cells_verified=cell_words.verified_text,
        cells_group_title=cell_words.group_title,
    )
