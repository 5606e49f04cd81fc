"""Thumbnails of counted cells, cut on demand from the stored frame by each cell's box (with a margin)
and cached beside the history's thumbnails, so the store holds no extra image files and a frame is
decoded once for all its cells. Used by the sample page's gallery and the slide report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from device.fsutil import atomic_write_bytes

CELL_THUMB_PX = 112
#: context kept around a cell's box, as a fraction of the box's longer side on each side
MARGIN = 0.3

Box = tuple[int, int, int, int]


def crop_box(box: Box, width: int, height: int, margin: float = MARGIN) -> Box:
    """The square around `box` (x0, y0, x1, y1) with the margin, inside a width x height frame (a cell
    at the edge gets a smaller, still centred-as-possible square)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = side / 2
    left = int(max(0, round(cx - half)))
    top = int(max(0, round(cy - half)))
    right = int(min(width, round(cx + half)))
    bottom = int(min(height, round(cy + half)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def _cache_path(cache_dir: Path, sha: str, box: Box, size: int) -> Path:
    return cache_dir / "cells" / sha[:2] / f"{sha}-{'-'.join(str(v) for v in box)}-{size}.jpg"


def cell_thumbnail(
    image_path: Path,
    cache_dir: Path,
    sha: str,
    box: Box,
    *,
    siblings: Mapping[int, Box] | None = None,
    size: int = CELL_THUMB_PX,
) -> Path | None:
    """The cached JPEG of the cell at `box` in the stored frame `image_path` (named `sha`), made on first
    use together with its `siblings` (the other cells of the frame); None when the frame is gone
    (removed by retention after syncing) or unreadable."""
    out = _cache_path(cache_dir, sha, box, size)
    if not image_path.is_file():  # removed by retention (after syncing): its cells' thumbnails go too
        for old in out.parent.glob(f"{sha}-*.jpg"):
            old.unlink(missing_ok=True)
        return None
    if out.is_file():
        return out
    frame = cv2.imdecode(np.fromfile(str(image_path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        return None
    boxes = [box, *[b for b in (siblings or {}).values() if tuple(b) != tuple(box)]]
    for b in boxes:
        path = _cache_path(cache_dir, sha, tuple(b), size)  # type: ignore[arg-type]
        if path.is_file():
            continue
        jpeg = encode_crop(frame, tuple(b), size)  # type: ignore[arg-type]
        if jpeg is not None:
            atomic_write_bytes(path, jpeg)
    return out if out.is_file() else None


def encode_crop(frame_bgr: np.ndarray, box: Box, size: int = CELL_THUMB_PX) -> bytes | None:
    """JPEG bytes of the cell's square (see `crop_box`) scaled to `size` px on its longer side."""
    h, w = frame_bgr.shape[:2]
    x0, y0, x1, y1 = crop_box(box, w, h)
    crop = frame_bgr[y0:y1, x0:x1]
    if crop.size == 0:
        return None
    scale = size / max(crop.shape[:2])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.resize(
        crop,
        (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
        interpolation=interp,
    )
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else None
