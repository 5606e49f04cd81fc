"""Other stations' cameras for the content check's statistics (`convert --camera-copies`).

The device white-references every frame on the smear's background (`device/colour.py`). Where a
camera's white balance clips the background in red AND blue (gains ~1.2-1.25 on the B-ALL images, whose
blue background already reads ~249), nearly every pixel of the clipped channel reads 255: its stain is
gone, and no reference can bring it back. The robust training's white-balance jitter rarely reaches such
corners, and without camera copies the content statistics see only clean images and one augmented copy of
each, so the content check calls many such fields unfamiliar, far more than for either gain alone.

A camera copy is a TRAINING image as another station's camera would deliver it: red and blue multiplied
by gains from the white-balance range a second station shows (`GAIN_RANGE`), clipped
at 255, then prepared exactly as the device prepares a frame (background white reference, resize). Half
of the draws sit at the range's edges, where the clipping happens (`EDGE_SHARE`). The copies join the
familiar side of the content statistics at every stride and of the stain-outlier step; the pooled
embedding's statistics and every threshold stay fitted on clean images, so the check does not
loosen on unshifted input. The out-of-distribution probes (convert/ood.py) are made from test images;
these copies are made from training images only.

One copy per image, with the stride-8 score kept: it gives back part of the "uncertain" a strong tint
costs while every far-stain probe stays refused; two copies per image, or dropping the stride-8 score,
give back more of it but let far-stain probes or heavy noise through. The figures of each choice:
runs/mobilenetv2-all4-288oe5/candidate_*.md; the shipped recipe's: docs/results.md ("Recipe",
"Acquisition") and benchmarks/results/acquisition_eval_auto_tints.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from device.preprocess import prepare, read_image

#: Red and blue gains of the copies (green is the white balance's reference): the tint range
#: `benchmarks/acquisition_eval.py` renders.
GAIN_RANGE = (0.8, 1.25)
#: Fraction of each channel's draws within `EDGE_WIDTH` (log) of either end of the range.
EDGE_SHARE = 0.5
EDGE_WIDTH = 0.04


def draw_gains(rng: np.random.Generator) -> np.ndarray:
    """(3,) RGB gains: green 1, red and blue each log-uniform over `GAIN_RANGE`, or (`EDGE_SHARE` of the
    time) near one of its ends."""
    lo, hi = np.log(GAIN_RANGE)
    gains = np.ones(3)
    for c in (0, 2):
        if rng.random() < EDGE_SHARE:
            end = hi if rng.random() < 0.5 else lo
            g = end - np.sign(end) * rng.uniform(0.0, EDGE_WIDTH)
        else:
            g = rng.uniform(lo, hi)
        gains[c] = np.exp(g)
    return gains


def camera_copy(
    rgb: np.ndarray,
    gains: np.ndarray,
    size: tuple[int, int],
    resize: str,
    white_reference: str | None,
) -> np.ndarray:
    """`rgb` (a raw image) through a camera with `gains` (clipped at 255), then the device's `prepare`."""
    shot = np.clip(rgb.astype(np.float32) * np.asarray(gains, np.float32), 0, 255).astype(np.uint8)
    return prepare(shot, size, resize, white_reference=white_reference)


def camera_copies(
    paths: Sequence[str | Path],
    rng: np.random.Generator,
    size: tuple[int, int],
    resize: str,
    white_reference: str | None,
) -> np.ndarray:
    """(N, H, W, 3) uint8: one camera copy of each image file, each with its own gains."""
    return np.stack(
        [camera_copy(read_image(p), draw_gains(rng), size, resize, white_reference) for p in paths]
    )
