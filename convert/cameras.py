"""Other stations' cameras for the content check's statistics (`convert --camera-copies`).

The device white-references every frame on the smear's background (`device/optics/colour.py`). Where a
camera's white balance clips the background in red AND blue (gains ~1.2-1.25 on the B-ALL images, whose
blue background already reads ~249), nearly every pixel of the clipped channel reads 255: its stain is
gone, and no reference can bring it back. The robust training's white-balance jitter reaches such corners
about 1% of the time, and the content statistics were fitted on clean images and ONE augmented copy of
each; so the content check called 13% of such fields unfamiliar (test split, float features, MobileNetV2
with outlier exposure), against 1.6% for either gain alone.

A camera copy is a TRAINING image as another station's camera would deliver it: red and blue multiplied
by gains from the white-balance range a second station shows (issue 10's tints, `GAIN_RANGE`), clipped
at 255, through a tone curve from the gamma range a second station shows (issue 11's mild shifts,
`GAMMA_RANGE`), then prepared exactly as the device prepares a frame (background white reference,
resize). Half of the gains' draws sit at the range's edges, where the clipping happens (`EDGE_SHARE`);
gamma is drawn log-uniform (no cliff at its ends; a tone curve scales every channel's optical density by
gamma, the direction in which the far-stain probes' twice-darker fields lie, so its end is not stressed).
The copies join the familiar side of the content statistics at every stride and of the stain-outlier
step; the pooled embedding's statistics and every threshold stay fitted on clean images as before, so
the check does not loosen on unshifted input. The out-of-distribution probes (convert/ood.py) are made
from test images; these copies are made from training images only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from device.preprocess import prepare, read_image

#: Red and blue gains of the copies (green is the white balance's reference): issue 10's tint range.
GAIN_RANGE = (0.8, 1.25)
#: The camera's tone curve, out = 255 (in / 255) ** gamma: the mild range a second station shows.
GAMMA_RANGE = (0.8, 1.3)
#: Fraction of each draw within `EDGE_WIDTH` (log) of either end of its range.
EDGE_SHARE = 0.5
EDGE_WIDTH = 0.04


def _draw(rng: np.random.Generator, span: tuple[float, float], edges: float = EDGE_SHARE) -> float:
    """Log-uniform over `span`, or (`edges` of the time) within `EDGE_WIDTH` of one of its ends."""
    lo, hi = np.log(span)
    if rng.random() < edges:
        return float(
            np.exp(
                hi - rng.uniform(0.0, EDGE_WIDTH) if rng.random() < 0.5 else lo + rng.uniform(0.0, EDGE_WIDTH)
            )
        )
    return float(np.exp(rng.uniform(lo, hi)))


def draw_gains(rng: np.random.Generator) -> np.ndarray:
    """(3,) RGB gains: green 1, red and blue each drawn from `GAIN_RANGE` (`_draw`)."""
    gains = np.ones(3)
    for c in (0, 2):
        gains[c] = _draw(rng, GAIN_RANGE)
    return gains


def draw_gamma(rng: np.random.Generator) -> float:
    """A tone curve's gamma, log-uniform over `GAMMA_RANGE`."""
    return _draw(rng, GAMMA_RANGE, edges=0.0)


def camera_copy(
    rgb: np.ndarray,
    gains: np.ndarray,
    size: tuple[int, int],
    resize: str,
    white_reference: str | None,
    gamma: float = 1.0,
) -> np.ndarray:
    """`rgb` (a raw image) through a camera with `gains` (clipped at 255) and a `gamma` tone curve, then
    the device's `prepare`."""
    linear = np.clip(rgb.astype(np.float32) * np.asarray(gains, np.float32), 0, 255)
    shot = np.rint(255.0 * (linear / 255.0) ** np.float32(gamma)).astype(np.uint8)
    return prepare(shot, size, resize, white_reference=white_reference)


def camera_copies(
    paths: Sequence[str | Path],
    rng: np.random.Generator,
    size: tuple[int, int],
    resize: str,
    white_reference: str | None,
) -> np.ndarray:
    """(N, H, W, 3) uint8: one camera copy of each image file, each with its own gains and gamma."""
    out = []
    for p in paths:
        gains = draw_gains(rng)
        out.append(camera_copy(read_image(p), gains, size, resize, white_reference, draw_gamma(rng)))
    return np.stack(out)
