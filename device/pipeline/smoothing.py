"""Temporal smoothing of one field of view, so the live label does not flicker.

Probabilities are averaged with an exponential moving average while the camera looks at the same
field; a large frame difference (the slide was moved) starts a new field and resets the average.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB = (64, 48)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A tiny grey copy for frame differencing (float32).

    Shrunk first (a frame is ~2 Mpx), by area averaging, in two steps on a large frame: OpenCV's
    exact-halving INTER_AREA is a fast path, and on 1920x1080 the two steps cost half of one fractional
    INTER_AREA (9 -> ~4.5 ms), within one grey level of it."""
    h, w = rgb.shape[:2]
    if w >= 8 * THUMB[0] and h >= 8 * THUMB[1]:
        rgb = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    small = cv2.resize(rgb, THUMB, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


class FieldSmoother:
    def __init__(self, alpha: float = 0.5, change_threshold: float = 18.0):
        self.alpha = alpha
        self.change_threshold = change_threshold
        self._thumb: np.ndarray | None = None
        self._ema: np.ndarray | None = None
        self.field = 0  # increments on every field change
        self.frames_in_field = 0

    def update(self, thumb: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, bool]:
        """Fold one frame in. Returns (smoothed probabilities, whether a new field started)."""
        changed = (
            self._thumb is None
            or self._ema is None
            or self._ema.shape != probs.shape
            or float(np.mean(np.abs(thumb - self._thumb))) > self.change_threshold
        )
        self._thumb = thumb
        if changed:
            self._ema = probs.astype(np.float32).copy()
            self.field += 1
            self.frames_in_field = 1
        else:
            self._ema = self.alpha * probs + (1 - self.alpha) * self._ema
            self.frames_in_field += 1
        return self._ema / self._ema.sum(), changed

    def reset(self) -> None:
        self._thumb = None
        self._ema = None
