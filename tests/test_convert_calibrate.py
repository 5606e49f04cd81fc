"""convert/calibrate.py: temperature fit, ECE/NLL, the abstain-threshold rule; convert/card.py and
models/DEFAULT handling. No TensorFlow needed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from convert.calibrate import calibrate, choose_threshold, ece, fit_temperature, nll  # noqa: E402
from device.models.ensemble import apply_temperature  # noqa: E402


def _overconfident(n: int = 2000, k: int = 4, t_true: float = 2.5, seed: int = 0):
    """Labels drawn from softmax(z); the 'model' reports softmax(z * t_true): over-confident by t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    p_true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p_true])
    zz = z * t_true
    reported = np.exp(zz - zz.max(1, keepdims=True))
    return (reported / reported.sum(1, keepdims=True)).astype(np.float32), y


def test_fit_temperature_recovers_overconfidence() -> None:
    probs, y = _overconfident()
    t = fit_temperature(probs, y)
    assert 2.0 < t < 3.0
    scaled = apply_temperature(probs, t)
    assert nll(scaled, y) < nll(probs, y)
    assert ece(scaled, y) < ece(probs, y)


def test_temperature_never_sharpens_a_model_perfect_on_validation() -> None:
    # Every validation image right: the NLL falls monotonically as T -> 0. Sharpening would make the
    # model certain of anything (unfamiliar inputs too), so T stays 1.
    rng = np.random.default_rng(1)
    y = np.array([0, 1, 2, 3] * 25)
    probs = np.full((100, 4), 0.1, np.float32)
    probs[np.arange(100), y] = rng.uniform(0.6, 0.7, 100)
    probs /= probs.sum(1, keepdims=True)
    assert fit_temperature(probs, y) == pytest.approx(1.0)


def test_temperature_stays_one_when_it_does_not_help() -> None:
    y = np.array([0, 1, 2, 3] * 10)
    probs = np.eye(4, dtype=np.float32)[y] * 0.9 + 0.025
    assert fit_temperature(probs, y) != pytest.approx(0.05)  # not pushed to a bound by a flat optimum
    assert nll(apply_temperature(probs, fit_temperature(probs, y)), y) <= nll(probs, y) + 1e-9


def test_ece_of_perfectly_calibrated_bins_is_zero() -> None:
    y = np.array([0, 0, 0, 1])  # confidence 0.75 for class 0 everywhere, 3/4 right
    probs = np.tile(np.array([[0.75, 0.25]], np.float32), (4, 1))
    assert ece(probs, y) == pytest.approx(0.0)


def test_threshold_rule_picks_smallest_meeting_target() -> None:
    # 100 right answers at confidence 0.95 and 10 wrong ones at 0.6 and 0.725.
    probs = np.array([[0.95, 0.05]] * 100 + [[0.6, 0.4]] * 5 + [[0.725, 0.275]] * 5, np.float32)
    y = np.array([0] * 100 + [1] * 10)
    t, info = choose_threshold(probs, y, target=0.995)
    assert t == pytest.approx(0.73)
    assert info["target_met"] and info["val_selective_accuracy"] == 1.0
    assert info["val_coverage"] == pytest.approx(100 / 110)
    t_low, _ = choose_threshold(probs, y, target=0.9)
    assert t_low == pytest.approx(0.5)  # 100/110 = 0.909 already at the floor


def test_threshold_rule_reports_a_missed_target() -> None:
    probs = np.array([[0.99, 0.01]] * 10, np.float32)
    y = np.array([0] * 5 + [1] * 5)
    t, info = choose_threshold(probs, y)
    assert not info["target_met"] and 0.5 <= t < 1.0


def test_calibrate_returns_manifest_fields() -> None:
    probs, y = _overconfident(800)
    out = calibrate(probs, y)
    assert set(out) == {"temperature", "abstain_threshold", "calibration"}
    c = out["calibration"]
    assert c["split"] == "val" and c["n"] == 800
    assert c["nll_after"] <= c["nll_before"] and "rule" in c["threshold"]
    assert 0.5 <= out["abstain_threshold"] < 1.0


def test_model_card_renders_from_manifest(tiny_bundle) -> None:
    from convert.bundle import update_manifest
    from convert.card import render

    update_manifest(
        tiny_bundle,
        metrics={
            "split": "test",
            "split_note": "per-image split",
            "n": 4,
            "accuracy": 0.75,
            "macro_f1": 0.7,
            "labels": ["Benign", "Early", "Pre", "Pro"],
            "per_class": {
                lb: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
                for lb in ["Benign", "Early", "Pre", "Pro"]
            },
            "confusion_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]],
        },
        calibration={
            "split": "val",
            "n": 10,
            "ood": {"noise": {"n": 2, "abstained": 1.0, "confident_malignant": 0.0, "confident_benign": 0.0}},
        },
    )
    text = render(tiny_bundle)
    assert "not a diagnosis" in text
    assert "| **Pro** | 0 | 1 | 0 | 0 |" in text
    assert "per-image split" in text and "| noise | 2 | 100.00% |" in text

    # the training recipe (from the run's config.json) reaches the card, outlier exposure said plainly
    from convert.pipeline import training_recipe

    recipe = training_recipe({"augment": "robust", "gamma_max": 1.45, "outlier_exposure": 0.15})
    assert recipe.startswith("augment robust; gamma up to 1.45; outlier exposure 15%")
    assert "in-family" in recipe
    assert training_recipe({"augment": "robust", "gamma_max": 1.3}) == "augment robust"
    assert "cast on 30% of images" in training_recipe({"augment": "robust", "white_residual": 0.3})
    one = training_recipe({"augment": "robust", "outlier_exposure": 0.1, "outlier_channel_share": 0.0})
    assert "outlier exposure 10% of each fine-tuning batch (far haematoxylin/eosin re-colourings" in one
    one = training_recipe({"augment": "robust", "outlier_exposure": 0.1, "outlier_channel_share": 0.25})
    assert "25% of them per-channel optical density" in one
    assert training_recipe({}) is None
    update_manifest(tiny_bundle, provenance={"run_id": "r1", "recipe": recipe})
    assert f"- recipe: `{recipe}`" in render(tiny_bundle)


def test_add_to_default_keeps_order_and_dedupes(tmp_path) -> None:
    from convert.pipeline import add_to_default

    add_to_default(tmp_path, "a")
    add_to_default(tmp_path, "b")
    add_to_default(tmp_path, "a")
    lines = [ln for ln in (tmp_path / "DEFAULT").read_text().splitlines() if not ln.startswith("#")]
    assert lines == ["a", "b"]


def test_ood_floor_is_the_validation_quantile() -> None:
    from convert.calibrate import choose_ood_floor

    energies = np.linspace(0.0, 10.0, 1001)
    floor = choose_ood_floor(energies, quantile=0.01)
    assert floor["score"] == "energy" and floor["threshold"] == pytest.approx(0.1)
    assert floor["val_refused"] == pytest.approx(0.01, abs=0.002)
    assert "1% quantile" in floor["rule"]


def test_colour_check_threshold_from_validation() -> None:
    from convert.calibrate import fit_colour_check
    from device.models.ensemble import ColourCheck

    rng = np.random.default_rng(1)

    def smears(n: int) -> np.ndarray:
        base = rng.normal((220, 170, 190), 8, (n, 1, 1, 3))
        return np.clip(base + rng.normal(0, 15, (n, 32, 32, 3)), 0, 255).astype(np.uint8)

    spec = fit_colour_check(smears(200), smears(100), quantile=0.995, factor=1.5)
    assert spec["score"] == "lab_mahalanobis" and spec["val_refused"] == 0.0
    assert len(spec["mean"]) == 6 and np.asarray(spec["inv_cov"]).shape == (6, 6)
    check = ColourCheck(np.asarray(spec["mean"]), np.asarray(spec["inv_cov"]), spec["threshold"])
    assert check.distance(smears(1)[0]) < spec["threshold"]
    assert check.distance(smears(1)[0][..., ::-1].copy()) > spec["threshold"]  # channel-swapped stain


def test_ensemble_report_writes_figures_into_every_card(tiny_bundle, tiny_dataset, tmp_path) -> None:
    import json
    import shutil

    from convert.ensemble_report import main

    twin = tmp_path / "twin"
    shutil.copytree(tiny_bundle, twin)
    data = json.loads((twin / "manifest.json").read_text())
    data["name"] = "twin"
    (twin / "manifest.json").write_text(json.dumps(data))
    assert main([str(tiny_bundle), str(twin), "--data", str(tiny_dataset)]) == 0
    for b in (tiny_bundle, twin):
        ens = json.loads((b / "report" / "ensemble.json").read_text())
        assert ens["n"] == 24 and [m["name"] for m in ens["models"]] == ["tiny-mobilenetv2-int8", "twin"]
        assert json.loads((b / "report" / "ensemble_ood.json").read_text())["all"]["n"] > 0
        text = (b / "MODEL.md").read_text()
        assert "## In the default ensemble" in text and "not a diagnosis" in text
