"""White cells of a B-ALL field for cropping.

`device.cells.detect_cells` (the device's own detector) is used when this checkout has it, so training
crops are cut where the station cuts them. Without it, `nucleus_centres` stands in: the nucleated
pixels of `device.optics.nuclei` (closed over ~2 µm so a segmented nucleus's lobes join), one cell per
connected group of at least `min_area_um2` (25 µm²: a small lymphocyte's nucleus is ~40 µm²; platelets
and fragments stay out).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.optics.nuclei import NucleusThresholds, nuclear_pixels


@dataclass(frozen=True)
class FoundCell:
    x: float  # centre, image px
    y: float
    nucleus_area_um2: float
    detector: str


def nucleus_centres(rgb: np.ndarray, um_per_px: float, *, min_area_um2: float = 25.0) -> list[FoundCell]:
    mask = nuclear_pixels(rgb, NucleusThresholds())
    k = max(1, int(round(2.0 / um_per_px)))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, _, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        area = float(stats[i, cv2.CC_STAT_AREA]) * um_per_px**2
        if area >= min_area_um2:
            out.append(FoundCell(float(cents[i][0]), float(cents[i][1]), area, "nuclei"))
    return out


def white_cells(rgb: np.ndarray, um_per_px: float) -> list[FoundCell]:
    """The white cells of a white-referenced field (device detector when present)."""
    try:
        from device.cells import detect_cells  # type: ignore[import-not-found]
    except ImportError:
        return nucleus_centres(rgb, um_per_px)
    return [
        FoundCell(float(c.x), float(c.y), float(c.nucleus_area_um2), "device.cells")
        for c in detect_cells(rgb, um_per_px)
        if c.kind == "white"
    ]
