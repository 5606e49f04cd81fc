"""Write a model bundle directory: model.tflite + manifest.json (+ MODEL.md, report/ by the caller)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.release import new_version
from device.fsutil import atomic_write_bytes
from device.models.bundle import (
    MODEL_FILE,
    InputSpec,
    Label,
    Manifest,
    OutputSpec,
    sha256_file,
    write_manifest,
)

#: Display names and malignancy of known class folders: the B-ALL dataset's (hematogones are benign
#: precursors; the three others are B-ALL subtypes), C-NMC's ALL/HEM and the FAB subtypes L1-L3.
#: Other labels get malignant=None, which the slide-level call treats as malignant (refer, never miss).
KNOWN_LABELS: dict[str, tuple[str, bool]] = {
    "Benign": ("Benign (hematogones)", False),
    "Early": ("Early Pre-B ALL (malignant)", True),
    "Pre": ("Pre-B ALL (malignant)", True),
    "Pro": ("Pro-B ALL (malignant)", True),
    "ALL": ("ALL lymphoblast (malignant)", True),
    "HEM": ("Normal B cell (HEM)", False),
    "L1": ("ALL FAB L1 (malignant)", True),
    "L2": ("ALL FAB L2 (malignant)", True),
    "L3": ("ALL FAB L3 (malignant)", True),
}


def make_labels(ids: Sequence[str], data_roots: Sequence[Path] = ()) -> list[Label]:
    """Labels with display names and malignancy: a data folder's `labels.json` (device/datasets/labels.py)
    declares its own; otherwise KNOWN_LABELS, else malignant=None (refer, never miss)."""
    from device.datasets.labels import read_labels

    declared: dict = {}
    for root in data_roots:
        declared.update(read_labels(Path(root)) or {})
    out = []
    for lid in ids:
        if lid in declared:
            d = declared[lid]
            out.append(Label(lid, d.display, d.malignant, white=d.white))
            continue
        display, malignant = KNOWN_LABELS.get(lid, (lid, None))
        out.append(Label(lid, display, malignant))
    return out


def tflite_outputs(model_path: Path, k: int) -> list[OutputSpec]:
    """Read the output tensors of a .tflite file and name them.

    At conversion the export model is known (convert/content.add_outputs): (1, K) = probabilities,
    (1, h, w, K) = cam, (1, 1) = ood_distance (K >= 2). The TFLite tensor name of each is recorded in the
    manifest, and the device maps outputs BY THAT NAME, so a distance or embedding output can never be
    read as probabilities whatever order the converter put them in.
    """
    from device.models.runtime import make_interpreter

    interp, _ = make_interpreter(str(model_path))
    outs = []
    for det in interp.get_output_details():
        shape = tuple(int(x) for x in det["shape"])
        if len(shape) == 2 and shape[1] == k and k != 1:
            outs.append(OutputSpec("probabilities", shape, det["name"]))
        elif len(shape) == 4 and shape[-1] == k:
            outs.append(OutputSpec("cam", shape, det["name"]))
        elif shape == (1, 1):
            outs.append(OutputSpec("ood_distance", shape, det["name"]))
    order = {"probabilities": 0, "cam": 1, "ood_distance": 2}
    outs.sort(key=lambda o: order[o.name])
    return outs


def write_bundle(
    out_dir: str | Path,
    tflite: bytes,
    *,
    name: str,
    architecture: str,
    labels: Sequence[str],
    input_size: tuple[int, int],
    data_roots: Sequence[Path] = (),
    input_dtype: str,
    resize: str = "center_crop",
    white_reference: str | None = None,
    um_per_px: float | None = None,
    quantization: str = "int8",
    temperature: float = 1.0,
    abstain_threshold: float = 0.5,
    **extra: dict[str, Any],
) -> Manifest:
    """Write model.tflite and manifest.json atomically. `data_roots`: the training data folders (their
    `labels.json`, if any, declares the labels). `extra` sets metrics, calibration, verification,
    provenance (dicts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILE
    atomic_write_bytes(model_path, tflite)
    manifest = Manifest(
        name=name,
        architecture=architecture,
        labels=make_labels(labels, data_roots),
        input=InputSpec(
            int(input_size[0]), int(input_size[1]), input_dtype, resize, um_per_px, white_reference
        ),
        outputs=tflite_outputs(model_path, len(labels)),
        sha256=sha256_file(model_path),
        quantization=quantization,
        temperature=float(temperature),
        abstain_threshold=float(abstain_threshold),
        version=new_version(),  # signed with the manifest: stations refuse an older release over it
    )
    for key, value in extra.items():
        if not hasattr(manifest, key):
            raise TypeError(f"unknown manifest field {key!r}")
        setattr(manifest, key, _jsonable(value))
    write_manifest(out, manifest)
    return manifest


def update_manifest(out_dir: str | Path, **fields: Any) -> Manifest:
    """Re-read a bundle's manifest, set fields, and write it back atomically. An edited manifest is a
    new release (`version` now), so its older signed form can never replace it on a station."""
    from device.models.bundle import read_manifest

    manifest = read_manifest(out_dir)
    manifest.version = new_version()
    for key, value in fields.items():
        if not hasattr(manifest, key):
            raise TypeError(f"unknown manifest field {key!r}")
        setattr(manifest, key, _jsonable(value))
    write_manifest(Path(out_dir), manifest)
    return manifest


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> plain Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
