"""Per-frame quality gate: is the field in focus, properly exposed, and is there a stained smear at all?

Failing frames are shown with the reason but neither classified nor counted. The checks run on a
shrunken grey/HSV copy (`analysis_width` px wide) so they cost well under a millisecond.
Default thresholds: see benchmarks/quality_distribution.py and the daemon figures note.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from device.config import QualityConfig

#: The `[quality]` defaults; device/config.py holds them (and their ranges).
_DEFAULTS = QualityConfig()
#: A pixel at or above this grey level in every channel counts as saturated.
CLIPPED_HIGH_LEVEL = 250
#: A pixel at or below this grey level in every channel counts as black.
CLIPPED_LOW_LEVEL = 5
#: The HSV saturation channel's full scale.
SATURATION_SCALE = 255.0


@dataclass(frozen=True)
class QualityThresholds:
    min_focus: float = _DEFAULTS.min_focus
    max_clipped_high: float = _DEFAULTS.max_clipped_high
    max_clipped_low: float = _DEFAULTS.max_clipped_low
    min_stain: float = _DEFAULTS.min_stain
    min_contrast: float = _DEFAULTS.min_contrast
    analysis_width: int = _DEFAULTS.analysis_width

    @classmethod
    def from_config(cls, q) -> QualityThresholds:
        return cls(
            q.min_focus, q.max_clipped_high, q.max_clipped_low, q.min_stain, q.min_contrast, q.analysis_width
        )


@dataclass
class Quality:
    ok: bool
    focus: float  # variance of the Laplacian
    clipped_high: float  # fraction of pixels saturated in every channel
    clipped_low: float  # fraction of pixels black in every channel
    stain: float  # mean HSV saturation, 0..1
    contrast: float  # grey-level standard deviation
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("focus", "clipped_high", "clipped_low", "stain", "contrast"):
            d[k] = round(float(d[k]), 4)
        return d


def shrink(rgb: np.ndarray, width: int) -> np.ndarray:
    """`rgb` `width` px wide (INTER_AREA). An even integer factor is taken as halvings first: OpenCV's
    2x2 block average is vectorised, its k x k one for larger k is not, and the averages are the same
    to rounding."""
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    while w % (2 * width) == 0 and h % 2 == 0 and w // width > 2:
        rgb = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        h, w = rgb.shape[:2]
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def measure(
    rgb: np.ndarray, analysis_width: int = _DEFAULTS.analysis_width
) -> tuple[float, float, float, float, float]:
    """(focus, clipped_high, clipped_low, stain, contrast) of an RGB uint8 image."""
    small = shrink(rgb, analysis_width)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    n = grey.size
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    focus = float(lap_std[0, 0]) ** 2  # variance of the Laplacian
    clipped_high = cv2.countNonZero(cv2.inRange(small, (CLIPPED_HIGH_LEVEL,) * 3, (255, 255, 255))) / n
    clipped_low = cv2.countNonZero(cv2.inRange(small, (0, 0, 0), (CLIPPED_LOW_LEVEL,) * 3)) / n
    stain = cv2.mean(cv2.cvtColor(small, cv2.COLOR_RGB2HSV))[1] / SATURATION_SCALE
    _, grey_std = cv2.meanStdDev(grey)
    contrast = float(grey_std[0, 0])
    return focus, clipped_high, clipped_low, stain, contrast


def assess(rgb: np.ndarray, t: QualityThresholds | None = None) -> Quality:
    """Measure and judge one frame. `reasons` are short words a technician can act on."""
    t = t or QualityThresholds()
    focus, high, low, stain, contrast = measure(rgb, t.analysis_width)
    reasons = []
    if contrast < t.min_contrast:
        reasons.append("blank field (no contrast)")
    if stain < t.min_stain:
        reasons.append("no stained smear")
    if focus < t.min_focus:
        reasons.append("out of focus")
    if high > t.max_clipped_high:
        reasons.append("over-exposed")
    if low > t.max_clipped_low:
        reasons.append("under-exposed")
    return Quality(not reasons, focus, high, low, stain, contrast, reasons)


def passed() -> Quality:
    """The gate switched off: a frame that is not judged."""
    return Quality(True, 0.0, 0.0, 0.0, 0.0, 0.0, ["quality gate disabled"])
