"""Render a smear image at another physical scale: what a camera at another magnification would see.

Shared by the scale benchmark, the tests and the virtual microscope. Enlarging a 224-px image 2x shows
the same few cells bigger; a camera with more pixels would see *more* cells as well, so enlargements are
made from a mirrored mosaic of the image (mirroring keeps the seams continuous: no cut cells).
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def mirror_mosaic(rgb: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Tile `rgb` nx by ny times, every other copy mirrored so the seams match."""
    rows = []
    for j in range(ny):
        row = []
        for i in range(nx):
            tile = rgb
            if i % 2:
                tile = tile[:, ::-1]
            if j % 2:
                tile = tile[::-1]
            row.append(tile)
        rows.append(np.hstack(row))
    return np.ascontiguousarray(np.vstack(rows))


def rescale(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Resize by `factor` (INTER_AREA when shrinking, as a sensor integrates; linear when enlarging)."""
    if abs(factor - 1.0) < 1e-9:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp)


def render_at_scale(rgb: np.ndarray, magnification: float, *, mosaic: int | None = None) -> np.ndarray:
    """`rgb` as seen at `magnification` times its own scale (pixels per µm).

    Below 1 the image is shrunk. Above 1 it is first tiled into a `mosaic` x `mosaic` mirrored mosaic
    (default: ceil(magnification), so the result shows at least as many cells as the original), then
    enlarged. `mosaic=1` enlarges the image alone.
    """
    if magnification <= 0:
        raise ValueError("magnification must be > 0")
    n = mosaic if mosaic is not None else (math.ceil(magnification) if magnification > 1 else 1)
    src = mirror_mosaic(rgb, n, n) if n > 1 else rgb
    return rescale(src, magnification)


def tint(rgb: np.ndarray, r_gain: float = 1.0, b_gain: float = 1.0, g_gain: float = 1.0) -> np.ndarray:
    """A white-balance change: each channel multiplied by its gain (saturating at 255)."""
    gains = np.array([r_gain, g_gain, b_gain], dtype=np.float32)
    return np.clip(rgb.astype(np.float32) * gains, 0, 255).astype(np.uint8)
