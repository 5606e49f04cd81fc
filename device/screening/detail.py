"""Is a frame's detail fit for the cell classifier? Sensor noise and JPEG blocks, measured where the
classifier sees them.

The cell classifier reads a 24 µm square brought to the soft training source's pitch
(`CellSpec.pitch_um`, 0.479 µm/px); at that pitch heavy sensor noise and strong JPEG compression turn
blasts into cells it calls benign with confidence (`benchmarks/second_reading.py`, shifted copies), while
the red-cell, colour and content checks let such frames through. So the cell path measures both and a
field beyond either limit keeps its cells but gets no call (the record abstains, saying why and what to
do):

- **noise**: Immerkær's fast estimate of the noise standard deviation (grey levels; the Laplacian-
  difference mask, J. Immerkær 1996, "Fast noise variance estimation") on the frame brought to the
  pitch (INTER_AREA, as the crops are): a finer camera's noise is averaged away as it is in the crops;
- **blockiness**: the mean grey step across 8-px block borders over the mean step elsewhere, on the frame
  as given (the JPEG grid is the file's own): 1.0 for a frame without blocks; measured only on frames
  at least half as coarse as the pitch (finer ones' blocks are averaged away in the crops).

Limits (`[quality] max_noise` 6, `max_blockiness` 1.6): on the B-ALL images (every sixth, 429) the clean
ones measure noise 0.5-3.0 and blockiness 0.94-1.11; Gaussian noise of sigma 6 gives 3.4-5.1 and of sigma
15 7.5-10.2; JPEG quality 50 gives blockiness 1.19-1.53 and quality 15 1.66-2.56. The cells read the
milder copies as they read the clean ones (80 fields each: every call right but one uncertain), so only
the strong ones are turned away, all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_LAPLACE_DIFF = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
BLOCK = 8  # JPEG's block size (px)
STEP_FLOOR = 0.5  # grey levels
BLOCK_WINDOW = 512  # px: enough block borders to read, at a fixed cost whatever the frame size
#: Blocks are measured on pictures at least this fraction as coarse as the pitch: the other lab's
#: single-cell pictures (0.11 µm/px, a fourth of the pitch) read 1.21-1.67 from their own compression,
#: which their crops average away (their cells read right).
MIN_BLOCK_SCALE = 0.5


@dataclass(frozen=True)
class Detail:
    noise: float  # grey levels (standard deviation) at the classifier's pitch
    blockiness: float | None  # 1.0: no block borders; None: not measured (pixels far finer than the pitch)
    problem: str | None  # why the field gets no call, None when its detail is fit

    def to_dict(self) -> dict[str, float | str | None]:
        return {
            "noise": round(self.noise, 3),
            "blockiness": round(self.blockiness, 3) if self.blockiness is not None else None,
            "problem": self.problem,
        }


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkær's estimate of the noise standard deviation of a grey image (grey levels)."""
    h, w = grey.shape[:2]
    if h < 3 or w < 3:
        return 0.0
    conv = cv2.filter2D(grey.astype(np.float32), -1, _LAPLACE_DIFF)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


def blockiness(grey: np.ndarray) -> float:
    """Mean absolute grey step across 8-px block borders over the mean step elsewhere (both ways), on
    the central `BLOCK_WINDOW` px square at most (cut on the block grid, so its borders stay borders)."""
    h, w = grey.shape[:2]
    y0 = max(0, (h - BLOCK_WINDOW) // 2) // BLOCK * BLOCK
    x0 = max(0, (w - BLOCK_WINDOW) // 2) // BLOCK * BLOCK
    g = grey[y0 : y0 + BLOCK_WINDOW, x0 : x0 + BLOCK_WINDOW].astype(np.float32)
    steps_on = steps_off = 0.0
    for d in (np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0)).T):
        border = (np.arange(d.shape[1]) % BLOCK) == BLOCK - 1
        if border.any() and (~border).any():
            steps_on += float(d[:, border].mean())
            steps_off += float(d[:, ~border].mean())
    # a floor of half a grey level per step: a flat or drawn picture (few steps anywhere) reads 1.0
    return (steps_on + 2 * STEP_FLOOR) / (steps_off + 2 * STEP_FLOOR)


def measure_detail(
    rgb: np.ndarray, um_per_px: float, pitch_um: float | None, *, max_noise: float, max_blockiness: float
) -> Detail:
    """The frame's noise at `pitch_um` (the frame's own pixels when it is coarser or no pitch is
    declared) and its blockiness as given, against the limits."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    f = um_per_px / pitch_um if pitch_um else 1.0
    # an 8-px block of a picture more than twice finer than the pitch is averaged away in the crops
    block = blockiness(grey) if f >= MIN_BLOCK_SCALE else None
    if f < 1.0:
        h, w = grey.shape
        grey = cv2.resize(grey, (max(3, round(w * f)), max(3, round(h * f))), interpolation=cv2.INTER_AREA)
    noise = noise_sigma(grey)
    problem = None
    if noise > max_noise:
        problem = (
            f"image too noisy to read its cells (noise {noise:.1f} grey levels at the models' detail, "
            f"at most {max_noise:g}): lower the camera's gain or lengthen its exposure"
        )
    elif block is not None and block > max_blockiness:
        problem = (
            f"image too compressed to read its cells (JPEG blocks {block:.2f}, at most {max_blockiness:g}): "
            "send the original picture or a higher JPEG quality"
        )
    return Detail(noise, block, problem)
