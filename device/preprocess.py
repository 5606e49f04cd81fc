"""The one preprocessing function shared by training, conversion and the device.

A model takes raw RGB uint8 pixels at its declared size; all scaling happens inside the model.
So the only preprocessing is: decode -> RGB -> (centre-crop to the model's aspect) -> resize.
Training (training/data.py), conversion (convert/) and the device all call `prepare` / `load_image`,
which is what keeps them from drifting apart.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.errors import ImageError

RESIZE_MODES = ("center_crop", "stretch")
#: How a model's input colour is referenced: None = raw camera colour (bundles made before the white
#: reference existed keep getting exactly what they were trained on); "background" = the smear's bright
#: background is mapped to neutral white first (device.colour.normalise_background).
WHITE_REFERENCES = (None, "background")

#: Refuse images whose pixel count would blow memory up (decompression bombs).
MAX_PIXELS = 50_000_000


def decode_image(data: bytes, *, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, TIFF, ...) to an RGB uint8 array (H, W, 3)."""
    if not data:
        raise ImageError(f"{name}: empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    return to_rgb8(img, name=name)


def to_rgb8(img: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Normalise a decoded OpenCV array (gray, BGR, BGRA, 16-bit) to contiguous RGB uint8."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise ImageError(f"{name}: unsupported image layout {img.shape}")
    if img.shape[0] < 8 or img.shape[1] < 8:
        raise ImageError(f"{name}: image too small ({img.shape[1]}x{img.shape[0]} px)")
    return np.ascontiguousarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file to RGB uint8. Raises ImageError with the file name on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return decode_image(data, name=str(path))


def check_white_reference(white_reference: str | None) -> None:
    if white_reference not in WHITE_REFERENCES:
        raise ValueError(f"unknown white reference {white_reference!r}; expected one of {WHITE_REFERENCES}")


def apply_white_reference(rgb: np.ndarray, white_reference: str | None) -> np.ndarray:
    """The colour step of `prepare` alone (for callers that tile a frame after it)."""
    check_white_reference(white_reference)
    if white_reference == "background":
        from device.colour import normalise_background

        return normalise_background(rgb)
    return rgb


def prepare(
    rgb: np.ndarray,
    size: tuple[int, int],
    resize: str = "center_crop",
    *,
    white_reference: str | None = None,
) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> RGB uint8 (height, width, 3) as the model expects.

    `size` is (width, height). `white_reference="background"` first maps the smear's background to
    neutral white over the whole image (see WHITE_REFERENCES). `center_crop` crops the largest centred
    region with the model's aspect ratio (camera frames are 4:3 or 16:9; the models are square),
    `stretch` does not.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r}; expected one of {RESIZE_MODES}")
    rgb = apply_white_reference(rgb, white_reference)
    width, height = size
    h, w = rgb.shape[:2]
    if resize == "center_crop":
        target = width / height
        if w / h > target:
            new_w = max(1, round(h * target))
            x0 = (w - new_w) // 2
            rgb = rgb[:, x0 : x0 + new_w]
        elif w / h < target:
            new_h = max(1, round(w / target))
            y0 = (h - new_h) // 2
            rgb = rgb[y0 : y0 + new_h]
    h, w = rgb.shape[:2]
    if (w, h) != (width, height):
        interp = cv2.INTER_AREA if w > width or h > height else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (width, height), interpolation=interp)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def load_for_model(
    path: str | Path,
    size: tuple[int, int],
    resize: str = "center_crop",
    *,
    white_reference: str | None = None,
) -> np.ndarray:
    """Read a file and prepare it for a model: the exact array training and the device feed."""
    return prepare(read_image(path), size, resize, white_reference=white_reference)
