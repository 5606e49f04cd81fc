"""Frame → `PreparedFrame`: its scale (profile | given | auto from the red cells), the red-cell check of
a profile's or a given scale, and its white reference (measured here, applied to each cell's crop
window: the same pixels as a white-referenced frame's, without the cost of the whole frame).

A frame with no scale given (`scale` None: no calibration profile, an upload "at the models' scale") has
its scale measured from its red cells: a cell classifier's crop is a fixed physical size, so a frame
of unknown magnification is never screened. The field path's functions do the work
(`device.optics.analyse.auto_scale`, `red_cell_check`).
"""

from __future__ import annotations

import time

import numpy as np

from device.colour import measure_white
from device.optics.analyse import AUTO, ScaleArg, auto_scale, red_cell_check, scale_what
from device.optics.scalecheck import Estimator, ScaleCheck
from device.screening.stages import PreparedFrame, ScreenSettings


def prepare_frame(
    rgb: np.ndarray,
    scale: ScaleArg,
    settings: ScreenSettings,
    *,
    source: str = "given",
    estimator: Estimator | None = None,
    check: ScaleCheck | None = None,
) -> PreparedFrame:
    """`scale`: the frame's µm/px, "auto" or None (= auto). `source` names a numeric scale's origin
    ("given" or "profile:<name>"). `check`: the red-cell check already made on this field at this
    scale (the pipeline's check ahead), used instead of measuring again."""
    t0 = time.perf_counter()
    acq = settings.acquisition
    refused = None
    if scale is None or scale == AUTO:
        src = AUTO
        um, scale_check, refused = auto_scale(rgb, acq, estimator)
    else:
        um, src = float(scale), source
        if check is not None and check.expected_um_per_px == um:
            scale_check = check
        else:
            scale_check = red_cell_check(rgb, um, scale_what(source), acq, estimator)
        if scale_check.ran and not scale_check.ok:
            refused = scale_check.message
    white = measure_white(rgb) if refused is None else None
    ms = (time.perf_counter() - t0) * 1000
    return PreparedFrame(rgb, um, src, scale_check, refused, white, ms)
