"""Squares cut around a cell from a record's stored image (the dashboard's thumbnails, the cells export).

The square is centred as the station centres its classifier crop (device/cells/crop.py: top-left =
round(centre - (side - 1) / 2)); the part outside the image is filled by reflecting the image at its
border (OpenCV BORDER_REFLECT_101, what the station does), and the caller is told it happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMB_PX = 96
THUMB_MARGIN = 1.3  # a thumbnail shows the box and a little around it


class ImageUnreadable(ValueError):
    """The stored bytes do not decode as an image."""


@dataclass(frozen=True)
class Square:
    pixels: np.ndarray  # BGR uint8, side x side (OpenCV's order: what imencode writes)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the square in the image (may reach outside)
    reflected: bool  # part of the square lay outside the image and was filled by reflection


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageUnreadable("the stored image does not decode")
    return img


def square(img: np.ndarray, cx: float, cy: float, side: int) -> Square:
    """The `side` x `side` pixel square centred on (cx, cy) of `img`, border reflected."""
    side = max(1, int(side))
    h, w = img.shape[:2]
    x0 = round(cx - (side - 1) / 2.0)
    y0 = round(cy - (side - 1) / 2.0)
    x1, y1 = x0 + side, y0 + side
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = max(0, x1 - w), max(0, y1 - h)
    window = img[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if window.size == 0:  # centre far outside: reflect from the nearest border pixel
        px, py = min(max(round(cx), 0), w - 1), min(max(round(cy), 0), h - 1)
        window = img[py : py + 1, px : px + 1]
        left = top = (side - 1) // 2
        right = bottom = side - 1 - left
    reflected = bool(left or top or right or bottom)
    if reflected:
        border = cv2.BORDER_REFLECT_101 if min(window.shape[:2]) > 1 else cv2.BORDER_REPLICATE
        window = cv2.copyMakeBorder(window, top, bottom, left, right, border)
    return Square(np.ascontiguousarray(window), (x0, y0, x1, y1), reflected)


def thumbnail(img: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
    """A THUMB_PX JPEG of the cell's box (squared, with a margin) for the dashboard."""
    x0, y0, x1, y1 = box
    side = max(1, round(max(x1 - x0, y1 - y0) * THUMB_MARGIN))
    sq = square(img, (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0, side).pixels
    interp = cv2.INTER_AREA if side > THUMB_PX else cv2.INTER_LINEAR
    ok, buf = cv2.imencode(".jpg", cv2.resize(sq, (THUMB_PX, THUMB_PX), interpolation=interp))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ImageUnreadable("the thumbnail did not encode")
    return buf.tobytes()
