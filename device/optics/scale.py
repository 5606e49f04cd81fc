"""Red blood cells as a ruler: the image's scale (µm per pixel) from the size of its red cells.

A normal red cell is about 7.5 µm across (normal range about 6.2-8.2 µm) and is the most numerous
object in a thin smear, so the median red-cell diameter in pixels gives µm/px to within about ±10%
for one smear (the spread of the true mean between healthy people is narrower than the cell-to-cell
range; macro/microcytic anaemias shift it by up to ±20%). Accuracy here means *consistency*: the same
smear seen at another magnification gives the same estimate times the magnification ratio.

How (OpenCV + numpy only):
1. Optical density of the green channel against the smear's own background
   (`device.colour.reference_white`: a red channel clipped in the background is extrapolated,
   so a warm camera's red cells keep the hue that tells them from nuclei), so white balance and
   exposure do not move the threshold. Foreground = darker than half the red cells' typical density;
   nucleated cells (violet compared with the red cells, or far denser) are masked out with a margin.
2. Pale centres and small gaps inside a cell's outline are filled.
3. Granulometry: the *opening transform* gives each foreground pixel the radius of the largest disc
   that fits inside the foreground and covers it. Touching or overlapping red cells keep their own
   radius (a disc of the cell's size still fits in each), unlike connected components or contours.
   The pattern spectrum (how much area each radius holds) peaks at the red cells' radius.
4. Scale-free: a coarse pass on a small copy finds the rough size, then the image is resampled so a
   red cell is about 28 px across and analysed again (cells from ~8 px to several hundred px).

"Cannot tell" (`confident=False` with a `reason`) when there is no background, too few cells, or the
red-cell sizes are too inconsistent. Figures: docs/optics.md, benchmarks/scale_estimator.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from device.colour import reference_white
from device.config import OpticsConfig

#: Reference mean diameter of a normal red blood cell, µm (normal range about 6.2-8.2 µm): the
#: `[optics] rbc_diameter_um` default.
RBC_DIAMETER_UM = OpticsConfig().rbc_diameter_um
RBC_RANGE_UM = (6.2, 8.2)

#: Radius (px) red cells are resampled to for the fine pass.
_TARGET_RADIUS = 14.0
#: The fine pass never enlarges an image more than this (tiny cells stay measurable but blurry).
_MAX_UPSAMPLE = 3.0
#: Longest side of the coarse copy and of the fine analysis crop (px).
_COARSE_SIDE = 384
_FINE_SIDE = 640
#: Below this radius (px, in the original image) red cells cannot be measured.
_MIN_RADIUS_PX = 2.5
#: A confident estimate needs at least this many cells' worth of area at the peak radius ... A single-cell
#: picture holds few: on the other lab's 800 test pictures (PBC, about 0.11 µm/px), estimates from 4-7
#: cells fell within ±20% of the set's median as often as those from 8 or more (97% of 144 vs 94% of
#: 622), from 2-3 cells in 56%: four lets such pictures be screened at their own scale.
MIN_CELLS = 4
#: ... and a robust relative spread (IQR / median of the per-pixel radii near the peak) at most this.
#: Chosen on 120 training-split images: at 0.35 only 72% of them were confident, at 0.45 96%, while the
#: confident estimates' consistency at 0.5x / 2x the scale (within ±10%) went from 98.6/97.8% to
#: 97.2/98.2%: a stricter gate turned away good estimates (and `auto` images with them), not bad ones.
MAX_SPREAD = 0.45
#: Red cells under this many px across are enlarged 2.5-3x for the fine pass, and the blur of that
#: enlargement widens the measured spread: the 95% quantile of the spreads of 448 training-split 2x2
#: mosaics is 0.45 at their own scale (cells ~15 px) and 0.50 at half of it (cells ~7.6 px). Such small
#: cells get the same quantile as their gate, MAX_SPREAD_SMALL: 424 instead of 409 of those mosaics at 0.5x
#: confident, the confident ones' consistency with 1x (within ±10%) 98.4% instead of 98.8%.
SMALL_CELL_PX = 11.0
MAX_SPREAD_SMALL = 0.50
#: An estimate firm enough to REFUSE a frame on (the per-frame scale check): spread at most this. Between
#: this and MAX_SPREAD an estimate may rescale an image (`--um-per-px auto`) but not turn one away: with
#: the looser gate alone, the check refused 7.2% of the test images at the models' own scale (5.0% with
#: this one), as the dataset's own red cells vary ±15% between images.
FIRM_SPREAD = 0.35
#: ... and from at least this many cells' worth of area: an estimate from MIN_CELLS to FIRM_CELLS - 1
#: cells may give a single-cell picture its scale, but is too thin to turn a frame away on.
FIRM_CELLS = 8


@dataclass(frozen=True)
class ScaleEstimate:
    """The red cells' median diameter in pixels, and how far to trust it."""

    diameter_px: float | None
    n_cells: int
    spread: float | None
    confident: bool
    reason: str | None = None
    rbc_um: float = RBC_DIAMETER_UM

    @property
    def firm(self) -> bool:
        """Confident, from at least FIRM_CELLS cells, with a spread of at most FIRM_SPREAD: enough to
        refuse a frame on."""
        return (
            self.confident
            and self.n_cells >= FIRM_CELLS
            and self.spread is not None
            and self.spread <= FIRM_SPREAD
        )

    def um_per_px(self, rbc_um: float | None = None) -> float | None:
        """µm per pixel taking a red cell as `rbc_um` µm (default: the value given to the estimator)."""
        if not self.diameter_px:
            return None
        return float(rbc_um or self.rbc_um) / self.diameter_px

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["um_per_px"] = self.um_per_px()
        return d


#: Violet score (0-255 levels, background-normalised) above which a pixel belongs to a nucleated cell.
_VIOLET = 15.0


def _density_and_violet(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Optical density of the green channel relative to the smear's background (0 = background), and a
    "violet" score: how far blue > red > green, which nuclei and lymphocyte cytoplasm are (Romanowsky
    stains) and red cells, pink or grey, are not. None when there is no background to refer to.

    Green: red cells and nuclei absorb it most, and a camera's white balance is red and blue gains
    relative to green, so a warm or cool camera (whose background may clip in red or blue) does not
    change it."""
    # The reference white, not the clipped reading: with red read as 255 in the background, every red
    # cell stays ~20% too red after normalising, its violet score drops and nuclei look like red cells
    # (on the test split at red x1.25 / blue x0.8, 20 of 172 estimates moved > 15%, 4 with it).
    bg = reference_white(rgb)
    if bg is None:
        return None
    gains = (255.0 / np.maximum(bg, 1.0)).astype(np.float32)
    norm = rgb.astype(np.float32) * gains
    r, g, b = norm[..., 0], norm[..., 1], norm[..., 2]
    violet = np.minimum(b - r, r - g)
    od = np.log(256.0) - np.log(np.maximum(g, 0.0) + 1.0)
    return od, violet


def _thresholds(od: np.ndarray, exclude: np.ndarray) -> tuple[float, float, float] | None:
    """(foreground, nucleus) density thresholds and the red cells' level; None when nothing stands out.

    Otsu's threshold on the density (pixels in `exclude`, the violet nucleated cells, not counted)
    splits background from red cells; the red cells' level is the median density above it.
    Foreground = above half that level (the half-maximum edge of a blurred cell, so blur does not bias
    the size); dense objects (nuclei whatever their hue) = above 2.5x that level.
    """
    neg = od[od < 0]
    sigma = 1.4826 * float(np.median(-neg)) if neg.size > 50 else 0.01
    floor = max(4.0 * sigma, 0.02)
    vals = od[~exclude]
    if np.count_nonzero(vals > floor) < 50:
        return None
    top = max(float(np.percentile(vals, 99.5)), floor * 2)
    scaled = np.clip(vals / top * 255.0, 0, 255).astype(np.uint8).reshape(-1, 1)
    otsu, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    t = max(floor, float(otsu) / 255.0 * top)
    above = vals[vals > t]
    if above.size < 50:
        return None
    level = float(np.median(above))
    return max(floor, 0.5 * level), 2.5 * level, level


def _fill_holes(fg: np.ndarray, max_area: float, od: np.ndarray, stained: float) -> np.ndarray:
    """Fill enclosed background regions: any smaller than `max_area` (small gaps, pale centres), and
    round, faintly stained ones (mean density above `stained`) up to 16x that (a big cell's pale
    centre: the plasma between cells is as bright as the background and irregular, a pale centre is
    round and not quite as bright)."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats((~fg).astype(np.uint8), connectivity=4)
    if n <= 1:
        return fg
    h, w = fg.shape
    x, y, bw, bh, area = (stats[:, k] for k in range(5))
    enclosed = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    mean_od = np.bincount(lab.ravel(), weights=od.ravel(), minlength=n) / np.maximum(area, 1)
    side = np.maximum(np.maximum(bw, bh), 1).astype(np.float64)
    round_ = (area / (np.pi * (side / 2) ** 2) > 0.6) & (np.minimum(bw, bh) / side > 0.7)
    pale_centre = (area <= 16 * max_area) & (mean_od > stained) & round_
    fill = enclosed & ((area <= max_area) | pale_centre)
    fill[0] = False
    out = fg.copy()
    out[fill[lab]] = True
    return out


def _opening_transform(mask: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Per pixel of `mask`, the largest radius in `radii` of a disc inside `mask` that covers it
    (0 where none fits)."""
    dt = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    ot = np.zeros(mask.shape, np.float32)
    for r in radii.astype(np.float32):
        centres = dt >= r
        if not centres.any():
            break
        near = cv2.distanceTransform((~centres).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
        ot[(near <= r) & mask] = r
    return ot


@dataclass
class _Pass:
    radius: float  # px, in the analysed image
    n_cells: float
    spread: float
    fg_fraction: float


def _analyse(
    rgb: np.ndarray, radii: np.ndarray, hole_area: float, nucleus_margin: float, *, stained_holes: bool = True
) -> _Pass | str:
    """One granulometry pass on `rgb` at its own pixel size; a reason string when it cannot tell."""
    dv = _density_and_violet(rgb)
    if dv is None:
        return "no bright background visible (too dense, too dark or not a smear)"
    od, violet = (cv2.GaussianBlur(a, (0, 0), 0.8) for a in dv)
    purple = violet > _VIOLET
    th = _thresholds(od, purple)
    if th is None:
        return "no cells visible (blank or empty field)"
    t_fg, t_nuc, level = th
    # A clipped background channel leaves every red cell a little violet: nucleated cells are violet
    # compared with the red cells' own hue.
    rbc = (od > t_fg) & ~purple
    if np.count_nonzero(rbc) > 50:
        purple = violet > _VIOLET + max(0.0, float(np.median(violet[rbc])))
    fg = _fill_holes(od > t_fg, hole_area, od, 0.25 * level if stained_holes else np.inf)
    nuclei = purple | (od > t_nuc)
    if nuclei.any():
        nuclei = cv2.morphologyEx(nuclei.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        k = max(1, int(round(nucleus_margin)))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        fg &= cv2.dilate(nuclei, disc) == 0
    fg_fraction = float(fg.mean())
    if fg_fraction < 0.01:
        return "too few cells in view"
    ot = _opening_transform(fg, radii)
    radii = radii.astype(np.float32)
    counts = np.array([np.count_nonzero(ot == r) for r in radii], dtype=np.float64)
    if counts.sum() == 0:
        return "no red cells found"
    weighted = np.convolve(counts, [1, 2, 3, 2, 1], mode="same")
    r_mode = float(radii[int(np.argmax(weighted))])
    near = ot[(ot >= 0.75 * r_mode) & (ot <= 1.33 * r_mode)]
    step = float(radii[1] - radii[0]) if len(radii) > 1 else 0.0
    radius = float(near.mean()) + step / 2 if near.size else r_mode
    band = ot[(ot >= 0.5 * radius) & (ot <= 2.0 * radius)]
    q1, q2, q3 = np.percentile(band, [25, 50, 75]) if band.size else (0.0, 1.0, 0.0)
    return _Pass(
        radius=radius,
        n_cells=float(near.size) / (np.pi * radius * radius),
        spread=float((q3 - q1) / q2) if q2 > 0 else 1.0,
        fg_fraction=fg_fraction,
    )


def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-3:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp)


def _centre_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    ch, cw = min(h, side), min(w, side)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return rgb[y0 : y0 + ch, x0 : x0 + cw]


def _coarse(rgb: np.ndarray) -> float | str:
    """Rough red-cell radius (px of the original image) from a small copy, or a reason."""
    scale = min(1.0, _COARSE_SIDE / max(rgb.shape[:2]))
    small = _resize(rgb, scale)
    side = min(small.shape[:2])
    radii = np.geomspace(1.5, max(2.0, side / 6), num=40)
    # Small holes only: filling bigger ones here merges blurred, crowded cells into blobs, and the fine
    # passes can climb from a too-small estimate (a ring's width) but not descend from a blob's size.
    res = _analyse(small, radii, hole_area=np.pi * (0.01 * side) ** 2, nucleus_margin=1, stained_holes=False)
    if isinstance(res, str):
        return res
    return res.radius / scale


def estimate_scale(
    rgb: np.ndarray, *, rbc_um: float = RBC_DIAMETER_UM, expected_diameter_px: float | None = None
) -> ScaleEstimate:
    """Median red-cell diameter (px) of one RGB uint8 image, with its confidence.

    `expected_diameter_px` (the scale check: the calibration says how big the cells should be): the
    fine passes start there instead of at the coarse pass's rough size, which is skipped (half the cost).
    A wrong expectation costs a pass or two more, as a wrong rough size does: each fine pass measures
    radii from 0.4x to 2.5x the one it was resampled for, and the passes repeat until they agree."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")

    def cannot(reason: str, n: int = 0) -> ScaleEstimate:
        return ScaleEstimate(None, n, None, False, reason, rbc_um)

    coarse = _coarse(rgb) if not expected_diameter_px else expected_diameter_px / 2
    if isinstance(coarse, str):
        return cannot(coarse)
    radius = coarse
    res: _Pass | str = "no red cells found"
    scale = 1.0
    for _ in range(4):
        scale = min(_MAX_UPSAMPLE, _TARGET_RADIUS / max(radius, 0.5))
        img = _centre_crop(_resize(rgb, scale), _FINE_SIDE)
        radii = np.arange(0.4 * _TARGET_RADIUS, 2.5 * _TARGET_RADIUS, 0.5)
        res = _analyse(
            img,
            radii,
            hole_area=np.pi * (0.7 * _TARGET_RADIUS) ** 2,
            nucleus_margin=0.25 * _TARGET_RADIUS,
        )
        if isinstance(res, str):
            return cannot(res)
        new_radius = res.radius / scale
        stable = abs(new_radius / radius - 1) < 0.15
        radius = new_radius
        if stable:
            break
    assert isinstance(res, _Pass)
    n_cells = int(res.n_cells)
    diameter = 2 * radius
    if radius < _MIN_RADIUS_PX:
        return cannot(f"red cells too small to measure (about {diameter:.1f} px across)", n_cells)
    reason = None
    max_spread = MAX_SPREAD_SMALL if diameter < SMALL_CELL_PX else MAX_SPREAD
    if n_cells < MIN_CELLS:
        reason = f"too few red cells ({n_cells}; at least {MIN_CELLS} needed)"
    elif res.spread > max_spread:
        reason = f"red-cell sizes too inconsistent (spread {res.spread:.2f} > {max_spread})"
    return ScaleEstimate(
        diameter_px=round(diameter, 3),
        n_cells=n_cells,
        spread=round(res.spread, 3),
        confident=reason is None,
        reason=reason,
        rbc_um=rbc_um,
    )
