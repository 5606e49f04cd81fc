"""The smear's bright plasma background as a white reference.

A thin blood smear is mostly background between the cells; under a microscope it is the lamp's light
through glass and plasma, i.e. white. Its colour in a frame is the camera's white balance and exposure,
not the stain. Dividing every channel by it (a von Kries / white-patch correction) removes the camera,
so what the models and the colour check see is the stain that remains.

The background is estimated robustly: the brightest pixels that are not clipped, on a small copy of the
image. A frame with no visible background (a dense field, a blank black image) yields `None` and is left
unchanged rather than "corrected" towards a cell's colour.

A channel can be clipped in the background itself: a warm white balance (red gain 1.2-1.25) on a bright
field saturates red everywhere the slide is empty, so the background reads 255 whatever the true gain was,
and the white reference alone would leave every cell too red. The true background of such a channel is
only known to be at least 255 (a censored value). For red it is then taken as the value that makes the
stained pixels' red/green ratio after the reference no redder than a typical May-Grünwald-Giemsa smear's
upper quartile (`_CENSORED_LOG_RATIO`), never less than 255 and at most `_MAX_EXTRAPOLATION` times it;
pixels saturated in red are then rebuilt no less than their other channels' lower one (a saturated
background comes out neutral, not cyan; `_rebuild_clipped`). That value is a guess (the stain's own
colour varies between smears): `WhiteReference.alternatives` offers the neighbouring guesses and the
field classifier keeps the one whose tiles the models find most familiar. A channel not clipped in the
background is never touched by this, so stain shifts stay visible to the colour check; a clipped red
channel's excess red is taken as the camera's. Green (the ratio's reference, clipped in most B-ALL
training images) and blue stay at 255 when clipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import cv2
import numpy as np

#: The neutral grey level the background is mapped to (OpenFlexure calibrates a background to ~230).
WHITE_LEVEL = 235.0
#: Size of the copy the background is estimated on (longest side, px).
_ANALYSIS_SIDE = 256
#: Fraction of the brightest pixels taken as background candidates.
_TOP_FRACTION = 0.12
#: A background darker than this (max channel, 0-255) is not a lit background: no correction.
_MIN_BACKGROUND = 60.0
#: Gains are clamped to this range: beyond it the frame is not a white-balance error but something else.
_GAIN_RANGE = (0.5, 3.0)
#: Upper quartile of the stained pixels' log(red/green) after the white reference, on the B-ALL training
#: images (benchmarks/white_reference_eval.py prints it; median -0.05). Red only: blue's ratio is bimodal
#: across stain batches (log 0.14 / 0.30) and nuclei saturate in blue first, so extrapolating a clipped
#: blue made the normalised image worse there (same benchmark); a clipped blue background stays 255.
_CENSORED_LOG_RATIO = {0: -0.028}
#: A clipped background is raised by at most this factor (a white-balance gain of ~1.4).
_MAX_EXTRAPOLATION = 1.4
#: The extrapolation is a guess within the stain's own variation: on the test split under red gains
#: 1.12-1.32 its log error spans -0.21 to +0.12 (1st-99th percentile; median -0.02, it errs low by design),
#: and an image left ~15% too red looks unfamiliar to the models. So a frame whose background was
#: extrapolated also gets references at these log steps from the estimate (`WhiteReference.alternatives`)
#: and the models' content and energy checks pick the one they know best (`device/optics/analyse.py`).
CLIPPED_ALTERNATIVES = (-0.1, 0.1, 0.2)
#: Stained pixels: mean of the referenced channels below this fraction of the background.
_STAINED_BELOW = 0.85
#: Fewer stained, unclipped pixels than this in the sample: no extrapolation (nothing to read it from).
_MIN_STAINED = 50
#: A background truly above 255 in red saturates red in nearly every bright pixel. Extrapolate only when
#: at least this fraction of the brightest 30% of pixels (by green + blue) reads 255 in red: a background
#: at the edge of clipping (B-ALL images as they are: 34-43%) is taken as it reads; red x1.12: 66-100%.
_MIN_CLIPPED_BRIGHT = 0.6


def _small(rgb: np.ndarray) -> np.ndarray:
    """A strided sample of the image (a view: statistics need pixels, not a smooth resize)."""
    step = max(1, max(rgb.shape[:2]) // _ANALYSIS_SIDE)
    return rgb[::step, ::step]


def _background_pool(small: np.ndarray) -> np.ndarray | None:
    """The per-channel median of the background candidates (float, 0-255), or None."""
    if small.size == 0:
        return None
    total = small[:, 0].astype(np.int32) + small[:, 1] + small[:, 2]  # 20x faster than .sum(axis=1)
    k = max(1, int(len(small) * _TOP_FRACTION))
    top = small[np.argpartition(total, len(small) - k)[len(small) - k :]]
    unclipped = top.max(axis=1) < 255
    pool = top[unclipped] if unclipped.mean() >= 0.5 else top
    bg = np.median(pool.astype(np.float32), axis=0)
    if float(bg.max()) < _MIN_BACKGROUND or float(bg.min()) < 1.0:
        return None
    return bg


def stained_pixels(small: np.ndarray, bg: np.ndarray) -> np.ndarray | None:
    """The stained, unclipped pixels of an (N, 3) sample divided by the background `bg` (float), or None
    when there are fewer than `_MIN_STAINED` (nothing to read a stain from)."""
    pix = small[small.max(axis=1) < 255].astype(np.float32) / bg
    pix = pix[(pix.mean(axis=1) < _STAINED_BELOW) & (pix.min(axis=1) > 0.05)]
    return pix if len(pix) >= _MIN_STAINED else None


def _censored(small: np.ndarray, bg: np.ndarray) -> list[int]:
    """The colour channels (red, blue) whose background is clipped for real: it reads 255 and so do at
    least `_MIN_CLIPPED_BRIGHT` of the brightest 30% of pixels by their other two channels. Its true
    level is only known to be at least 255. Green is not counted: it reads 255 in most training images."""
    out = []
    k = max(1, int(len(small) * 0.3))
    for c in (0, 2):
        if bg[c] < 254.5:
            continue
        a, b = (j for j in range(3) if j != c)
        others = small[:, a].astype(np.int32) + small[:, b]
        bright = small[np.argpartition(others, len(small) - k)[len(small) - k :]]
        if (bright[:, c] == 255).mean() >= _MIN_CLIPPED_BRIGHT:
            out.append(c)
    return out


def _extrapolate_clipped(small: np.ndarray, bg: np.ndarray, censored: list[int]) -> np.ndarray:
    """`bg` with a `censored` background channel that has a prior (red) raised to its most plausible
    value."""
    out = bg.copy()
    clipped = [c for c in censored if c in _CENSORED_LOG_RATIO]
    if not clipped:
        return out
    pix = stained_pixels(small, bg)
    if pix is None:
        return out
    for c in clipped:
        excess = float(np.median(np.log(pix[:, c] / pix[:, 1]))) - _CENSORED_LOG_RATIO[c]
        out[c] = 255.0 * float(np.clip(np.exp(excess), 1.0, _MAX_EXTRAPOLATION))
    return out


def estimate_background(rgb: np.ndarray) -> np.ndarray | None:
    """The RGB colour (float, 0-255) the smear's background reads at, or None when none is visible.

    Candidates are the brightest `_TOP_FRACTION` of pixels by their channel sum. Candidates with a
    channel at 255 carry no colour information and are dropped, unless they are most of the candidates:
    then the background itself is clipped in that channel (a warm white balance clips red) and reads 255
    there. The per-channel median of the candidates is the estimate. This is what the frame shows (for
    thresholds: cells are darker than it); `reference_white` is what it would show without clipping.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got {rgb.shape}")
    return _background_pool(_small(rgb).reshape(-1, 3))


def reference_white(rgb: np.ndarray) -> np.ndarray | None:
    """The background's colour as the white reference: `estimate_background`, with a channel clipped in
    the background extrapolated above 255 from the stained pixels (module docstring), or None."""
    found = _reference(rgb)
    return None if found is None else found[0]


def _reference(rgb: np.ndarray) -> tuple[np.ndarray, list[int]] | None:
    """(`reference_white`, the censored channels) or None."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got {rgb.shape}")
    small = _small(rgb).reshape(-1, 3)
    bg = _background_pool(small)
    if bg is None:
        return None
    censored = _censored(small, bg)
    return _extrapolate_clipped(small, bg, censored), censored


def _gains(bg: np.ndarray, target: float) -> np.ndarray:
    return np.clip(target / bg, *_GAIN_RANGE).astype(np.float32)


def white_gains(rgb: np.ndarray, target: float = WHITE_LEVEL) -> np.ndarray | None:
    """Per-channel gains that map the background to a neutral `target`, or None (no background)."""
    bg = reference_white(rgb)
    return None if bg is None else _gains(bg, target)


def apply_gains(rgb: np.ndarray, gains: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """Multiply each channel by its gain (saturating at 255), through one lookup table per channel."""
    gains = np.asarray(gains, dtype=np.float32).reshape(3)
    levels = np.arange(256, dtype=np.float32)[:, None] * gains[None, :]
    lut = np.clip(np.rint(levels), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(np.ascontiguousarray(rgb, dtype=np.uint8), lut)


def _rebuild_clipped(rgb: np.ndarray, out: np.ndarray, gains: np.ndarray, channels: list[int]) -> None:
    """Pixels saturated in an extrapolated channel: at least their floor, and no less than the lower of
    their other channels (saturated background becomes neutral white, not cyan; a pink cell stays pink)."""
    for c in channels:
        sat = rgb[..., c] == 255
        if not sat.any():
            continue
        a, b = (j for j in range(3) if j != c)
        low = np.minimum(out[..., a], out[..., b])
        np.maximum(low, np.uint8(min(255.0, round(255.0 * float(gains[c])))), out=low)
        np.copyto(out[..., c], low, where=sat)  # a view: writes into `out`


class WhiteReference:
    """A frame's white reference: the background colour (a clipped channel extrapolated) and the gains
    that map it to a neutral `target`. Measured once per frame and applied to the frame or to a rescaled
    copy of it (the tiling path rescales first, so the lookup runs on fewer pixels)."""

    def __init__(
        self, background: np.ndarray, target: float = WHITE_LEVEL, censored: list[int] | None = None
    ):
        self.background = np.asarray(background, np.float32)
        self.target = float(target)
        self.gains = _gains(self.background, target)
        self.extrapolated = [c for c in range(3) if self.background[c] > 255.0]
        #: channels whose background is clipped in the frame (true level >= 255; red may be extrapolated)
        self.censored = sorted(set(censored or []) | set(self.extrapolated))

    def alternatives(self) -> list[WhiteReference]:
        """Other plausible references when the background is clipped in a channel (else none): each
        censored channel's background moved by the `CLIPPED_ALTERNATIVES` log steps (a channel read as
        255 has no estimate to err below: only the steps up), kept within 255 and `_MAX_EXTRAPOLATION`
        x 255; with two such channels every combination; duplicates dropped. The caller decides between
        them (`device/optics/analyse.py`: the one whose tiles look most familiar to the models)."""
        per_channel = []
        for c in self.censored:
            start = float(self.background[c])
            steps = (
                (0.0, *CLIPPED_ALTERNATIVES)
                if start > 255.0
                else (0.0, *(d for d in CLIPPED_ALTERNATIVES if d > 0))
            )
            per_channel.append(
                [float(np.clip(start * np.exp(d), 255.0, 255.0 * _MAX_EXTRAPOLATION)) for d in steps]
            )
        out: list[WhiteReference] = []
        seen = {tuple(np.round(self.background, 1))}
        for values in itertools.product(*per_channel) if per_channel else ():
            bg = self.background.copy()
            bg[self.censored] = values
            key = tuple(np.round(bg, 1))
            if key not in seen:
                seen.add(key)
                out.append(WhiteReference(bg, self.target, self.censored))
        return out

    def describe(self) -> dict:
        """For records: the background read (clipped channels extrapolated) and the gains applied."""
        return {
            "background": [round(float(v), 1) for v in self.background],
            "gains": [round(float(v), 4) for v in self.gains],
            "extrapolated": ["RGB"[c] for c in self.extrapolated],
            "clipped": ["RGB"[c] for c in self.censored],
        }

    @property
    def applied_background(self) -> np.ndarray:
        """The background's colour once `apply`d: the target, unless a gain hit its clamp."""
        return np.minimum(self.background * self.gains, 255.0).astype(np.float32)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """`rgb` (this frame, at any size) with its background mapped to the neutral target."""
        out = apply_gains(rgb, self.gains)
        if self.extrapolated:
            _rebuild_clipped(np.asarray(rgb), out, self.gains, self.extrapolated)
        return out


#: A channel at 255 in at least this fraction of the field has lost its stain to the camera, not only its
#: background: the B-ALL images under red and blue gains of 1.25 read 255 in blue in 99.9% of the pixels.
SATURATED_FIELD = 0.9


def saturation_hint(rgb: np.ndarray, channels: Sequence[int]) -> str | None:
    """For a field the models doubt: which of `channels` (those clipped in the background) read 255 in
    at least `SATURATED_FIELD` of the pixels, as advice for the technician; None when none does."""
    small = _small(rgb).reshape(-1, 3)
    if not len(small):
        return None
    names = ("red", "green", "blue")
    shares = {names[c]: float((small[:, c] == 255).mean()) for c in channels}
    found = {name: f for name, f in shares.items() if f >= SATURATED_FIELD}
    if not found:
        return None
    colours = " and ".join(found)
    shares_text = ", ".join(f"{name} in {f:.0%} of the pixels" for name, f in found.items())
    return (
        f"the camera saturates {colours} across the field (255 {shares_text}: the stain there is "
        f"lost): lower the camera's {colours} gain or its exposure, or run `smearscope calibrate`"
    )


def measure_white(rgb: np.ndarray, target: float = WHITE_LEVEL) -> WhiteReference | None:
    """The frame's `WhiteReference`, or None when no background is seen (leave the frame as it is)."""
    found = _reference(rgb)
    return None if found is None else WhiteReference(found[0], target, found[1])


def normalise_background(rgb: np.ndarray, target: float = WHITE_LEVEL) -> np.ndarray:
    """The image with its background mapped to neutral `target`; unchanged when no background is seen."""
    ref = measure_white(rgb, target)
    if ref is None:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return ref.apply(rgb)
