"""Where are the white cells? A cheap colour + darkness + area test for nucleated cells.

White-cell nuclei (and blasts' cytoplasm-poor bodies) in a Romanowsky/Wright/Giemsa stain are dark
purple-blue to magenta; red cells are pale pink or grey-blue and the plasma background is near white.
In optical density (OD = -log(I / background), per channel, after dividing by the background so a
camera's white balance does not matter), a nucleus absorbs green strongly and clearly more than blue
and red; a red cell absorbs all three about alike. So a pixel is "nuclear" when

    OD_green >= min_od_green  and  OD_green - OD_blue >= min_od_green_blue
                              and  OD_green - OD_red  >= min_od_green_red

and a nucleated cell is a connected group of such pixels whose area, in µm², is at least
`min_area_um2` (so the test means the same at any magnification). The thresholds are set so every
stain of the B-ALL images shows its nuclei and no red cell passes: pale Pro-B blasts need the low green
threshold, and the green-red difference keeps blue-grey red cells out (`tests/test_tiling.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.colour import WHITE_LEVEL, estimate_background
from device.config import TilingConfig

#: Above this many pixels the mask is computed on a shrunk copy (speed; a nucleus is >= ~10 px wide).
ANALYSIS_MAX_SIDE = 640


@dataclass(frozen=True)
class NucleusThresholds:
    min_od_green: float = 0.20
    min_od_green_blue: float = 0.15
    min_od_green_red: float = 0.08
    # a small lymphocyte's nucleus is ~40-60 µm²; fragments below are ignored (`[tiling] min_nucleus_um2`)
    min_area_um2: float = TilingConfig().min_nucleus_um2


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """RGB of the bright plasma background (`device.colour.estimate_background`; a neutral
    235 grey when none is visible). Used to pad frames and to make the nucleus test independent of
    the camera's white balance."""
    bg = estimate_background(rgb)
    return bg.astype(np.float32) if bg is not None else np.full(3, WHITE_LEVEL, np.float32)


def nuclear_pixels(rgb: np.ndarray, t: NucleusThresholds, background: np.ndarray | None = None) -> np.ndarray:
    """uint8 mask (0/255), same size as `rgb`, of pixels that look like white-cell nuclei."""
    bg = background_colour(rgb) if background is None else background
    # OD relative to the background: log(bg) - log(I); a LUT per channel keeps this cheap.
    levels = np.arange(256, dtype=np.float32)
    od = [
        np.log(max(float(b), 1.0)) - np.log(np.maximum(levels, 1.0))
        for b in bg  # per channel R, G, B
    ]
    lut_r, lut_g, lut_b = (np.clip(o * 100.0, -1000, 1000).astype(np.int16) for o in od)
    r, g, b = cv2.split(rgb)  # contiguous planes: `take` on them is ~2x faster than on strided views
    odr, odg, odb = lut_r.take(r), lut_g.take(g), lut_b.take(b)  # OD x 100, int16
    mask = (
        (odg >= round(t.min_od_green * 100))
        & (odg - odb >= round(t.min_od_green_blue * 100))
        & (odg - odr >= round(t.min_od_green_red * 100))
    )
    return mask.view(np.uint8) * np.uint8(255)


@dataclass
class NucleusMap:
    """Nucleated-cell pixels of an image at some scale, queryable per rectangle in O(1)."""

    mask: np.ndarray  # uint8 0/1 at `factor` x the image's size, only components >= min area
    factor: float  # mask px per image px
    min_area_px: float  # the minimum area, in image px
    integral: np.ndarray  # cv2.integral of mask
    n_cells: int

    def area_in(self, x: int, y: int, w: int, h: int) -> float:
        """Nucleated area (image px) inside the image rectangle (x, y, w, h)."""
        f = self.factor
        x0, y0 = int(x * f), int(y * f)
        x1 = min(self.mask.shape[1], int(round((x + w) * f)))
        y1 = min(self.mask.shape[0], int(round((y + h) * f)))
        if x1 <= x0 or y1 <= y0:
            return 0.0
        s = self.integral
        n = int(s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0])
        return n / (f * f)

    def has_cell(self, x: int, y: int, w: int, h: int) -> bool:
        """At least half of a minimum-size nucleus lies inside the rectangle (a cell cut by the
        tile's edge still counts: overlapping tiles see it whole in a neighbour)."""
        return self.area_in(x, y, w, h) >= 0.5 * self.min_area_px


def find_nuclei(
    rgb: np.ndarray,
    um_per_px: float | None,
    t: NucleusThresholds | None = None,
    *,
    background: np.ndarray | None = None,
    shrink_from: np.ndarray | None = None,
) -> NucleusMap:
    """The nucleus map of `rgb` whose pixels are `um_per_px` wide (None: assume the minimum area is
    ~0.3% of the image, the right order for a 224-288 px dataset field). `shrink_from`: the same
    picture at another size (the frame `rgb` was rescaled from), to analyse a small copy made from it."""
    t = t or NucleusThresholds()
    h, w = rgb.shape[:2]
    f = min(1.0, ANALYSIS_MAX_SIDE / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if f >= 1.0:
        small = rgb
    else:  # shrink from the original frame when given: the same picture, one resize fewer
        src = rgb if shrink_from is None else shrink_from
        # a detection mask, not a model input: INTER_LINEAR (INTER_AREA at a fractional factor is slow)
        interp = cv2.INTER_AREA if src.shape[1] >= 2 * size[0] else cv2.INTER_LINEAR
        small = cv2.resize(src, size, interpolation=interp)
    f = small.shape[1] / w
    min_area_px = t.min_area_um2 / (um_per_px**2) if um_per_px else 0.003 * h * w
    raw = nuclear_pixels(small, t, background)
    raw = cv2.morphologyEx(raw, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(raw, connectivity=8)
    keep = np.zeros(n, np.uint8)
    min_small = min_area_px * f * f
    big = stats[1:, cv2.CC_STAT_AREA] >= max(min_small, 1.0)
    keep[1:][big] = 1
    mask = keep.take(labels)  # identical to keep[labels], ~2x faster
    return NucleusMap(mask, f, min_area_px, cv2.integral(mask), int(big.sum()))
