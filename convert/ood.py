"""Out-of-distribution probes: inputs a station may see that are not B-ALL smears from the training lab.

For each kind of probe we count how often the device's ensemble abstains ("uncertain, refer") versus
gives a confident malignant label — the outcome that must be rare. Probes are generated here (no
downloads): blank fields, heavy blur and colour/stain shifts of real test smears, noise, gradients,
checkerboards and text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np

from device.ensemble import Ensemble

SIZE = 224


def _blank(rng: np.random.Generator, level: int) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), level, np.float32) + rng.normal(0, 2, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _gradient(rng: np.random.Generator) -> np.ndarray:
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, SIZE, dtype=np.float32)
    ramp = t[:, None] if rng.random() < 0.5 else t[None, :]
    img = a[None, None, :] * (1 - ramp[..., None]) + b[None, None, :] * ramp[..., None]
    return np.broadcast_to(img, (SIZE, SIZE, 3)).astype(np.uint8).copy()


def _checkerboard(rng: np.random.Generator) -> np.ndarray:
    cell = int(rng.choice([4, 8, 16, 32]))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    mask = ((yy // cell + xx // cell) % 2).astype(bool)
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[mask] = rng.integers(0, 256, 3)
    img[~mask] = rng.integers(0, 256, 3)
    return img


def _text(rng: np.random.Generator) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), 245, np.uint8)
    words = ["SAMPLE", "LOT 42", "smear", "ID 0815", "TEST", "PATIENT", "slide 3"]
    for i in range(6):
        cv2.putText(
            img,
            str(rng.choice(words)),
            (8, 30 + 34 * i),
            cv2.FONT_HERSHEY_SIMPLEX,
            float(rng.uniform(0.6, 1.1)),
            (20, 20, 20),
            2,
            cv2.LINE_AA,
        )
    return img


def _blur(smear: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(smear, (0, 0), sigmaX=12)


def _hue_shift(smear: np.ndarray, shift: int) -> np.ndarray:
    hsv = cv2.cvtColor(smear, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _stain_shift(smear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another lab's staining: per-channel gain and offset, stronger than training's jitter."""
    gain = rng.uniform(0.6, 1.4, 3)
    offset = rng.uniform(-40, 40, 3)
    return np.clip(smear.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def probes(smears: Sequence[np.ndarray], n: int = 12, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """(kind, RGB uint8) pairs; `smears` are real test-split images to blur and colour-shift."""
    rng = np.random.default_rng(seed)
    makers: dict[str, Callable[[int], np.ndarray]] = {
        "blank_white": lambda i: _blank(rng, 250),
        "blank_gray": lambda i: _blank(rng, int(rng.integers(90, 200))),
        "noise": lambda i: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
        "gradient": lambda i: _gradient(rng),
        "checkerboard": lambda i: _checkerboard(rng),
        "text": lambda i: _text(rng),
    }
    if len(smears):
        pick = [smears[i % len(smears)] for i in range(n)]
        makers.update(
            {
                "heavy_blur": lambda i: _blur(pick[i]),
                "hue_shift_90": lambda i: _hue_shift(pick[i], 45),
                "channel_swap": lambda i: np.ascontiguousarray(pick[i][..., ::-1]),
                "stain_shift": lambda i: _stain_shift(pick[i], rng),
                "grayscale": lambda i: cv2.cvtColor(
                    cv2.cvtColor(pick[i], cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB
                ),
            }
        )
    for kind, make in makers.items():
        for i in range(n):
            yield kind, make(i)


def measure(ensemble: Ensemble, smears: Sequence[np.ndarray], n: int = 12, seed: int = 0) -> dict:
    """Per probe kind: fraction abstained, fraction with a confident malignant / benign label."""
    malignant = {lb.id: bool(lb.malignant) for lb in ensemble.labels}
    counts: dict[str, dict] = {}
    for kind, rgb in probes(smears, n, seed):
        pred = ensemble.classify(rgb, with_cam=False)
        c = counts.setdefault(kind, {"n": 0, "abstained": 0, "malignant": 0, "benign": 0, "conf": []})
        c["n"] += 1
        c["conf"].append(pred.confidence)
        if pred.abstained:
            c["abstained"] += 1
        elif malignant.get(pred.label):
            c["malignant"] += 1
        else:
            c["benign"] += 1
    out = {}
    for kind, c in counts.items():
        out[kind] = {
            "n": c["n"],
            "abstained": c["abstained"] / c["n"],
            "confident_malignant": c["malignant"] / c["n"],
            "confident_benign": c["benign"] / c["n"],
            "mean_confidence": float(np.mean(c["conf"])),
        }
    total = sum(c["n"] for c in counts.values())
    out["all"] = {
        "n": total,
        "abstained": sum(c["abstained"] for c in counts.values()) / total,
        "confident_malignant": sum(c["malignant"] for c in counts.values()) / total,
        "confident_benign": sum(c["benign"] for c in counts.values()) / total,
    }
    return out
