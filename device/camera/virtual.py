"""A virtual microscope: camera frames rendered from smear images of a known scale.

The sample slides (224-px dataset images) are laid out as one seamless "slide" (a grid with feathered
seams, mirrored at its edges so it wraps around), and a virtual camera looks at it through chosen
optics: frame size, µm per pixel, white-balance tint, vignetting, sensor noise and blur. The stage
dwells on a field, then moves to the next one, so "classify once the field has settled" can be seen.

Used by the replay camera (`[camera] virtual = true`, see device/default_config.toml and
docs/examples/virtual-hq.toml), the tests and benchmarks: it lets a new user try calibration, the scale
check and tiling without a microscope. Frames depend only on the frame index (deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from device.config import CameraConfig

#: The [camera] defaults; device/config.py holds them (and their ranges).
_CAMERA = CameraConfig()

#: µm per pixel of the shipped sample slides (224-px images of the B-ALL dataset), measured from their
#: red cells over the training split: `python -m training.scale --split runs/split-all4-seed42.json
#: --size 288` gave 0.3725 at 288 px, i.e. 0.479 at 224 px (7.5 µm per red cell; models/*/manifest.json).
SAMPLES_UM_PER_PX = 0.479

#: Feathered overlap between neighbouring source images on the slide (source px).
_SEAM = 16


@dataclass(frozen=True)
class VirtualOptics:
    """What the virtual camera sees, as `[camera]` keys describe it."""

    width: int = 1920
    height: int = 1080
    um_per_px: float = 0.0  # of the rendered frames; 0 = the source images' own scale
    source_um_per_px: float = SAMPLES_UM_PER_PX
    tint_r: float = 1.0  # white-balance gains (a camera's own AWB error)
    tint_b: float = 1.0
    vignetting: float = 0.0  # fraction of brightness lost in the corners (0..0.9)
    noise: float = 0.0  # sensor noise, standard deviation in grey levels
    blur: float = 0.0  # Gaussian blur sigma in frame pixels (defocus, JPEG softness)
    pan: bool = True  # move between fields; False: one static field
    dwell_s: float = 4.0  # seconds the stage stays on a field ...
    move_s: float = 1.0  # ... and takes to move to the next
    seed: int = 0

    @property
    def frame_um_per_px(self) -> float:
        return self.um_per_px if self.um_per_px > 0 else self.source_um_per_px

    @property
    def zoom(self) -> float:
        """Frame pixels per source pixel."""
        return self.source_um_per_px / self.frame_um_per_px

    def check(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError("virtual camera: frame size must be at least 8x8")
        if self.source_um_per_px <= 0 or self.um_per_px < 0:
            raise ValueError("virtual camera: µm/px must be > 0")
        if not 0 <= self.vignetting < 0.95:
            raise ValueError("virtual camera: vignetting must be in 0..0.95")
        if self.tint_r <= 0 or self.tint_b <= 0 or self.noise < 0 or self.blur < 0:
            raise ValueError("virtual camera: tint gains must be > 0, noise and blur >= 0")


def _harmonise(images: Sequence[np.ndarray], trim_bottom: float) -> list[np.ndarray]:
    """Give every image the median background colour of them all (each dataset image has its own white
    balance; one slide under one camera has one), and trim a fraction off the bottom (where the
    dataset's images carry a scale-bar label)."""
    from device.colour import apply_gains, estimate_background

    bgs = [estimate_background(im) for im in images]
    known = [b for b in bgs if b is not None]
    target = np.median(np.stack(known), axis=0) if known else None
    out = []
    for im, bg in zip(images, bgs, strict=True):
        if trim_bottom > 0:
            im = im[: max(8, int(round(im.shape[0] * (1 - trim_bottom))))]
        if target is not None and bg is not None:
            im = apply_gains(im, target / bg)
        out.append(im)
    return out


def build_slide(
    images: Sequence[np.ndarray], seam: int = _SEAM, *, harmonise: bool = True, trim_bottom: float = 0.0
) -> np.ndarray:
    """Lay RGB images (resized to the first one's size) on a near-square grid with feathered seams,
    then mirror the grid 2x2 so the slide wraps around without a visible edge."""
    if not images:
        raise ValueError("virtual microscope: no source images")
    if harmonise or trim_bottom > 0:
        images = (
            _harmonise(images, trim_bottom)
            if harmonise
            else [im[: int(im.shape[0] * (1 - trim_bottom))] for im in images]
        )
    h, w = images[0].shape[:2]
    seam = max(0, min(seam, h // 4, w // 4))
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    step_y, step_x = h - seam, w - seam
    H, W = rows * step_y + seam, cols * step_x + seam
    acc = np.zeros((H, W, 3), np.float32)
    wsum = np.zeros((H, W, 1), np.float32)
    ramp_x = np.minimum(1.0, (np.arange(w) + 0.5) / max(seam, 1)) * np.minimum(
        1.0, (w - np.arange(w) - 0.5) / max(seam, 1)
    )
    ramp_y = np.minimum(1.0, (np.arange(h) + 0.5) / max(seam, 1)) * np.minimum(
        1.0, (h - np.arange(h) - 0.5) / max(seam, 1)
    )
    weight = (ramp_y[:, None] * ramp_x[None, :]).astype(np.float32)[..., None] + 1e-3
    for k in range(rows * cols):
        img = images[k % n]
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        y0, x0 = (k // cols) * step_y, (k % cols) * step_x
        acc[y0 : y0 + h, x0 : x0 + w] += img.astype(np.float32) * weight
        wsum[y0 : y0 + h, x0 : x0 + w] += weight
    grid = np.clip(acc / wsum, 0, 255).astype(np.uint8)
    top = np.hstack([grid, grid[:, ::-1]])
    return np.ascontiguousarray(np.vstack([top, top[::-1]]))


class VirtualMicroscope:
    """Renders frame `i` of a virtual camera looking at `slide` (RGB, wraps around)."""

    def __init__(self, slide: np.ndarray, optics: VirtualOptics, fps: float = _CAMERA.fps):
        optics.check()
        self.slide = slide
        self.optics = optics
        self.fps = fps if fps > 0 else 5.0
        h, w = slide.shape[:2]
        rng = np.random.default_rng(optics.seed)
        #: Field centres in slide pixels (the stage's stops), visited in order, looping.
        self.fields = np.column_stack([rng.uniform(0, w, 64), rng.uniform(0, h, 64)])
        self._frame_gain = self._gain(optics.height, optics.width)
        self._noise: list[np.ndarray] | None = None
        if optics.noise > 0:
            # Two frames of noise at half resolution (2-px grain, as after demosaicing), alternated:
            # drawing 3 x 12 M normal numbers per 4K frame would cost more than the rest of the frame.
            cv2.setRNGSeed(optics.seed)
            self._noise = []
            for _ in range(2):
                n = np.empty(((optics.height + 1) // 2, (optics.width + 1) // 2, 3), np.int16)
                cv2.randn(n, 0.0, float(optics.noise))
                self._noise.append(n)

    @classmethod
    def from_images(
        cls,
        images: Sequence[np.ndarray],
        optics: VirtualOptics,
        fps: float = _CAMERA.fps,
        *,
        trim_bottom: float = 0.0,
    ) -> VirtualMicroscope:
        return cls(build_slide(images, trim_bottom=trim_bottom), optics, fps)

    def position(self, i: int) -> tuple[float, float, bool]:
        """Stage position (slide px, centre of the view) at frame `i`, and whether it is settled."""
        o = self.optics
        if not o.pan:
            cx, cy = self.fields[0]
            return float(cx), float(cy), True
        t = i / self.fps
        period = o.dwell_s + o.move_s
        k, phase = divmod(t, period)
        a = self.fields[int(k) % len(self.fields)]
        if phase < o.dwell_s or o.move_s <= 0:
            return float(a[0]), float(a[1]), True
        b = self.fields[(int(k) + 1) % len(self.fields)]
        s = (phase - o.dwell_s) / o.move_s
        s = s * s * (3 - 2 * s)  # ease in and out, as a motorised stage
        return float(a[0] + (b[0] - a[0]) * s), float(a[1] + (b[1] - a[1]) * s), False

    def view(self, cx: float, cy: float) -> np.ndarray:
        """The optics' frame centred on slide pixel (cx, cy), before tint/vignetting/noise."""
        o = self.optics
        zoom = o.zoom
        sw, sh = o.width / zoom, o.height / zoom  # source pixels the frame covers
        x0, y0 = cx - sw / 2, cy - sh / 2
        ix0, iy0 = math.floor(x0) - 1, math.floor(y0) - 1
        iw, ih = math.ceil(sw) + 3, math.ceil(sh) + 3
        H, W = self.slide.shape[:2]
        ys = np.arange(iy0, iy0 + ih) % H
        xs = np.arange(ix0, ix0 + iw) % W
        patch = self.slide[ys[:, None], xs[None, :]]
        # Sub-pixel placement and scale in one affine warp (area-averaging first when shrinking).
        if zoom < 1:
            pre = max(1, int(1 / zoom))
            if pre > 1:
                patch = cv2.resize(
                    patch, (max(1, iw // pre), max(1, ih // pre)), interpolation=cv2.INTER_AREA
                )
                fx, fy = patch.shape[1] / iw, patch.shape[0] / ih
            else:
                fx = fy = 1.0
        else:
            fx = fy = 1.0
        m = np.array(
            [[zoom / fx, 0, -(x0 - ix0) * zoom], [0, zoom / fy, -(y0 - iy0) * zoom]], dtype=np.float64
        )
        return cv2.warpAffine(
            patch, m, (o.width, o.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )

    def _gain(self, h: int, w: int) -> np.ndarray | None:
        """Per-pixel gains (tint x vignetting) for an h x w image spanning the frame, or None."""
        o = self.optics
        tinted = o.tint_r != 1.0 or o.tint_b != 1.0
        if not tinted and o.vignetting <= 0:
            return None
        gain = np.empty((h, w, 3), np.float32)
        gain[:] = np.array([o.tint_r, 1.0, o.tint_b], np.float32)
        if o.vignetting > 0:
            y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
            x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
            gain *= (1.0 - o.vignetting * (x * x + y * y) / 2.0)[..., None]
        return gain

    def frame(self, i: int) -> np.ndarray:
        """Frame `i` (RGB uint8, height x width) as the virtual camera delivers it."""
        o = self.optics
        cx, cy, _ = self.position(i)
        img = self.view(cx, cy)
        if o.blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), o.blur)
        if self._frame_gain is not None:
            img = cv2.multiply(img, self._frame_gain, dtype=cv2.CV_8U)
        if self._noise is not None:
            grain = self._noise[i % len(self._noise)]
            grain = cv2.resize(grain, (o.width, o.height), interpolation=cv2.INTER_NEAREST)
            img = cv2.add(img, grain, dtype=cv2.CV_8U)
        return img
