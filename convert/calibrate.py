"""Temperature scaling and the abstain threshold, fitted on the VALIDATION split.

Both are fitted on the probabilities the device itself computes (the bundle's TFLite softmax, through
`device.models.ensemble.apply_temperature`, which works from clipped probabilities), so what is measured here
is what a station does.

Abstain rule (documented in the manifest and the model card): after temperature scaling, the threshold
is the smallest confidence t on the grid 0.50, 0.51, ..., 0.99 such that the images of the validation
split with confidence >= t are classified with accuracy >= `target` (default 99.5%). The smallest such t
keeps the most images (coverage). If no t reaches the target, the t with the best selective accuracy
is used and the manifest says the target was missed.

Out-of-distribution floor: softmax confidence is often high on inputs that are not smears at all, so
bundles with a CAM output also get an energy floor (`calibration.ood_floor`): the energy of an image is
log-sum-exp of its class logits (the CAM's spatial mean); the floor is the `quantile` (default 1%)
quantile of the validation images' energies, so about that fraction of in-distribution images is
refused as "unlike the training images". device/models/ensemble.py applies it.

Colour check: every bundle also gets `calibration.colour_check`: the mean and inverse covariance of
the training images' colour statistics (CIELAB mean and log(1 + standard deviation) per channel,
computed on the model input) and a threshold = `factor` (1.5) x the 99.5% quantile of the validation images'
Mahalanobis distances. Blank fields, noise, text, gradients and, above all, smears stained or lit
unlike the training lab's fall far outside; a station in a new lab therefore answers "uncertain" until
the model is re-trained or re-calibrated on that lab's images (by design).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from device.models.ensemble import apply_temperature, colour_stats

#: Temperature only ever SOFTENS (T >= 1). On a validation split the model classifies (almost)
#: perfectly, the NLL keeps falling as T -> 0, and a sharpened model is confident on everything —
#: unfamiliar inputs included, whose low-confidence abstentions the out-of-distribution probes rely on.
#: An under-confident model stays as it is: safe side.
T_MIN, T_MAX = 1.0, 20.0


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    return float(-np.log(p).mean())


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins."""
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total)


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The T in [1, 20] minimising the NLL of apply_temperature(probs, T) (1-D search on log T)."""
    res = minimize_scalar(
        lambda log_t: nll(apply_temperature(probs, float(np.exp(log_t))), y),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(np.exp(res.x))
    # Keep T = 1 unless scaling really helps: a flat optimum on a near-perfect model means nothing.
    if nll(apply_temperature(probs, t), y) >= nll(probs, y) - 1e-6:
        return 1.0
    return round(t, 4)


def choose_threshold(
    probs: np.ndarray, y: np.ndarray, *, target: float = 0.995, floor: float = 0.5
) -> tuple[float, dict]:
    """See the module docstring. Returns (threshold, details for the manifest)."""
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    grid = np.round(np.arange(floor, 0.995, 0.01), 2)
    rows = []
    for t in grid:
        kept = conf >= t
        if kept.any():  # a threshold that keeps nothing proves nothing
            rows.append((float(t), float(correct[kept].mean()), float(kept.mean())))
    if not rows:
        rows = [(float(floor), 0.0, 0.0)]
    meeting = [r for r in rows if r[1] >= target]
    chosen = meeting[0] if meeting else max(rows, key=lambda r: (r[1], -r[0]))
    t, acc, coverage = chosen
    return t, {
        "rule": (
            f"smallest confidence threshold on the grid {floor:.2f}..0.99 whose selective accuracy on the "
            f"validation split is >= {target:.3f}"
        ),
        "target_selective_accuracy": target,
        "target_met": bool(meeting),
        "val_selective_accuracy": acc,
        "val_coverage": coverage,
    }


def calibrate(val_probs: np.ndarray, y_val: np.ndarray, *, target: float = 0.995) -> dict:
    """Fit T and the threshold; returns the manifest's `calibration` block plus `temperature` and
    `abstain_threshold`."""
    t = fit_temperature(val_probs, y_val)
    scaled = apply_temperature(val_probs, t)
    threshold, rule = choose_threshold(scaled, y_val, target=target)
    return {
        "temperature": t,
        "abstain_threshold": threshold,
        "calibration": {
            "split": "val",
            "n": int(len(y_val)),
            "method": "temperature scaling (NLL) on the bundle's TFLite probabilities",
            "nll_before": nll(val_probs, y_val),
            "nll_after": nll(scaled, y_val),
            "ece_before": ece(val_probs, y_val),
            "ece_after": ece(scaled, y_val),
            "threshold": rule,
        },
    }


def choose_ood_floor(val_energy: np.ndarray, *, quantile: float = 0.01) -> dict:
    """The manifest's `calibration.ood_floor` block (see the module docstring)."""
    floor = float(np.quantile(val_energy, quantile))
    return {
        "score": "energy",
        "threshold": round(floor, 4),
        "val_quantile": quantile,
        "val_refused": float((val_energy < floor).mean()),
        "rule": (
            f"abstain when the logit energy (log-sum-exp of the CAM's mean logits) is below {floor:.2f}, "
            f"the {100 * quantile:g}% quantile of the validation split's energies"
        ),
    }


def fit_colour_check(
    train_images: np.ndarray, val_images: np.ndarray, *, quantile: float = 0.995, factor: float = 1.5
) -> dict:
    """The manifest's `calibration.colour_check` block (see the module docstring); images are the
    prepared uint8 model inputs (N, H, W, 3)."""
    train = np.stack([colour_stats(im) for im in train_images])
    val = np.stack([colour_stats(im) for im in val_images])
    mean = train.mean(axis=0)
    cov = np.cov(train.T) + np.eye(train.shape[1]) * 1e-3
    inv = np.linalg.inv(cov)
    d = val - mean
    dist = np.sqrt(np.maximum(0.0, np.einsum("ij,jk,ik->i", d, inv, d)))
    threshold = float(factor * np.quantile(dist, quantile))
    return {
        "score": "lab_mahalanobis",
        "features": "CIELAB mean and log(1 + standard deviation) per channel of the model input",
        "mean": mean.round(6).tolist(),
        "inv_cov": inv.tolist(),
        "threshold": round(threshold, 4),
        "val_refused": float((dist > threshold).mean()),
        "rule": (
            f"abstain when the colour statistics' Mahalanobis distance from the training images exceeds "
            f"{threshold:.2f} ({factor:g} x the {100 * quantile:g}% quantile of the validation split's)"
        ),
    }


def fit_content_check(
    val_scores: np.ndarray, quantile: float = 0.99, margin: float = 1.1, outlier_step: float | None = None
) -> dict:
    """`calibration.content_check` from the device's `ood_distance` outputs on the validation split:
    threshold = `margin` x their `quantile` quantile (convert/content.py computes the score).

    `outlier_step`: the height of the stain-outlier step inside the score (convert/outliers.py). The
    validation images it fired on (int8 noise can lift a familiar image's logit over the step) sit on
    its plateau; the threshold is fitted on the others, or it would land on the plateau and the step
    could never fire. Those images are counted in `val_flagged`."""
    from convert.content import SCORE, choose_threshold

    scores = np.asarray(val_scores, np.float64)
    fitted_on = scores if outlier_step is None else scores[scores < outlier_step / 2]
    threshold = choose_threshold(fitted_on if len(fitted_on) else scores, quantile, margin)
    extra = {}
    if outlier_step is not None:
        extra = {"outlier_step": outlier_step, "val_step_fired": float((scores >= outlier_step / 2).mean())}
    return {
        "score": SCORE,
        "output": "ood_distance",
        "threshold": threshold,
        "quantile": quantile,
        "margin": margin,
        "val_median": float(np.median(scores)),
        "val_flagged": float((scores > threshold).mean()),
        "rule": "abstain when the model's ood_distance output (squared Mahalanobis distance of the pooled "
        "embedding to the nearest class mean, per feature; with earlier-layer scores, the max of each over "
        "its validation 99% quantile; with a stain-outlier step, the max with it) exceeds the threshold",
        **extra,
    }
