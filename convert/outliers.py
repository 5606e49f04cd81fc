"""A stain-outlier score on the model's own pooled embedding (outlier exposure, linear).

The robust training teaches the models to see through stain and camera shifts, so a smear re-coloured far
past any real stain (haematoxylin or eosin at a third or at twice their amount, every channel's optical
density scaled its own way) still sits close to a class mean in the pooled embedding: the class-conditional
Mahalanobis distance (convert/content.py) cannot tell it from a familiar field. The embedding still
carries the stain, though, in a few directions: a logistic regression separates such re-colourings from
the training images and their robust-augmented copies (on the validation split, AUC 0.99 for the shipped
MobileNetV2). This is Hendrycks et al.'s "outlier exposure" (ICLR 2019) reduced to a linear probe on
frozen features: the model is not retrained, the probe is one Dense(1) sigmoid in the exported graph.

What it is fitted on (every image is the device's prepared input, white-referenced):
- familiar (0): the training images as they are, and one copy of each through the run's own robust
  augmentation (stain ±15%, white balance, gamma, blur, noise, JPEG, ...): the shifts a real second
  station shows must not fire it;
- outliers (1): COPIES far re-colourings of each training image, drawn from `far_stain` (module doc of
  each family below); the ranges start well past the training jitter (x0.55 / x1.7 vs ±15%).

Its score is a steep step of the logit, `CAP · sigmoid(STEEP · (logit − L))`, where the operating logit L
is just above the highest clean validation image's logit: about 0 below L, about `CAP` above it. It
joins the content check's max of normalised scores (one output, one threshold; the device is unchanged):
the threshold fitted on the validation split afterwards (1.5-2.6 for the shipped models, int8 outputs)
sits between the two plateaus, so the step fires where the logit passes L, whatever that threshold is,
and the clean images' scores stay near 0 and do not move it.
The out-of-distribution probes of convert/ood.py are made from TEST images with their own seeds, so
they are never among the images this was fitted on; they do share its families (OD scaling), which the
note and model card say.

Its limit, measured on the shipped MobileNetV2's float features: fields whose whole stain is about twice
as dark (every channel x1.8-2.4) are still "familiar" to some images' embedding: their logits sit 1.6-6
units under the operating point with a linear or a 32-unit MLP head, even one fitted on that family alone,
so a few such probes are called by their own class without abstaining (models/*/report/robustness.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convert.ood import HED_FROM_RGB, RGB_FROM_HED, optical_density

#: The score's upper plateau: well above any content threshold (1.5-2.6), well inside the int8 output's
#: range (~13), so the threshold keeps its resolution.
CAP = 8.0
#: Steepness of the step (per logit unit): 0.56 logit under L the score is already below 1.
STEEP = 4.0
#: The operating logit is the highest clean validation image's logit plus this margin: the step must fire
#: on NO familiar validation image, or the content threshold (1.1 x the 99% quantile of the combined score
#: on the validation split) lands on the step's plateau and the step can never fire (measured: thresholds
#: 7.6 / 8.8 with the step at the 99.5% quantile).
OPERATING_MARGIN = 0.5
#: Far factors: below LOW or above HIGH (training's stain jitter is ±15%).
LOW = (0.25, 0.55)
HIGH = (1.7, 2.8)


def _far(rng: np.random.Generator, k: int) -> np.ndarray:
    return np.where(rng.random(k) < 0.5, rng.uniform(*LOW, k), rng.uniform(*HIGH, k))


def _from_density(od: np.ndarray) -> np.ndarray:
    return np.clip(255.0 * np.exp(-od), 0, 255).astype(np.uint8)


def hed_far(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Haematoxylin and eosin amounts each scaled far (at least one of them)."""
    hed = optical_density(rgb).reshape(-1, 3) @ HED_FROM_RGB
    gains = np.ones(3)
    gains[:2] = _far(rng, 2)
    if rng.random() < 0.3:  # only one of the two stains off
        gains[int(rng.integers(0, 2))] = rng.uniform(0.9, 1.1)
    return _from_density((hed * gains) @ RGB_FROM_HED).reshape(rgb.shape)


def channels_far(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every channel's optical density scaled by its own far factor (hue and depth changed)."""
    return _from_density(optical_density(rgb) * _far(rng, 3))


def depth_far(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The whole stain far lighter or darker (one factor for every channel)."""
    return _from_density(optical_density(rgb) * _far(rng, 1)[0])


def darker_far(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Over-stained (or a thick area): every channel's density far higher, each by its own factor.

    The hardest family: a field twice as dark still looks like a smear, and the robust training's gamma
    (up to 1.3) and stain jitter (±15%) reach about x1.5; `channels_far` draws all three factors high
    only one time in eight, and such probes were the ones the step missed."""
    return _from_density(optical_density(rgb) * rng.uniform(*HIGH, 3))


FAMILIES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "hed_far": hed_far,
    "channels_far": channels_far,
    "depth_far": depth_far,
    "darker_far": darker_far,
}

#: Far re-colourings per familiar image (each from a family drawn at random): the head's outlier class
#: needs more than one draw per image to cover four families' ranges; three put most far re-colourings
#: and twice-darker fields above the step while mild gamma, noise and stain shifts stay (almost all)
#: below it. `convert` reports its own figure in the bundle's `content_check.statistics` note.
COPIES = 3


def far_stain(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One far re-colouring of `rgb` from a family drawn at random."""
    fam = list(FAMILIES.values())[int(rng.integers(0, len(FAMILIES)))]
    return fam(rgb, rng)


def recolour(arrays: np.ndarray, rng: np.random.Generator, white_reference: str | None) -> np.ndarray:
    """A far re-colouring of each prepared image, prepared again as the device would (white reference)."""
    from device.colour import normalise_background

    out = np.empty_like(arrays)
    for i, a in enumerate(arrays):
        x = far_stain(a, rng)
        out[i] = normalise_background(x) if white_reference == "background" else x
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit(familiar: np.ndarray, outliers: np.ndarray, val_clean: np.ndarray, c: float = 0.1) -> dict:
    """A logistic regression on (N, D) pooled features; returns the graph's weights (standardisation
    folded in: logit = z·w + b) and the operating logit (above every `val_clean` logit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([familiar, outliers]).astype(np.float64)
    y = np.concatenate([np.zeros(len(familiar)), np.ones(len(outliers))])
    sc = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(sc.transform(x), y)
    w = clf.coef_[0] / sc.scale_
    b = float(clf.intercept_[0] - (sc.mean_ / sc.scale_) @ clf.coef_[0])
    operating = float(np.max(np.asarray(val_clean, np.float64) @ w + b)) + OPERATING_MARGIN
    return {"weights": w.astype(np.float32), "bias": b, "operating_logit": operating, "c": c}


def logits(features: np.ndarray, head: dict) -> np.ndarray:
    return np.asarray(features, np.float64) @ np.asarray(head["weights"], np.float64) + head["bias"]


def scores(features: np.ndarray, head: dict) -> np.ndarray:
    """The step score the graph computes, in numpy: CAP · sigmoid(STEEP · (logit − L))."""
    return CAP * _sigmoid(STEEP * (logits(features, head) - head["operating_logit"]))
