"""Fixed categories for why a result abstained or a frame was not classified.

The reasons shown to people are sentences with figures in them ("confidence 0.52 below threshold
0.60"); a Prometheus label must come from a small fixed set, or every distinct sentence becomes a new
time series. These functions map a result to one of the categories below, and nothing else.
"""

from __future__ import annotations

from typing import Any

# Why a result says "uncertain — refer to a hematologist".
ABSTENTION_REASONS = (
    "unfamiliar_input",  # colour, energy or content check: unlike the training images
    "low_confidence",  # below the calibrated threshold
    "models_disagree",  # the ensemble's members vote differently
    "tiles_disagree",  # confident tiles of one field disagree (benign vs malignant, or subtypes)
    "doubtful_leans_malignant",  # benign tiles, but a doubtful one leans malignant
    "image_quality",  # an upload failing the quality gate (classified, marked uncertain)
    "other",
)

# Why a frame or an image got no call at all.
REFUSAL_REASONS = (
    "quality",  # the quality gate (focus, exposure, stain, contrast)
    "scale_mismatch",  # the red cells disagree with the calibrated (or assumed) scale
    "scale_unknown",  # the red cells cannot tell the scale ("auto")
    "image_size",  # too large or too small at the models' scale
    "disk_full",  # an upload whose image cannot be kept
    "other",
)

# Checked in order; the first prefix found decides. A field where every tile abstained reads
# "<tile reason> (n tiles); <tile reason> (m tiles)": the most frequent tile reason comes first.
_ABSTENTION_PREFIXES = (
    ("image quality:", "image_quality"),
    ("image too noisy", "image_quality"),  # device/screening/detail.py
    ("image too compressed", "image_quality"),
    ("input unlike the training images", "unfamiliar_input"),
    ("confidence ", "low_confidence"),
    ("models disagree", "models_disagree"),
    ("tiles disagree", "tiles_disagree"),
    ("malignant in every confident tile", "tiles_disagree"),
)


def abstention_category(reason: str | None) -> str:
    """One of ABSTENTION_REASONS for the reason text of an abstained result."""
    text = (reason or "").strip()
    if "doubtful tile(s) lean malignant" in text:
        return "doubtful_leans_malignant"
    for prefix, category in _ABSTENTION_PREFIXES:
        if text.startswith(prefix):
            return category
    return "other"


def refusal_category(prepared: Any) -> str:
    """One of REFUSAL_REASONS for a refused `device.optics.analyse.Prepared` (read by its fields, not
    its message)."""
    plan = getattr(prepared, "plan", None)
    if plan is None:
        return "scale_unknown"
    if getattr(plan, "refused", None):
        return "image_size"
    check = getattr(prepared, "check", None)
    if check is not None and check.ran and not check.ok:
        return "scale_mismatch"
    return "other"
