"""The smear's bright plasma background as a white reference.

A thin blood smear is mostly background between the cells; under a microscope it is the lamp's light
through glass and plasma, i.e. white. Its colour in a frame is the camera's white balance and exposure,
not the stain. Dividing every channel by it (a von Kries / white-patch correction) removes the camera,
so what the models and the colour check see is the stain that remains.

The background is estimated robustly: the brightest pixels that are not clipped, on a small copy of the
image. A frame with no visible background (a dense field, a blank black image) yields `None` and is left
unchanged rather than "corrected" towards a cell's colour.
"""

from __future__ import annotations

import cv2
import numpy as np

#: The neutral grey level the background is mapped to (OpenFlexure calibrates a background to ~230).
WHITE_LEVEL = 235.0
#: Size of the copy the background is estimated on (longest side, px).
_ANALYSIS_SIDE = 256
#: Fraction of the brightest pixels taken as background candidates.
_TOP_FRACTION = 0.12
#: A background darker than this (max channel, 0-255) is not a lit background: no correction.
_MIN_BACKGROUND = 60.0
#: Gains are clamped to this range: beyond it the frame is not a white-balance error but something else.
_GAIN_RANGE = (0.5, 3.0)


def _small(rgb: np.ndarray) -> np.ndarray:
    """A strided sample of the image (a view: statistics need pixels, not a smooth resize)."""
    step = max(1, max(rgb.shape[:2]) // _ANALYSIS_SIDE)
    return rgb[::step, ::step]


def estimate_background(rgb: np.ndarray) -> np.ndarray | None:
    """The RGB colour (float, 0-255) of the smear's background, or None when none is visible.

    Candidates are the brightest `_TOP_FRACTION` of pixels by their channel sum. Candidates with a
    channel at 255 carry no colour information and are dropped, unless they are most of the candidates:
    then the background itself is clipped in that channel (a warm white balance clips red) and 255 is
    the best estimate there (dropping them would take a cell's colour for the background). The
    per-channel median of the candidates is the estimate.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got {rgb.shape}")
    small = _small(rgb).reshape(-1, 3)
    if small.size == 0:
        return None
    total = small.astype(np.int32).sum(axis=1)
    k = max(1, int(len(small) * _TOP_FRACTION))
    top = small[np.argpartition(total, len(small) - k)[len(small) - k :]]
    unclipped = top.max(axis=1) < 255
    pool = top[unclipped] if unclipped.mean() >= 0.5 else top
    bg = np.median(pool.astype(np.float32), axis=0)
    if float(bg.max()) < _MIN_BACKGROUND or float(bg.min()) < 1.0:
        return None
    return bg


def white_gains(rgb: np.ndarray, target: float = WHITE_LEVEL) -> np.ndarray | None:
    """Per-channel gains that map the background to a neutral `target`, or None (no background)."""
    bg = estimate_background(rgb)
    if bg is None:
        return None
    return np.clip(target / bg, *_GAIN_RANGE).astype(np.float32)


def apply_gains(rgb: np.ndarray, gains: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """Multiply each channel by its gain (saturating at 255), through one lookup table per channel."""
    gains = np.asarray(gains, dtype=np.float32).reshape(3)
    levels = np.arange(256, dtype=np.float32)[:, None] * gains[None, :]
    lut = np.clip(np.rint(levels), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(np.ascontiguousarray(rgb, dtype=np.uint8), lut)


def normalise_background(rgb: np.ndarray, target: float = WHITE_LEVEL) -> np.ndarray:
    """The image with its background mapped to neutral `target`; unchanged when no background is seen."""
    gains = white_gains(rgb, target)
    if gains is None:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return apply_gains(rgb, gains)
