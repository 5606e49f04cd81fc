"""A square crop of one cell at a cell classifier's physical scale."""

from __future__ import annotations

import cv2
import numpy as np

from device.cells.detect import Cell


def crop_cell(rgb: np.ndarray, cell: Cell, um_per_px: float, *, side_um: float, size: int) -> np.ndarray:
    """A square of `side_um` µm centred on `cell` in `rgb` (pixels `um_per_px` wide), resampled to
    `size` x `size` RGB uint8 (INTER_AREA when shrinking, INTER_LINEAR when enlarging). The part outside
    the frame is filled by reflecting the image at its border (cv2.BORDER_REFLECT_101), so a cell at
    the edge still gets its context rather than a black band a classifier never saw."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("crop_cell needs an RGB uint8 image of shape (H, W, 3)")
    if not (um_per_px > 0 and side_um > 0 and size >= 1):
        raise ValueError("crop_cell needs um_per_px > 0, side_um > 0 and size >= 1")
    h, w = rgb.shape[:2]
    n = max(1, round(side_um / um_per_px))  # the crop's side in frame pixels
    # top-left pixel so the square's centre lands on the cell's centre (pixel-index coordinates)
    x0 = round(cell.x - (n - 1) / 2.0)
    y0 = round(cell.y - (n - 1) / 2.0)
    x1, y1 = x0 + n, y0 + n
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = max(0, x1 - w), max(0, y1 - h)
    window = rgb[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if window.size == 0:  # the centre lies far outside the frame: reflect from the nearest border pixel
        cx, cy = min(max(round(cell.x), 0), w - 1), min(max(round(cell.y), 0), h - 1)
        window = rgb[cy : cy + 1, cx : cx + 1]
        left = top = (n - 1) // 2
        right = bottom = n - 1 - left
    if left or top or right or bottom:
        border = cv2.BORDER_REFLECT_101 if min(window.shape[:2]) > 1 else cv2.BORDER_REPLICATE
        window = cv2.copyMakeBorder(window, top, bottom, left, right, border)
    if window.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if n > size else cv2.INTER_LINEAR
        window = cv2.resize(window, (size, size), interpolation=interp)
    return np.ascontiguousarray(window, dtype=np.uint8)


def to_pitch(rgb: np.ndarray, um_per_px: float, pitch_um: float) -> np.ndarray:
    """`rgb` resampled to `pitch_um` per pixel when it is finer (INTER_AREA); unchanged when it is not."""
    if um_per_px >= pitch_um:
        return rgb
    f = um_per_px / pitch_um
    h, w = rgb.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if (w, h) == (size, size):
        return rgb
    interp = cv2.INTER_AREA if w > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def model_input(
    rgb: np.ndarray,
    cell: Cell,
    um_per_px: float,
    *,
    size: int,
    input_um_per_px: float,
    pitch_um: float | None,
) -> np.ndarray:
    """THE input of a cell classifier for `cell` of a white-referenced frame `rgb` (pixels `um_per_px`
    wide): the square of `size * input_um_per_px` µm around the cell at the frame's own resolution
    (border reflected), through `pitch_um` µm/px when the frame is finer (the training detail), then
    `size` x `size`. Training builds its crops with this function, so station and model agree."""
    side_um = size * input_um_per_px
    n = max(1, round(side_um / um_per_px))
    square = crop_cell(rgb, cell, um_per_px, side_um=side_um, size=n)
    if pitch_um is not None:
        square = to_pitch(square, um_per_px, pitch_um)
    return resize_square(square, size)
