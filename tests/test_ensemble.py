"""The device's decision: temperature, soft vote, abstention, CAM — on the real tiny int8 bundle and on
stub models with fixed outputs (so the voting rules are tested exactly)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from device.errors import BundleError
from device.models.bundle import load_bundle
from device.models.ensemble import Ensemble, apply_temperature, heatmap_overlay
from device.models.model import RawOutput, TFLiteModel
from device.preprocess import prepare, read_image


class StubModel:
    """Quacks like TFLiteModel: a manifest and fixed probabilities (and optional CAM)."""

    def __init__(self, manifest, probs, cam=None, name=None):
        self.manifest = manifest
        if name:
            self.manifest = type(manifest)(**{**manifest.__dict__, "name": name})
        self._out = RawOutput(np.asarray(probs, np.float32), cam)

    @property
    def has_cam(self) -> bool:
        return self._out.cam is not None

    has_distance = False

    def predict(self, rgb, *, with_cam=True):
        return RawOutput(self._out.probabilities, self._out.cam if with_cam else None)

    def predict_many(self, xs, *, with_cam=True):
        n = len(xs)
        cam = self._out.cam
        cams = np.repeat(cam[None], n, 0) if with_cam and cam is not None else None
        return np.repeat(self._out.probabilities[None], n, 0), cams, None


@pytest.fixture
def manifest(tiny_bundle: Path):
    return load_bundle(tiny_bundle).manifest


def test_apply_temperature_batch_matches_rows_and_keeps_argmax() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.3, size=50).astype(np.float32)
    batch = apply_temperature(probs, 2.0)
    rows = np.stack([apply_temperature(p, 2.0) for p in probs])
    np.testing.assert_allclose(batch, rows, rtol=1e-6)
    np.testing.assert_allclose(batch.sum(1), 1.0, rtol=1e-5)
    assert (batch.argmax(1) == probs.argmax(1)).all()
    assert (batch.max(1) <= probs.max(1) + 1e-6).all()  # T > 1 softens
    assert apply_temperature(probs, 1.0) is probs


def test_soft_vote_and_thresholds(manifest) -> None:
    a = StubModel(manifest, [0.7, 0.1, 0.1, 0.1], name="a")
    b = StubModel(manifest, [0.5, 0.3, 0.1, 0.1], name="b")
    rgb = np.zeros((80, 100, 3), np.uint8)
    pred = Ensemble([a, b], threshold=0.55).classify(rgb)
    assert pred.label == "Benign" and pred.confidence == pytest.approx(0.6, abs=1e-6)
    assert not pred.abstained and pred.reason is None
    assert set(pred.per_model) == {"a", "b"}
    low = Ensemble([a, b], threshold=0.65).classify(rgb)
    assert low.abstained and "below threshold" in low.reason
    assert low.display.startswith("uncertain")
    assert low.label == "Benign"  # the arg-max is still reported


def test_disagreement_abstains(manifest) -> None:
    a = StubModel(manifest, [0.9, 0.1, 0.0, 0.0], name="a")
    b = StubModel(manifest, [0.1, 0.0, 0.9, 0.0], name="b")
    rgb = np.zeros((64, 64, 3), np.uint8)
    pred = Ensemble([a, b], threshold=0.3).classify(rgb)
    assert pred.abstained and pred.reason == "models disagree"
    assert not Ensemble([a, b], threshold=0.3, abstain_on_disagreement=False).classify(rgb).abstained


def test_default_threshold_is_the_strictest_member(manifest) -> None:
    a = StubModel(manifest, [1, 0, 0, 0], name="a")
    strict = type(manifest)(**{**manifest.__dict__, "name": "s", "abstain_threshold": 0.9})
    b = StubModel(strict, [1, 0, 0, 0])
    assert Ensemble([a, b]).threshold == 0.9


def test_temperature_from_manifest_is_applied(manifest) -> None:
    hot = type(manifest)(**{**manifest.__dict__, "temperature": 3.0})
    probs = [0.85, 0.05, 0.05, 0.05]
    pred = Ensemble([StubModel(hot, probs)], threshold=0.0).classify(np.zeros((64, 64, 3), np.uint8))
    expected = apply_temperature(np.array(probs, np.float32), 3.0)
    assert pred.confidence == pytest.approx(float(expected.max()), rel=1e-5)
    assert pred.confidence < 0.85


def test_cams_are_combined_for_the_chosen_label(manifest) -> None:
    cam_a = np.zeros((2, 2, 4), np.float32)
    cam_a[0, 0, 2] = 5.0
    cam_b = np.zeros((4, 4, 4), np.float32)
    cam_b[0, 0, 2] = 1.0
    a = StubModel(manifest, [0, 0, 1, 0], cam_a, name="a")
    b = StubModel(manifest, [0, 0, 1, 0], cam_b, name="b")
    pred = Ensemble([a, b]).classify(np.zeros((64, 64, 3), np.uint8))
    assert pred.cam is not None and pred.cam.shape == (4, 4)
    assert pred.cam.min() >= 0.0 and pred.cam.max() <= 1.0
    assert np.unravel_index(pred.cam.argmax(), pred.cam.shape) == (0, 0)
    assert Ensemble([a, b]).classify(np.zeros((64, 64, 3), np.uint8), with_cam=False).cam is None


def test_real_bundle_classifies_and_draws_heatmap(tiny_bundle: Path, sample_images: list[Path]) -> None:
    ens = Ensemble.from_dirs([str(tiny_bundle)])
    assert ens.has_cam and ens.label_ids == ["Benign", "Early", "Pre", "Pro"]
    rgb = read_image(sample_images[0])
    pred = ens.classify(rgb)
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert pred.cam is not None and pred.cam.ndim == 2
    overlay = heatmap_overlay(rgb, pred.cam)
    assert overlay.shape == rgb.shape and overlay.dtype == np.uint8
    assert json.dumps(pred.to_dict())  # JSON-serialisable


def test_cam_output_is_consistent_with_probabilities(tiny_bundle: Path, sample_images: list[Path]) -> None:
    """The CAM is per-location logits: softmax of its spatial mean is the model's softmax (up to int8)."""
    model = TFLiteModel(load_bundle(tiny_bundle))
    for path in sample_images:
        out = model.predict(prepare(read_image(path), (64, 64)))
        logits = out.cam.mean(axis=(0, 1))
        soft = np.exp(logits - logits.max())
        soft /= soft.sum()
        np.testing.assert_allclose(soft, out.probabilities, atol=0.05)


def test_ensemble_needs_the_same_labels(tiny_bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    data = json.loads((other / "manifest.json").read_text())
    data["name"] = "other"
    data["labels"] = list(reversed(data["labels"]))
    (other / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="same labels in the same order"):
        Ensemble.from_dirs([str(tiny_bundle), str(other)])
    with pytest.raises(BundleError, match="no model bundles"):
        Ensemble([])


def test_energy_floor_refuses_unfamiliar_inputs(manifest) -> None:
    from device.models.ensemble import energy

    guarded = type(manifest)(
        **{**manifest.__dict__, "calibration": {"ood_floor": {"score": "energy", "threshold": 2.0}}}
    )
    familiar = np.zeros((2, 2, 4), np.float32)
    familiar[..., 0] = 6.0  # confident, high logits
    weak = np.full((2, 2, 4), -1.0, np.float32)
    weak[..., 0] = 1.0  # same arg-max, but low logits everywhere: looks like nothing it knows
    assert energy(familiar) > 2.0 > energy(weak)
    assert energy(familiar) == pytest.approx(np.log(np.exp(6.0) + 3.0))
    probs = [0.97, 0.01, 0.01, 0.01]
    rgb = np.zeros((64, 64, 3), np.uint8)
    ok = Ensemble([StubModel(guarded, probs, familiar)], threshold=0.5).classify(rgb, with_cam=False)
    assert not ok.abstained
    refused = Ensemble([StubModel(guarded, probs, weak)], threshold=0.5).classify(rgb, with_cam=False)
    assert refused.abstained and "unlike the training images" in refused.reason
    assert refused.cam is None  # with_cam=False still means no heatmap, even though the CAM was read
    unchecked = Ensemble([StubModel(guarded, probs, weak)], threshold=0.5, ood_check=False)
    assert not unchecked.classify(rgb).abstained
    no_floor = Ensemble([StubModel(manifest, probs, weak)], threshold=0.5)
    assert no_floor.ood_floors == {} and not no_floor.classify(rgb).abstained


def test_colour_check_refuses_foreign_colours(manifest) -> None:
    from device.models.ensemble import colour_stats

    rng = np.random.default_rng(0)
    pinkish = [
        np.clip(rng.normal((220, 170, 190), 12, (64, 64, 3)), 0, 255).astype(np.uint8) for _ in range(40)
    ]
    stats = np.stack([colour_stats(im) for im in pinkish])
    inv = np.linalg.inv(np.cov(stats.T) + np.eye(6) * 1e-3)
    check = {"mean": stats.mean(0).tolist(), "inv_cov": inv.tolist(), "threshold": 6.0}
    guarded = type(manifest)(**{**manifest.__dict__, "calibration": {"colour_check": check}})
    probs = [0.97, 0.01, 0.01, 0.01]
    ens = Ensemble([StubModel(guarded, probs)], threshold=0.5)
    assert not ens.classify(pinkish[0]).abstained
    green = np.zeros((64, 64, 3), np.uint8)
    green[..., 1] = 200
    pred = ens.classify(green)
    assert pred.abstained and "colours unlike the training images" in pred.reason
    assert not Ensemble([StubModel(guarded, probs)], threshold=0.5, ood_check=False).classify(green).abstained
