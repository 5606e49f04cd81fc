"""Checks on an uploaded image before anything is decoded or stored.

Order matters: name → size → type (magic bytes) → pixel count from the header (a 50-megapixel
decompression bomb is refused before a single pixel is decoded) → completeness → decode.
Each failure is an `UploadRejected` with the HTTP status and a message for the technician.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from device.errors import ImageError
from device.preprocess import MAX_PIXELS, decode_image

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


class UploadRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class CheckedImage:
    filename: str
    kind: str
    width: int
    height: int
    rgb: np.ndarray | None


def check_filename(name: str | None) -> str:
    """A plain file name: no directories, no drive letter, no control characters, not hidden."""
    if not name:
        raise UploadRejected(400, "the upload has no file name")
    bad = (
        "/" in name
        or "\\" in name
        or ".." in name
        or name.startswith(".")
        or (len(name) > 1 and name[1] == ":")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    )
    if bad:
        raise UploadRejected(400, f"{name!r}: a file name must not contain a path (/, \\, .., C:)")
    if len(name) > 200:
        raise UploadRejected(400, "file name longer than 200 characters")
    return name


def sniff(data: bytes) -> str:
    for magic, kind in _KINDS:
        if data.startswith(magic):
            return kind
    for magic, kind in _OTHER:
        if data.startswith(magic):
            raise UploadRejected(415, f"{kind} files are not supported: export {ACCEPTED}")
    raise UploadRejected(415, f"not an image (or an unsupported type): expected {ACCEPTED}")


def _truncated(kind: str) -> UploadRejected:
    return UploadRejected(422, f"the {kind} file is truncated or corrupt (its header is incomplete)")


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
    """Refuse files cut short: OpenCV would decode a cut JPEG as grey padding, silently."""
    if kind == "JPEG":
        if b"\xff\xd9" not in data.rstrip(b"\x00")[-64:]:
            raise UploadRejected(422, "the JPEG file is truncated (no end-of-image marker)")
    elif kind == "PNG":
        if b"IEND" not in data[-32:]:
            raise UploadRejected(422, "the PNG file is truncated (no IEND chunk)")
    elif kind == "BMP":
        (declared,) = struct.unpack("<I", data[2:6])
        (offset,) = struct.unpack("<I", data[10:14])
        if declared > len(data) or offset >= len(data):
            raise UploadRejected(422, "the BMP file is truncated (shorter than its header says)")
    elif kind == "TIFF":
        tags = _tiff_tags(data)
        strips = zip(tags.get(273, []), tags.get(279, []), strict=False)
        if any(off + n > len(data) for off, n in strips):
            raise UploadRejected(422, "the TIFF file is truncated (image data missing)")


def check_upload(
    filename: str | None, data: bytes, *, max_bytes: int, max_pixels: int = MAX_PIXELS
) -> CheckedImage:
    name = check_filename(filename)
    if len(data) > max_bytes:
        raise UploadRejected(
            413, f"{name}: {len(data) / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB upload limit"
        )
    if not data:
        raise UploadRejected(400, f"{name}: the file is empty")
    kind = sniff(data)
    w, h = _SIZERS[kind](data)
    if w <= 0 or h <= 0:
        raise UploadRejected(422, f"{name}: the {kind} header gives an empty image ({w}x{h})")
    if w * h > max_pixels:
        raise UploadRejected(
            413, f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the {max_pixels / 1e6:.0f} MP limit"
        )
    check_complete(kind, data)
    try:
        rgb = decode_image(data, name=name)
    except ImageError as exc:
        raise UploadRejected(422, str(exc)) from exc
    return CheckedImage(name, kind, w, h, rgb)
