"""Reinhard colour transfer (Reinhard et al. 2001, "Color transfer between images") in CIELAB.

Each channel of L*a*b* is shifted and scaled so its mean and standard deviation become the target's.
Used two ways: training copies (a crop onto the statistics of a random crop of EITHER lab, so colour
cannot tell the labs apart) and the cross-lab evaluation (each test crop onto the OTHER lab's mean
statistics).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

#: A channel this flat (L*a*b* units) is not stretched: a uniform image has no colour to transfer.
MIN_STD = 1e-3


@dataclass(frozen=True)
class LabStats:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def to_lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def from_lab(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def lab_stats(rgb: np.ndarray) -> LabStats:
    lab = to_lab(rgb).reshape(-1, 3)
    m, s = lab.mean(axis=0), lab.std(axis=0)
    return LabStats(tuple(float(x) for x in m), tuple(float(x) for x in s))  # type: ignore[arg-type]


def mean_stats(stats: Iterable[LabStats]) -> LabStats:
    """A lab's typical statistics: the mean of its images' means and of their deviations."""
    rows = list(stats)
    if not rows:
        raise ValueError("no statistics to average")
    m = np.mean([r.mean for r in rows], axis=0)
    s = np.mean([r.std for r in rows], axis=0)
    return LabStats(tuple(float(x) for x in m), tuple(float(x) for x in s))  # type: ignore[arg-type]


def reinhard(rgb: np.ndarray, target: LabStats, source: LabStats | None = None) -> np.ndarray:
    """`rgb` with its L*a*b* mean and deviation moved to `target`'s (source: its own by default)."""
    lab = to_lab(rgb)
    src = source or lab_stats(rgb)
    out = np.empty_like(lab)
    for c in range(3):
        s = src.std[c]
        scale = target.std[c] / s if s > MIN_STD else 1.0
        out[..., c] = (lab[..., c] - src.mean[c]) * scale + target.mean[c]
    out[..., 0] = np.clip(out[..., 0], 0.0, 100.0)
    return from_lab(out)
