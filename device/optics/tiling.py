"""Frame → model-scale tiles: rescale a frame from its µm/px to the models', cover it with model-size
tiles, and mark the tiles that hold a nucleated (white) cell.

- Rescaling: factor = frame µm/px ÷ model µm/px (INTER_AREA when shrinking, INTER_LINEAR when
  enlarging). Never stretched: both axes get the same factor.
- Tiles: the fewest model-size tiles per axis whose overlap is at least `overlap` x the tile side,
  spread evenly so the first and last tile touch the borders (no partial tiles, no padding inside).
- A rescaled frame smaller than one tile is padded (centred, with the smear's background colour) when
  it still covers at least `min_cover` of the tile's side, and refused otherwise: a model never sees
  an image enlarged past its scale, nor a tile that is mostly padding.
- Tiles with less than half a minimum-size nucleus (`device/optics/nuclei.py`) are skipped.
- White reference (`white`, measured on the whole frame): applied after the rescale when shrinking (a
  lookup table on fewer pixels), before it when enlarging; the gains are linear, so the order changes
  nothing but the cost and rounding. Not so when a clipped channel was extrapolated: the saturated pixels
  are rebuilt one by one, and a shrink would first blend them with their neighbours into values just
  under 255 that are no longer recognised (coloured fringes round every cell), so those frames get the
  gains first.
- When the bundle declares no µm/px ("scale unknown") the plan is the legacy one: one tile, the
  centre crop of the whole frame resized to the model's size (`device.preprocess.prepare`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from device.colour import WhiteReference
from device.config import TilingConfig
from device.optics.nuclei import NucleusMap, NucleusThresholds, background_colour, find_nuclei
from device.preprocess import prepare

#: A shrink whose 1/factor is within this fraction of an integer k >= 2 averages k x k blocks and then
#: resamples by k x factor (0.9-1.1): at most 10% of the detail is lost, well inside the models' ±25% scale
#: jitter, for a ~6x faster rescale (see `rescale`).
NEAR_INTEGER = 0.1

#: A frame enlarged past this many pixels at the models' scale is refused (a wrong µm/px, not a frame).
MAX_SCALED_PIXELS = 64_000_000
#: The `[tiling]` defaults; device/config.py holds them (and their ranges).
_DEFAULTS = TilingConfig()


@dataclass(frozen=True)
class TileSpec:
    """What the models want and how to tile for them."""

    width: int
    height: int
    um_per_px: float | None  # the bundle's input.um_per_px (None: scale unknown)
    resize: str = "center_crop"
    # minimum overlap between neighbouring tiles, fraction of the tile side
    overlap: float = _DEFAULTS.overlap
    # pad a smaller frame only when it covers this much of a tile side
    min_cover: float = _DEFAULTS.min_cover
    # at most this many tiles are classified per frame (most nuclear area first)
    max_tiles: int = _DEFAULTS.max_tiles
    nuclei: NucleusThresholds = field(default_factory=NucleusThresholds)


@dataclass
class Tile:
    x: int  # top-left in the rescaled (and padded) image, model px
    y: int
    nucleus_um2: float  # nucleated area inside the tile
    nucleated: bool
    rgb: np.ndarray | None = None  # the model input (only for tiles that will be classified)


@dataclass
class TilePlan:
    frame_size: tuple[int, int]  # (w, h) of the frame
    tile_size: tuple[int, int]  # (w, h) of a model tile
    factor: float  # model px per frame px
    pad: tuple[int, int]  # (x, y) offset of the frame inside the padded image, model px
    scaled_size: tuple[int, int]  # (w, h) of the rescaled frame before padding
    tiles: list[Tile]
    legacy: bool = False  # scale unknown: one centre-cropped tile of the whole frame
    refused: str | None = None  # why no tile can be cut (frame too small at the model's scale)
    n_nuclei: int = 0
    dropped: int = 0  # nucleated tiles beyond max_tiles

    @property
    def selected(self) -> list[Tile]:
        """The tiles to classify."""
        return [t for t in self.tiles if t.rgb is not None]

    def frame_box(self, tile: Tile) -> tuple[float, float, float, float]:
        """The tile's (x, y, w, h) in frame pixels (clipped to the frame)."""
        tw, th = self.tile_size
        fw, fh = self.frame_size
        x0 = (tile.x - self.pad[0]) / self.factor
        y0 = (tile.y - self.pad[1]) / self.factor
        x1, y1 = x0 + tw / self.factor, y0 + th / self.factor
        x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(fw, x1), min(fh, y1)
        return x0, y0, x1 - x0, y1 - y0

    def outlines(self, labels: dict[int, str] | None = None) -> list[dict]:
        """Tile boxes as fractions of the frame (the live view draws them over the image)."""
        fw, fh = self.frame_size
        out = []
        for i, t in enumerate(self.tiles):
            x, y, w, h = self.frame_box(t)
            state = "classified" if t.rgb is not None else ("skipped" if not t.nucleated else "dropped")
            box = {
                "x": round(x / fw, 4),
                "y": round(y / fh, 4),
                "w": round(w / fw, 4),
                "h": round(h / fh, 4),
                "state": state,
            }
            if labels and i in labels:
                box["label"] = labels[i]
            out.append(box)
        return out

    def summary(self) -> dict:
        return {
            "factor": round(self.factor, 4),
            "tiles": len(self.tiles),
            "classified": len(self.selected),
            "nucleated": sum(t.nucleated for t in self.tiles),
            "dropped": self.dropped,
            "legacy": self.legacy,
            "padded": self.pad != (0, 0),
            "refused": self.refused,
        }


def positions(length: int, tile: int, overlap: float) -> list[int]:
    """Top-left offsets of the fewest tiles covering `length` with at least `overlap` x tile overlap."""
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1.0 - overlap)))
    n = math.ceil((length - tile) / step) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def rescale(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Both axes by `factor` (no stretching); INTER_AREA shrinking, INTER_LINEAR enlarging.

    OpenCV's INTER_AREA is ~10x slower at a fractional factor than at an integer one (1920x1080 at
    x0.514: 5.5 ms, at x0.5: 0.3 ms), so a shrink first averages k x k blocks and resamples the rest
    linearly: k = the integer nearest 1/factor when that leaves at most a ±`NEAR_INTEGER` resample
    (x0.514: 2x2 blocks, then x1.03), else the integer part of 1/factor when that is at least 2.
    Otherwise (x0.56-x1 not near 1/k, e.g. x0.64 or x0.86) INTER_AREA does it all."""
    if abs(factor - 1.0) < 1e-3:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    k = 1
    if factor < 1.0:
        near = round(1.0 / factor)
        k = near if near >= 2 and abs(near * factor - 1.0) <= NEAR_INTEGER else int(1.0 / factor)
    if k >= 2 and min(w // k, h // k) >= 1:
        rgb = cv2.resize(rgb, (w // k, h // k), interpolation=cv2.INTER_AREA)  # integer block average
        if (w // k, h // k) == size:
            return rgb
        return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    interp = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp)


def legacy_plan(rgb: np.ndarray, spec: TileSpec) -> TilePlan:
    """Scale unknown: one centre crop of the whole frame at the model's size."""
    h, w = rgb.shape[:2]
    tile = prepare(rgb, (spec.width, spec.height), spec.resize)
    side = min(w / spec.width, h / spec.height) if spec.resize == "center_crop" else w / spec.width
    factor = 1.0 / side
    pad = (round((spec.width - w * factor) / 2), round((spec.height - h * factor) / 2))
    t = Tile(0, 0, 0.0, True, tile)
    return TilePlan(
        (w, h), (spec.width, spec.height), factor, pad, (round(w * factor), round(h * factor)), [t], True
    )


def plan_tiles(
    rgb: np.ndarray, frame_um_per_px: float | None, spec: TileSpec, white: WhiteReference | None = None
) -> TilePlan:
    """Cut `rgb` (whose pixels are `frame_um_per_px` wide) into model tiles; see the module doc.
    `frame_um_per_px` None or a spec without µm/px gives the legacy plan. `white`: the frame's white
    reference, applied to the tiles (and known to the nucleus test as the background)."""
    if spec.um_per_px is None or frame_um_per_px is None:
        return legacy_plan(rgb if white is None else white.apply(rgb), spec)
    h, w = rgb.shape[:2]
    tw, th = spec.width, spec.height
    factor = frame_um_per_px / spec.um_per_px
    plan = TilePlan((w, h), (tw, th), factor, (0, 0), (round(w * factor), round(h * factor)), [])
    if plan.scaled_size[0] * plan.scaled_size[1] > MAX_SCALED_PIXELS:
        plan.refused = (
            f"at the models' scale the image would be {plan.scaled_size[0]}x{plan.scaled_size[1]} px: "
            f"is {frame_um_per_px:.3g} µm/px right?"
        )
        return plan
    if white is None:
        scaled = rescale(rgb, factor)
    elif factor < 1.0 and not white.extrapolated:
        scaled = white.apply(rescale(rgb, factor))
    else:
        rgb = white.apply(rgb)
        scaled = rescale(rgb, factor)
    background = white.applied_background if white is not None else None
    sh, sw = scaled.shape[:2]
    plan.scaled_size = (sw, sh)
    if sw < tw or sh < th:
        cover = min(sw / tw, sh / th)
        if cover < spec.min_cover:
            plan.refused = (
                f"the image is {sw}x{sh} px at the models' scale ({spec.um_per_px:.3g} µm/px), "
                f"{cover:.0%} of a {tw}x{th} tile (at least {spec.min_cover:.0%} needed): "
                "use a higher magnification or a larger image"
            )
            return plan
        bg = background_colour(scaled)
        px, py = max(0, (tw - sw) // 2), max(0, (th - sh) // 2)
        canvas = np.empty((max(th, sh), max(tw, sw), 3), np.uint8)
        canvas[:] = np.round(bg).astype(np.uint8)
        canvas[py : py + sh, px : px + sw] = scaled
        scaled, plan.pad = canvas, (px, py)
    # the nucleus map is made on a small copy: shrink whichever of frame and rescaled frame is smaller
    source = rgb if plan.pad == (0, 0) and rgb.shape[1] < scaled.shape[1] else None
    nmap: NucleusMap = find_nuclei(
        scaled, spec.um_per_px, spec.nuclei, background=background, shrink_from=source
    )
    plan.n_nuclei = nmap.n_cells
    um2 = spec.um_per_px**2
    H, W = scaled.shape[:2]
    for y in positions(H, th, spec.overlap):
        for x in positions(W, tw, spec.overlap):
            area = nmap.area_in(x, y, tw, th)
            plan.tiles.append(Tile(x, y, area * um2, nmap.has_cell(x, y, tw, th)))
    chosen = sorted((t for t in plan.tiles if t.nucleated), key=lambda t: -t.nucleus_um2)
    plan.dropped = max(0, len(chosen) - spec.max_tiles)
    for t in chosen[: spec.max_tiles]:
        t.rgb = np.ascontiguousarray(scaled[t.y : t.y + th, t.x : t.x + tw])
    return plan


def stitch_heatmap(plan: TilePlan, cams: list[tuple[Tile, np.ndarray]], cell: int = 8) -> np.ndarray:
    """The tiles' activation maps (0..1, any resolution) placed back at frame coordinates, as one
    float32 map over the whole frame at 1/`cell` of its model-scale size (max where tiles overlap;
    0 where no tile was classified). `heatmap_overlay(frame, map)` draws it."""
    tw, th = plan.tile_size
    sw, sh = plan.scaled_size
    px, py = plan.pad
    W = max(tw, sw + px) if plan.pad != (0, 0) else sw
    H = max(th, sh + py) if plan.pad != (0, 0) else sh
    canvas = np.zeros((max(1, H // cell), max(1, W // cell)), np.float32)
    for tile, cam in cams:
        w, h = max(1, tw // cell), max(1, th // cell)
        x, y = tile.x // cell, tile.y // cell
        patch = cv2.resize(cam.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        region = canvas[y : y + h, x : x + w]
        np.maximum(region, patch[: region.shape[0], : region.shape[1]], out=region)
    if plan.legacy:
        return canvas
    x0, y0 = px // cell, py // cell
    x1, y1 = max(x0 + 1, (px + sw) // cell), max(y0 + 1, (py + sh) // cell)
    return np.ascontiguousarray(canvas[y0:y1, x0:x1])
