"""Small cached thumbnails of stored images, so the history page never ships full JPEGs."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from device.fsutil import atomic_write_bytes

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
THUMB_PX = 160


def thumbnail(image_path: Path, cache_dir: Path, sha: str, size: int = THUMB_PX) -> Path | None:
    """Path of a <= size px JPEG thumbnail of `image_path`, made once and kept in `cache_dir`."""
    if not SHA_RE.match(sha):
        return None
    out = cache_dir / sha[:2] / f"{sha}-{size}.jpg"
    if not image_path.is_file():  # removed by retention (after syncing): its thumbnail goes too
        out.unlink(missing_ok=True)
        return None
    if out.is_file():
        return out
    img = cv2.imdecode(np.fromfile(str(image_path), dtype=np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    if img is None:
        return None
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        img = cv2.resize(
            img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75])
    if not ok:
        return None
    atomic_write_bytes(out, buf.tobytes())
    return out
