"""Check a converted bundle against its Keras model on the test split, with the DEVICE's code path.

The TFLite side runs through `device.models.bundle.load_bundle` + `device.models.model.TFLiteModel` on
`device.preprocess.load_for_model`, i.e. exactly what a station runs; the Keras side gets the same
arrays as float32.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.models.bundle import load_bundle
from device.models.model import TFLiteModel
from device.preprocess import load_for_model


def load_arrays(
    paths: Sequence[str | Path], size: tuple[int, int], resize: str, *, white_reference: str | None = None
) -> np.ndarray:
    """(N, H, W, 3) uint8: the arrays training and the device feed."""
    return np.stack([load_for_model(p, size, resize, white_reference=white_reference) for p in paths])


def keras_probabilities(model, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Probabilities of a single-output Keras model on raw uint8 images."""
    out = model.predict(images.astype(np.float32), batch_size=batch, verbose=0)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out, dtype=np.float32)


def device_outputs(
    bundle_dir: str | Path,
    images: np.ndarray,
    *,
    progress: bool = False,
    desc: str = "tflite",
    distances: list | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The bundle's own softmax (before temperature) per image, run by device.models.model.TFLiteModel, and
    the logit energy from its CAM output (None when the bundle has no CAM). When `distances` is a list,
    the content-check output of each image is appended to it (bundles with an `ood_distance` output)."""
    from device.models.ensemble import energy

    model = TFLiteModel(load_bundle(bundle_dir))
    probs, energies = [], []
    for img in tqdm(images, desc=desc, unit="img", disable=not progress, file=sys.stderr):
        out = model.predict(img, with_cam=True)
        probs.append(out.probabilities)
        if out.cam is not None:
            energies.append(energy(out.cam))
        if distances is not None and out.ood_distance is not None:
            distances.append(out.ood_distance)
    return np.stack(probs).astype(np.float32), (np.array(energies) if energies else None)


def device_probabilities(bundle_dir: str | Path, images: np.ndarray, **kw) -> np.ndarray:
    return device_outputs(bundle_dir, images, **kw)[0]


def compare(reference: np.ndarray, candidate: np.ndarray, y: np.ndarray) -> dict:
    """Agreement and accuracy of `candidate` (TFLite) against `reference` (Keras) on labels `y`."""
    ref_pred = reference.argmax(1)
    cand_pred = candidate.argmax(1)
    ref_acc = float((ref_pred == y).mean())
    cand_acc = float((cand_pred == y).mean())
    diff = np.abs(reference - candidate)
    return {
        "n": int(len(y)),
        "agreement": float((ref_pred == cand_pred).mean()),
        "keras_accuracy": ref_acc,
        "tflite_accuracy": cand_acc,
        "accuracy_diff": cand_acc - ref_acc,
        "max_probability_diff": float(diff.max()),
        "mean_probability_diff": float(diff.mean()),
    }
