"""Checks on an uploaded image before anything is decoded or stored.

Order matters: name → size → type (magic bytes) → pixel count from the header (a 50-megapixel
decompression bomb is refused before a single pixel is decoded) → completeness → bounded decode.
Each failure is an `UploadRejected` with the HTTP status and a message for the technician.

Decoding is bounded in pixels: an image over `max_decode_pixels` is decoded reduced when it is a JPEG
(libjpeg scales by 1/2, 1/4 or 1/8 while decoding, so the full-size pixels never exist) and refused
otherwise; `[web] decode_slots` bounds how many decode at once (device/web/classify.py). Together they
give the daemon's peak memory a ceiling (docs/web.md).
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass

import cv2
import numpy as np

from device.errors import ImageError
from device.preprocess import MAX_PIXELS, to_rgb8

#: Default decode cap (`[web] max_decode_megapixels`).
MAX_DECODE_PIXELS = 16_000_000
#: Unicode categories never allowed in a file name: controls, format characters (bidi overrides such
#: as U+202E, zero-width joiners), private use, surrogates, line/paragraph separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})

ACCEPTED = "JPEG, PNG, BMP or TIFF"
#: (magic prefix, format name) for what we accept.
_KINDS = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
#: Formats we recognise but do not accept (so the message can name them).
_OTHER = (
    (b"GIF8", "GIF"),
    (b"RIFF", "WebP/RIFF"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
)


#: What went wrong, as the fixed kinds the page words for the technician (device/web/advice.py
#: `upload_refusal`); the message keeps the engineer's details.
NAME, TOO_BIG, EMPTY, TYPE, NOT_IMAGE, DAMAGED, PIXELS = (
    "name",
    "too_big",
    "empty",
    "type",
    "not_image",
    "damaged",
    "pixels",
)


class UploadRejected(Exception):
    """An upload refused with its HTTP status, the engineer's message (English, with figures) and the
    kind of problem (`NAME`…`PIXELS`, or the kinds device/web/classify.py adds)."""

    def __init__(self, status: int, message: str, kind: str = "other"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


@dataclass
class CheckedImage:
    filename: str
    kind: str
    width: int
    height: int
    rgb: np.ndarray | None


def check_filename(name: str | None) -> str:
    """A plain file name (NFC): no directories, no drive letter, no control or bidi/format characters
    (a right-to-left override makes "gpj.exe" look like "exe.jpg"), not hidden."""
    if not name:
        raise UploadRejected(400, "the upload has no file name", NAME)
    name = unicodedata.normalize("NFC", name)
    if any(unicodedata.category(c) in _BAD_CATEGORIES for c in name):
        shown = name.encode("ascii", "backslashreplace").decode()
        raise UploadRejected(
            400, f"{shown!r}: a file name must not contain control or text-direction characters", NAME
        )
    bad = (
        "/" in name
        or "\\" in name
        or ".." in name
        or name.startswith(".")
        or (len(name) > 1 and name[1] == ":")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    )
    if bad:
        raise UploadRejected(400, f"{name!r}: a file name must not contain a path (/, \\, .., C:)", NAME)
    if len(name) > 200:
        raise UploadRejected(400, "file name longer than 200 characters", NAME)
    return name


def sniff(data: bytes) -> str:
    for magic, kind in _KINDS:
        if data.startswith(magic):
            return kind
    for magic, kind in _OTHER:
        if data.startswith(magic):
            raise UploadRejected(415, f"{kind} files are not supported: export {ACCEPTED}", TYPE)
    raise UploadRejected(415, f"not an image (or an unsupported type): expected {ACCEPTED}", NOT_IMAGE)


def _truncated(kind: str) -> UploadRejected:
    return UploadRejected(422, f"the {kind} file is truncated or corrupt (its header is incomplete)", DAMAGED)


def jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise _truncated("JPEG")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise _truncated("JPEG")


def png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise _truncated("PNG")
    return struct.unpack(">II", data[16:24])


def bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise _truncated("BMP")
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        w, h = struct.unpack("<HH", data[18:22])
    else:
        w, h = struct.unpack("<ii", data[18:26])
    return abs(w), abs(h)


def _tiff_tags(data: bytes) -> dict[int, list[int]]:
    """Integer tags of the first IFD (the image OpenCV decodes)."""
    end = "<" if data[:2] == b"II" else ">"
    sizes = {3: "H", 4: "I"}
    (ifd,) = struct.unpack(end + "I", data[4:8])
    (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    tags: dict[int, list[int]] = {}
    for k in range(count):
        off = ifd + 2 + 12 * k
        tag, typ, n = struct.unpack(end + "HHI", data[off : off + 8])
        if typ not in sizes or tag not in (256, 257, 273, 279):
            continue
        fmt = end + sizes[typ] * n
        width = struct.calcsize(fmt)
        where = off + 8 if width <= 4 else struct.unpack(end + "I", data[off + 8 : off + 12])[0]
        if n > 100_000:
            raise struct.error("implausible strip count")
        tags[tag] = list(struct.unpack(fmt, data[where : where + width]))
    return tags


def tiff_size(data: bytes) -> tuple[int, int]:
    try:
        tags = _tiff_tags(data)
    except struct.error as exc:
        raise _truncated("TIFF") from exc
    if 256 not in tags or 257 not in tags:
        raise _truncated("TIFF")
    return tags[256][0], tags[257][0]


_SIZERS = {"JPEG": jpeg_size, "PNG": png_size, "BMP": bmp_size, "TIFF": tiff_size}


def check_complete(kind: str, data: bytes) -> None:
    """Refuse files cut short, before decoding (a cut JPEG is found when decoded: `jpeg_filled`)."""
    if kind == "PNG":
        if b"IEND" not in data[-32:]:
            raise UploadRejected(422, "the PNG file is truncated (no IEND chunk)", DAMAGED)
    elif kind == "BMP":
        (declared,) = struct.unpack("<I", data[2:6])
        (offset,) = struct.unpack("<I", data[10:14])
        if declared > len(data) or offset >= len(data):
            raise UploadRejected(422, "the BMP file is truncated (shorter than its header says)", DAMAGED)
    elif kind == "TIFF":
        tags = _tiff_tags(data)
        strips = zip(tags.get(273, []), tags.get(279, []), strict=False)
        if any(off + n > len(data) for off, n in strips):
            raise UploadRejected(422, "the TIFF file is truncated (image data missing)", DAMAGED)


def jpeg_filled(bgr: np.ndarray) -> bool:
    """True when the last MCU (bottom-right 16x16 pixels; 2x2 at 1/8 scale) is libjpeg's fill for
    missing data: exactly mid-grey (128, 128, 128) in every channel. libjpeg decodes a JPEG whose
    data ends early (with or without an end marker appended) by zero-filling the missing blocks, and
    the decode "succeeds"; a photographed field is never exactly flat mid-grey there."""
    tail = bgr[-2:, -2:] if bgr.ndim == 3 else bgr[-2:, -2:, None]
    return bool(np.all(tail == 128))


def _reduced_flag(factor: int) -> int:
    return {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[
        factor
    ]


def decode_bounded(
    data: bytes,
    kind: str,
    width: int,
    height: int,
    *,
    max_pixels: int = MAX_DECODE_PIXELS,
    name: str = "image",
) -> np.ndarray:
    """RGB uint8 pixels of a checked upload, never more than `max_pixels` of them: a larger JPEG is
    decoded at 1/2, 1/4 or 1/8 scale, any other larger image is refused (413). A JPEG whose data ends
    early, and a float image with NaN/inf values, are refused (422)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    factor = 1
    if width * height > max_pixels:
        factor = next((f for f in (2, 4, 8) if (width // f) * (height // f) <= max_pixels), 0)
        if kind != "JPEG" or not factor:
            raise UploadRejected(
                413,
                f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
                f"{max_pixels / 1e6:.0f} MP this station decodes ({kind} cannot be decoded reduced): "
                "export it smaller",
                PIXELS,
            )
    img = cv2.imdecode(buf, _reduced_flag(factor) if factor > 1 else cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UploadRejected(
            422, f"{name}: not a readable image (corrupt, truncated or unsupported format)", DAMAGED
        )
    if kind == "JPEG":
        check = img if factor == 8 else cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_8)
        if check is None or jpeg_filled(check):
            raise UploadRejected(
                422, f"{name}: the JPEG file is truncated (its image data ends early)", DAMAGED
            )
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        raise UploadRejected(422, f"{name}: the image holds NaN or infinite values (not a picture)", DAMAGED)
    try:
        return to_rgb8(img, name=name)
    except ImageError as exc:
        raise UploadRejected(422, str(exc), DAMAGED) from exc


def check_upload(
    filename: str | None,
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int = MAX_PIXELS,
    max_decode_pixels: int = MAX_DECODE_PIXELS,
    size: int | None = None,
    decode: bool = True,
) -> CheckedImage:
    """Check an upload; `size` is the file's real size when `data` was read only up to the limit."""
    name = check_filename(filename)
    real = max(size or 0, len(data))
    if real > max_bytes:
        raise UploadRejected(
            413,
            f"{name}: {real / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB per-file upload limit",
            TOO_BIG,
        )
    if not data:
        raise UploadRejected(400, f"{name}: the file is empty", EMPTY)
    kind = sniff(data)
    w, h = _SIZERS[kind](data)
    if w <= 0 or h <= 0:
        raise UploadRejected(422, f"{name}: the {kind} header gives an empty image ({w}x{h})", DAMAGED)
    if w * h > max_pixels:
        raise UploadRejected(
            413,
            f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the {max_pixels / 1e6:.0f} MP limit",
            PIXELS,
        )
    if kind != "JPEG" and w * h > max_decode_pixels:
        decode_bounded(data, kind, w, h, max_pixels=max_decode_pixels, name=name)  # raises 413
    check_complete(kind, data)
    rgb = decode_bounded(data, kind, w, h, max_pixels=max_decode_pixels, name=name) if decode else None
    return CheckedImage(name, kind, w, h, rgb)
