"""Classify a field once: wait while the stage moves, classify when the field has settled, and keep
(re-publish) the result while the field does not change.

Per frame, on a 64x48 grey thumbnail (`thumbnail`, ~1 ms on a 1920x1080 frame):
- motion = mean |thumbnail - previous frame's| (0..255); below `threshold` the frame is "still";
- "same": the frame differs from the last classified field's thumbnail by at most 2 x `threshold`
  (sensor noise, a vibration): the field's result stands;
- "moving": fewer than `settle_frames` still frames in a row (0: classify at once);
- "settled": a new field, still long enough: classify it.
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


SAME = "same"
MOVING = "moving"
SETTLED = "settled"


class SettleTracker:
    def __init__(self, settle_frames: int, threshold: float):
        self.settle_frames = settle_frames
        self.threshold = threshold
        self._prev: np.ndarray | None = None
        self._field: np.ndarray | None = None
        self.still = 0  # still frames in a row
        self.motion = 0.0

    def observe(self, thumb: np.ndarray) -> str:
        self.motion = float(np.mean(np.abs(thumb - self._prev))) if self._prev is not None else 1e9
        self._prev = thumb
        self.still = self.still + 1 if self.motion <= self.threshold else 0
        if self._field is not None and self.same_field(thumb, self._field):
            return SAME
        if self.still < self.settle_frames:
            return MOVING
        return SETTLED

    @property
    def about_to_settle(self) -> bool:
        """The next frame settles the field if it is still too (only with `settle_frames` >= 2: this
        frame is itself still, so it already shows the field the next one will)."""
        return self.settle_frames >= 2 and self.still == self.settle_frames - 1

    def same_field(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Two thumbnails of one field (as "same": within 2 x `threshold`)."""
        return float(np.mean(np.abs(a - b))) <= 2 * self.threshold

    def mark(self, thumb: np.ndarray) -> None:
        """This frame's field is being classified (or refused): later unchanged frames are "same"."""
        self._field = thumb

    def forget(self) -> None:
        self._field = None
