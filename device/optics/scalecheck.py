"""The per-frame scale check: do the frame's red cells agree with the µm/px we are about to assume?

The red-cell estimator (`device.optics.scale.estimate_scale`) runs on a copy shrunk so that an
expected red cell is about `ANALYSIS_DIAMETER_PX` wide (it works from ~10 px per cell), which keeps the
cost small on a 1920x1080 or 4056x3040 frame; its diameter is scaled back to the frame's pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from device.config import QualityConfig

#: The [quality] defaults; device/config.py holds them (and their ranges).
_QUALITY = QualityConfig()

ANALYSIS_DIAMETER_PX = 24.0
CROP_CELLS = 8  # the check looks at the centre square this many red-cell diameters wide (~50
MIN_CROP_PX = 160  # cells in a monolayer) and at least this many pixels; then once at twice the side
MISMATCH = "magnification differs from the calibration — objective changed?"

Estimator = Callable[..., Any]  # estimate_scale(rgb, *, rbc_um, expected_diameter_px=None) -> ScaleEstimate


def default_estimator() -> Estimator:
    from device.optics.scale import estimate_scale  # the optics-core module (OpenCV only)

    return estimate_scale


@dataclass
class ScaleCheck:
    ran: bool  # False: nothing to compare with (scale unknown) or the estimator could not tell
    ok: bool  # True unless the check ran and failed
    expected_um_per_px: float | None
    estimated_um_per_px: float | None
    ratio: float | None  # estimated / expected (>1: the image is less magnified than assumed)
    message: str  # what the status/live page says
    n_cells: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("expected_um_per_px", "estimated_um_per_px", "ratio"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 5)
        return d


def not_run(message: str, expected: float | None = None) -> ScaleCheck:
    return ScaleCheck(False, True, expected, None, None, message)


def _centre(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h <= side and w <= side:
        return rgb
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return rgb[y0 : y0 + side, x0 : x0 + side]


def estimate_um_per_px(
    rgb: np.ndarray,
    *,
    rbc_um: float,
    expected_um_per_px: float | None = None,
    estimator: Estimator | None = None,
):
    """(µm/px of `rgb` or None, the estimate). With an expected scale (the check) the estimator sees
    a copy shrunk so a red cell is ~`ANALYSIS_DIAMETER_PX` wide, and only its centre square of
    `CROP_CELLS` cell diameters (then twice as wide when that cannot tell): on a 1920x1080 frame the
    whole-frame estimate cost about as much as classifying its 12-24 tiles."""
    est_fn = estimator or default_estimator()
    if not expected_um_per_px:
        est = est_fn(rgb, rbc_um=rbc_um)
        return (est.um_per_px(rbc_um) if est.confident else None), est
    small, f = rgb, 1.0
    expected_d = rbc_um / expected_um_per_px
    if expected_d > 2 * ANALYSIS_DIAMETER_PX:
        f = ANALYSIS_DIAMETER_PX / expected_d
        h, w = rgb.shape[:2]
        size = (max(1, round(w * f)), max(1, round(h * f)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    side = max(MIN_CROP_PX, round(CROP_CELLS * expected_d * f))
    crop = _centre(small, side)
    hint = expected_d * f
    est = est_fn(crop, rbc_um=rbc_um, expected_diameter_px=hint)
    if not getattr(est, "firm", est.confident) and crop.shape != small.shape:
        # once more on a square twice as wide: the centre's few red cells cannot tell, or too few of
        # them to turn the frame away on (device.optics.scale.FIRM_CELLS)
        wider = est_fn(_centre(small, 2 * side), rbc_um=rbc_um, expected_diameter_px=hint)
        if wider.confident or not est.confident:
            est = wider
    um = est.um_per_px(rbc_um) if est.confident else None
    return (um * f if um is not None else None), est


def check_scale(
    rgb: np.ndarray,
    expected_um_per_px: float | None,
    *,
    tolerance: float,
    rbc_um: float,
    what: str = "the calibration",
    estimator: Estimator | None = None,
) -> ScaleCheck:
    """Compare the red cells' µm/px with `expected_um_per_px` (±`tolerance`, relative)."""
    if expected_um_per_px is None:
        return not_run("scale check cannot run: the scale is unknown")
    um, est = estimate_um_per_px(
        rgb, rbc_um=rbc_um, expected_um_per_px=expected_um_per_px, estimator=estimator
    )
    n = int(getattr(est, "n_cells", 0) or 0)
    if um is None:
        why = getattr(est, "reason", None) or "too few red cells"
        c = not_run(f"scale check could not tell ({why})", expected_um_per_px)
        c.n_cells = n
        return c
    ratio = um / expected_um_per_px
    ok = abs(ratio - 1.0) <= tolerance
    if not ok and not getattr(est, "firm", True):
        # usable to rescale by, not firm enough to turn a frame away (device.optics.scale.FIRM_SPREAD)
        c = not_run(
            f"scale check could not tell (red cells say {um:.3g} µm/px, {ratio:.2f}x, but their sizes vary "
            f"too much to refuse the frame on: spread {est.spread:.2f})",
            expected_um_per_px,
        )
        c.n_cells = n
        return c
    if ok:
        msg = f"scale check ok: red cells say {um:.3g} µm/px, {what} {expected_um_per_px:.3g} ({ratio:.2f}x)"
    else:
        msg = (
            f"{MISMATCH} (red cells say {um:.3g} µm/px, {what} {expected_um_per_px:.3g} µm/px: "
            f"{ratio:.2f}x, tolerance ±{tolerance:.0%})"
            if what == "the calibration"
            else f"scale differs from {what}: red cells say {um:.3g} µm/px, {what} {expected_um_per_px:.3g} "
            f"µm/px ({ratio:.2f}x, tolerance ±{tolerance:.0%})"
        )
    return ScaleCheck(True, ok, expected_um_per_px, um, ratio, msg, n)


#: `ScaleVerdicts.state` values: no field checked yet | the calibration holds | "objective changed?" |
#: the last fields disagreed, but fewer in a row than it takes to say so.
PENDING, AGREES, MISMATCHED, DOUBT = "pending", "ok", "mismatch", "doubt"


@dataclass
class ScaleVerdicts:
    """The station's scale state, decided on several fields with hysteresis.

    One field's red cells can mislead the estimator (a clump, a field of spherocytes): on one objective
    it was seen saying 0.118-0.206 µm/px for a 0.155 camera, beyond ±20% on 3 fields in 27. So a field
    whose check disagrees is only not classified (uncertain for that field); the state becomes
    "mismatch" ("objective changed?") after `mismatch_fields` checked fields in a row disagree, and
    returns to "ok" after `ok_fields` in a row agree. A field the estimator cannot judge counts neither
    way. Fed once per field (`observe`), not per frame: frames of one field share its red cells, so
    they are not independent evidence."""

    mismatch_fields: int = _QUALITY.scale_mismatch_fields
    ok_fields: int = _QUALITY.scale_ok_fields
    state: str = PENDING
    disagreeing: int = 0  # checked fields in a row whose red cells disagree
    agreeing: int = 0  # ... and agree

    def reset(self) -> None:
        """Start afresh (another calibration profile: the earlier fields' evidence was about another
        expected scale)."""
        self.state, self.disagreeing, self.agreeing = PENDING, 0, 0

    def observe(self, check: ScaleCheck) -> str:
        if not check.ran:
            return self.state
        if check.ok:
            self.agreeing += 1
            self.disagreeing = 0
            if self.state != MISMATCHED or self.agreeing >= self.ok_fields:
                self.state = AGREES
            return self.state
        self.disagreeing += 1
        self.agreeing = 0
        if self.disagreeing >= self.mismatch_fields:
            self.state = MISMATCHED
        elif self.state != MISMATCHED:
            self.state = DOUBT
        return self.state

    @property
    def confirmed(self) -> bool:
        """True once enough fields in a row disagreed to say the objective changed."""
        return self.state == MISMATCHED

    def field_message(self, check: ScaleCheck, what: str = "the calibration") -> str:
        """What a field whose red cells disagree says while the objective is not judged changed."""
        um, exp = check.estimated_um_per_px, check.expected_um_per_px
        figures = (
            f"its red cells say {um:.3g} µm/px, {what} {exp:.3g} µm/px ({check.ratio:.2f}x)"
            if um is not None and exp is not None and check.ratio is not None
            else "its red cells disagree"
        )
        return (
            f"uncertain for this field: {figures}; move to another field "
            f"({self.disagreeing} of {self.mismatch_fields} fields in a row before 'objective changed?')"
        )
