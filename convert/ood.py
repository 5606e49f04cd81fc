"""Out-of-distribution probes: inputs a station may see that are not B-ALL smears from the training lab.

For each kind of probe it counts how often the device's ensemble abstains ("uncertain, refer") versus
gives a confident malignant label — the outcome that must be rare. Probes are generated here (no
downloads): blank fields, noise, gradients, checkerboards, stripes, cv2 drawings and text; and from real
test smears: heavy blur, JPEG quality 3, stains re-coloured far outside the training range (hue rotated,
channels swapped, grey, haematoxylin/eosin amounts and per-channel optical densities scaled far past
training's jitter, the background staying white), fields with no white cell (the emptiest quarter-side
window mirrored out, same scale) and single cells enlarged 3x and 5x (the wrong scale).

A per-channel gain and offset over the whole image (background included) is not among them: that is
another camera's white balance and black level, which the station's white reference removes by design
and the models are trained to see through; benchmarks/robustness.py measures it as the `camera` shift,
where a right answer is expected, not an abstention.

`measure_checks` runs each probe once with every check and once with none, and derives what each of the
three "unfamiliar" checks (colour, energy, content) catches alone and together from the reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np

from device.models.ensemble import Ensemble

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


def _nucleus_mask(smear: np.ndarray) -> np.ndarray:
    """Pixels stained like a white cell (nucleus or cytoplasm: darker and clearly saturated), unlike
    the pale red cells and the background."""
    rgb = smear.astype(np.int32)
    hi, lo = rgb.max(-1), rgb.min(-1)
    saturation = (hi - lo) / np.maximum(hi, 1)
    return ((lo < 150) & (saturation > 0.3)) | ((rgb[..., 1] < 170) & (saturation > 0.25))


def _window_scores(mask: np.ndarray, side: int) -> np.ndarray:
    """Nucleus pixel count of every side x side window (integral image), (H-side+1, W-side+1)."""
    ii = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return ii[side:, side:] - ii[:-side, side:] - ii[side:, :-side] + ii[:-side, :-side]


def _rbc_only(smear: np.ndarray) -> np.ndarray:
    """A field without white cells at the SAME scale: the window of a quarter of the side with the
    fewest white-cell-coloured pixels (dilated, so no cell edge remains), mirrored out to full size."""
    h, w = smear.shape[:2]
    side = max(8, min(h, w) // 4)
    mask = cv2.dilate(_nucleus_mask(smear).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    scores = _window_scores(mask, side)
    y, x = np.unravel_index(int(np.argmin(scores)), scores.shape)
    return _mirror_tile(smear[y : y + side, x : x + side], h, w)


def _mirror_tile(crop: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = max(0, h - crop.shape[0]), max(0, w - crop.shape[1])
    out = cv2.copyMakeBorder(crop, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(out[:h, :w])


def _single_cell_enlarged(smear: np.ndarray, zoom: float) -> np.ndarray:
    """The most nucleus-rich window of 1/`zoom` of the side, enlarged back to full size: one cell at
    `zoom` times the model's scale (another microscope's magnification)."""
    h, w = smear.shape[:2]
    side = max(8, int(min(h, w) / zoom))
    scores = _window_scores(_nucleus_mask(smear), side)
    y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
    crop = smear[y : y + side, x : x + side]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC)


def _stripes(rng: np.random.Generator) -> np.ndarray:
    period = float(rng.uniform(4, 40))
    angle = float(rng.uniform(0, np.pi))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return (a * wave[..., None] + b * (1 - wave[..., None])).astype(np.uint8)


def _drawing(rng: np.random.Generator) -> np.ndarray:
    """Random circles, lines and filled polygons (cv2): round blobs that are not cells."""
    img = np.full((SIZE, SIZE, 3), int(rng.integers(180, 250)), np.uint8)
    for _ in range(int(rng.integers(8, 30))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            centre = tuple(int(c) for c in rng.integers(0, SIZE, 2))
            cv2.circle(img, centre, int(rng.integers(4, 40)), colour, int(rng.choice([-1, 2])), cv2.LINE_AA)
        elif kind == 1:
            p1, p2 = (tuple(int(c) for c in rng.integers(0, SIZE, 2)) for _ in range(2))
            cv2.line(img, p1, p2, colour, int(rng.integers(1, 6)), cv2.LINE_AA)
        else:
            pts = rng.integers(0, SIZE, (int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    return img


def _jpeg(smear: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(smear, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) if ok else smear


#: The Ruifrok-Johnston stain vectors (rows: haematoxylin, eosin, DAB) as skimage's rgb_from_hed and
#: convert/augment.py (TensorFlow-side); shared with convert/outliers.py.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def optical_density(smear: np.ndarray) -> np.ndarray:
    """-log(I / 255) per channel (float64); a zero pixel counts as 1."""
    return -np.log(np.maximum(smear.astype(np.float64), 1.0) / 255.0)


def _od_stain(smear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Haematoxylin and eosin amounts scaled far outside training's ±15% (x0.3-0.5 or x1.8-2.5 each)."""
    hed = optical_density(smear).reshape(-1, 3) @ HED_FROM_RGB
    gains = _far_gains(rng, 3)
    gains[2] = 1.0
    rgb = 255.0 * np.exp(-(hed * gains) @ RGB_FROM_HED)
    return np.clip(rgb, 0, 255).reshape(smear.shape).astype(np.uint8)


def _far_gains(rng: np.random.Generator, k: int) -> np.ndarray:
    """`k` gains each x0.3-0.5 or x1.8-2.5: far outside training's ±15% stain jitter."""
    return np.where(rng.random(k) < 0.5, rng.uniform(0.3, 0.5, k), rng.uniform(1.8, 2.5, k))


def _od_channels(smear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every channel's optical density scaled by its own far gain: the stain's hue and depth changed,
    the (near-zero density) background left white, so no white reference can undo it."""
    rgb = 255.0 * np.exp(-optical_density(smear) * _far_gains(rng, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


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
        "stripes": lambda i: _stripes(rng),
        "drawing": lambda i: _drawing(rng),
    }
    if len(smears):
        pick = [smears[i % len(smears)] for i in range(n)]
        makers.update(
            {
                "heavy_blur": lambda i: _blur(pick[i]),
                "hue_shift_90": lambda i: _hue_shift(pick[i], 45),
                "channel_swap": lambda i: np.ascontiguousarray(pick[i][..., ::-1]),
                "grayscale": lambda i: cv2.cvtColor(
                    cv2.cvtColor(pick[i], cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB
                ),
                "od_stain_extreme": lambda i: _od_stain(pick[i], rng),
                "od_channels_extreme": lambda i: _od_channels(pick[i], rng),
                "jpeg_q3": lambda i: _jpeg(pick[i], 3),
                "no_white_cells": lambda i: _rbc_only(pick[i]),
                "single_cell_x3": lambda i: _single_cell_enlarged(pick[i], 3.0),
                "single_cell_x5": lambda i: _single_cell_enlarged(pick[i], 5.0),
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


CHECK_SETS: dict[str, tuple[str, ...]] = {
    "all": ("colour", "energy", "content"),
    "no_colour": ("energy", "content"),
    "colour_only": ("colour",),
    "energy_only": ("energy",),
    "content_only": ("content",),
    "none": (),
}


def _fired(full: Ensemble, plain: Ensemble, rgb: np.ndarray) -> tuple[set[str], object]:
    """Which checks call `rgb` unfamiliar, read from the full ensemble's reason (every fired check is
    listed there), and the plain ensemble's prediction (no checks)."""
    reason = full.classify(rgb, with_cam=False).reason or ""
    fired = {
        name
        for name, marker in (
            ("colour", "colours unlike"),
            ("energy", " energy "),
            ("content", "content unlike"),
        )
        if marker in reason
    }
    return fired, plain.classify(rgb, with_cam=False)


def measure_checks(models, smears: Sequence[np.ndarray], n: int = 12, seed: int = 0) -> dict:
    """Per check set of CHECK_SETS: per probe kind the abstained / confident malignant / benign rates.

    The ensemble's own rule: abstain when any enabled check fires, else when the plain ensemble
    abstains (low confidence, disagreement)."""
    ens, plain = Ensemble(models), Ensemble(models, ood_check=False)
    malignant = {lb.id: bool(lb.malignant) for lb in ens.labels}
    rows = [(kind, *_fired(ens, plain, rgb)) for kind, rgb in probes(smears, n, seed)]
    out: dict[str, dict] = {}
    for set_name, checks in CHECK_SETS.items():
        counts: dict[str, list[int]] = {}
        for kind, fired, pred in rows:
            c = counts.setdefault(kind, [0, 0, 0, 0])
            c[0] += 1
            if fired & set(checks) or pred.abstained:
                c[1] += 1
            elif malignant.get(pred.label):
                c[2] += 1
            else:
                c[3] += 1
        rates = {
            kind: {
                "n": c[0],
                "abstained": c[1] / c[0],
                "confident_malignant": c[2] / c[0],
                "confident_benign": c[3] / c[0],
            }
            for kind, c in counts.items()
        }
        tot = [sum(c[i] for c in counts.values()) for i in range(4)]
        rates["all"] = {
            "n": tot[0],
            "abstained": tot[1] / tot[0],
            "confident_malignant": tot[2] / tot[0],
            "confident_benign": tot[3] / tot[0],
            "worst_kind_confident_malignant": max(r["confident_malignant"] for r in rates.values()),
        }
        out[set_name] = rates
    return out
