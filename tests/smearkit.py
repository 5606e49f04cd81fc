"""Synthetic blood smears with red cells of a known diameter (for the scale estimator's tests)."""

from __future__ import annotations

import cv2
import numpy as np

BACKGROUND = (244, 238, 240)
RBC = (214, 150, 166)  # eosin-pink red cell
RBC_CENTRE = (232, 196, 206)  # its paler centre
WBC_CYTOPLASM = (170, 150, 215)
WBC_NUCLEUS = (105, 55, 150)  # dark purple


def synthetic_smear(
    diameter: float,
    *,
    cells: int = 60,
    wbcs: int = 3,
    overlap: bool = True,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    cv: float = 0.05,
) -> np.ndarray:
    """An RGB smear: `cells` red cells of mean `diameter` px (relative sd `cv`) with pale centres,
    placed at random (touching and overlapping when `overlap`), plus `wbcs` nucleated cells twice as
    big, slightly blurred, with sensor noise."""
    rng = np.random.default_rng(seed)
    if size is None:
        side = int(diameter * np.sqrt(cells / 0.35) + 2 * diameter)
        size = (side, side)
    w, h = size
    img = np.zeros((h, w, 3), np.float32)
    img[:] = BACKGROUND
    r_mean = diameter / 2
    placed: list[tuple[float, float, float]] = []
    tries = 0
    while len(placed) < cells and tries < cells * 200:
        tries += 1
        r = r_mean * (1 + cv * rng.standard_normal())
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if not overlap and any((x - a) ** 2 + (y - b) ** 2 < (r + c + 1) ** 2 for a, b, c in placed):
            continue
        placed.append((x, y, r))
    shift = 4  # sub-pixel drawing
    for x, y, r in placed:
        c = (int(x * (1 << shift)), int(y * (1 << shift)))
        cv2.circle(img, c, int(r * (1 << shift)), RBC, -1, cv2.LINE_AA, shift)
        cv2.circle(img, c, int(0.4 * r * (1 << shift)), RBC_CENTRE, -1, cv2.LINE_AA, shift)
    for _ in range(wbcs):
        x, y = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        c = (int(x * (1 << shift)), int(y * (1 << shift)))
        cv2.circle(img, c, int(1.1 * diameter * (1 << shift)), WBC_CYTOPLASM, -1, cv2.LINE_AA, shift)
        cv2.circle(img, c, int(0.85 * diameter * (1 << shift)), WBC_NUCLEUS, -1, cv2.LINE_AA, shift)
    img = cv2.GaussianBlur(img, (0, 0), float(np.clip(diameter / 40, 0.6, 1.5)))
    img += rng.standard_normal(img.shape, dtype=np.float32) * 2.0
    return np.clip(img, 0, 255).astype(np.uint8)
