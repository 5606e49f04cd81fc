"""Bundle loading refuses tampered or inconsistent bundles with a message naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.errors import BundleError
from device.models.bundle import load_bundle
from device.models.model import TFLiteModel


def _edit_manifest(bundle: Path, **changes) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_tiny_bundle_loads_and_predicts(tiny_bundle: Path) -> None:
    model = TFLiteModel(load_bundle(tiny_bundle))
    m = model.manifest
    assert m.label_ids == ["Benign", "Early", "Pre", "Pro"]
    assert m.input.dtype == "uint8" and m.quantization == "int8"
    assert model.has_cam
    out = model.predict(np.full((m.input.height, m.input.width, 3), 200, np.uint8))
    assert out.probabilities.shape == (4,)
    assert abs(float(out.probabilities.sum()) - 1.0) < 1e-5
    assert out.cam is not None and out.cam.ndim == 3 and out.cam.shape[-1] == 4


def test_wrong_hash_is_refused(tiny_bundle: Path) -> None:
    with open(tiny_bundle / "model.tflite", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match=r"sha256 of model\.tflite .* the manifest says"):
        load_bundle(tiny_bundle)


def test_label_count_mismatch_is_refused(tiny_bundle: Path) -> None:
    labels = json.loads((tiny_bundle / "manifest.json").read_text())["labels"][:3]
    _edit_manifest(tiny_bundle, labels=labels)
    with pytest.raises(BundleError, match="model outputs 4 classes, the manifest lists 3 labels"):
        TFLiteModel(load_bundle(tiny_bundle))


def test_input_size_mismatch_is_refused(tiny_bundle: Path) -> None:
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    _edit_manifest(tiny_bundle, input={**data["input"], "width": 96, "height": 96})
    with pytest.raises(BundleError, match=r"input tensor shape is \(1, 64, 64, 3\), the manifest says"):
        TFLiteModel(load_bundle(tiny_bundle))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 99}, "schema_version 99 is not supported"),
        ({"temperature": 0.0}, "temperature 0.0 is outside"),
        ({"abstain_threshold": 1.5}, "abstain_threshold 1.5 is outside"),
        ({"outputs": []}, "no 'probabilities' entry"),
    ],
)
def test_bad_manifest_fields_are_named(tiny_bundle: Path, change: dict, message: str) -> None:
    _edit_manifest(tiny_bundle, **change)
    with pytest.raises(BundleError, match=message):
        load_bundle(tiny_bundle)


def test_missing_and_unreadable_manifest(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (tiny_bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(tiny_bundle)
    (tiny_bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tiny_bundle)


def test_missing_model_file(tiny_bundle: Path) -> None:
    (tiny_bundle / "model.tflite").unlink()
    with pytest.raises(BundleError, match="model file model.tflite is missing"):
        load_bundle(tiny_bundle)
