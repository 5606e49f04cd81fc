"""The one writer of a screened field: the frame's JPEG, the record (kind "cells") and its cells, for the
camera and for uploads alike.

The image file is written first, then the record and its cells in one transaction
(`Store.add_result(..., cells=)`), so a kill leaves no half-record. A full disk stores a camera result
without its image (the count still stands); a capture or an upload (`require_image`) is refused with
DiskFullError instead, so nothing is acknowledged without its image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from device.screening.stages import FieldCells
from device.store import DiskFullError, Store

KIND = "cells"


@dataclass(frozen=True)
class Origin:
    """Where and when a screened field comes from."""

    source: str  # "camera" | "upload"
    captured_at: str  # UTC ISO time of the frame
    monotonic_ns: int
    quality: dict[str, Any]  # `Quality.to_dict()` of the frame
    sample_id: str | None = None
    filename: str | None = None
    profile: str | None = None  # the calibration profile in force
    require_image: bool = False


@dataclass(frozen=True)
class Written:
    record: dict[str, Any]  # the stored record JSON
    image_error: str | None = None  # why the frame's image was not kept (a camera result on a full disk)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def record_quality(result: FieldCells, quality: dict[str, Any]) -> dict[str, Any]:
    """The frame's quality figures plus the field's: differential, field line, scale check, second reading."""
    out = dict(quality)
    out["differential"] = result.differential.to_dict() if result.differential is not None else None
    out["field_line"] = result.field_line
    out["state"] = result.state
    out["scale_check"] = result.prepared.scale_check.to_dict()
    out["scale_source"] = result.prepared.scale_source
    if result.second is not None:
        out["second_reading"] = result.second.to_dict()
    if result.detail is not None:
        out["detail"] = result.detail.to_dict()
    if result.prepared.white is not None:
        out["white_reference"] = result.prepared.white.describe()
    return out


def write_field(
    store: Store,
    result: FieldCells,
    origin: Origin,
    models: list[dict[str, str]],
    *,
    jpeg_quality: int = 90,
) -> Written:
    """Store `result` (its frame, record and cells); returns the record JSON."""
    sha = None
    images: list[tuple[str, int]] = []
    image_error = None
    try:
        sha, size = store.write_image(encode_jpeg(result.prepared.image, jpeg_quality))
        images.append((sha, size))
    except DiskFullError as exc:
        if origin.require_image:
            raise
        image_error = str(exc)
    rec = store.add_result(
        {
            "sample_id": origin.sample_id,
            "source": origin.source,
            "kind": KIND,
            "models": models,
            "probabilities": {k: round(v, 6) for k, v in result.probabilities.items()},
            "label": result.label,
            "confidence": result.confidence,
            "abstained": result.abstained,
            "reason": result.reason,
            "quality": record_quality(result, origin.quality),
            "um_per_px": result.prepared.um_per_px,
            "profile": origin.profile,
            "image_sha256": sha,
            "heatmap_sha256": None,
            "filename": origin.filename,
            "captured_at": origin.captured_at,
            "monotonic_ns": origin.monotonic_ns,
        },
        images=images,
        cells=result.records,
    )
    return Written(rec, image_error)
