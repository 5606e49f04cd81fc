"""The training package: model structure, augmentation, and a tiny end-to-end `smearscope train` run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from convert.augment import make_augmenter  # noqa: E402
from device.cli import main  # noqa: E402
from training.models import build_model, feature_extractor, set_finetune  # noqa: E402

COLOURS = {"Blue": (40, 60, 200), "Green": (40, 190, 60), "Red": (210, 50, 50)}


def _make_dataset(root: Path, n: int = 16, size: int = 40) -> Path:
    """Three classes a small network can learn: a coloured disc on a pale background, with noise."""
    rng = np.random.default_rng(0)
    for label, rgb in COLOURS.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            img = np.full((size, size, 3), 225, np.uint8)
            centre = tuple(int(c) for c in rng.integers(size // 3, 2 * size // 3, 2))
            cv2.circle(img, centre, int(rng.integers(size // 5, size // 3)), rgb[::-1], -1)
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / label / f"{label}_{i:03d}.png"), img)
    return root


def test_model_structure_and_finetune_freezing() -> None:
    model = build_model("mobilenetv2", 3, size=32, alpha=0.35, weights="none", dropout=0.1)
    assert [layer.name for layer in model.layers] == ["image", "backbone", "pool", "dropout", "classifier"]
    assert model.input.shape[1:] == (32, 32, 3)
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, keras.Model) and backbone.output.shape[-1] == 1280
    assert backbone.trainable  # from random weights the whole network learns (phase 1 trains it all)
    assert feature_extractor(model).output.shape[-1] == 1280
    unfrozen = set_finetune(model, 20)
    assert 0 < unfrozen <= 20
    bns = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(layer.trainable for layer in bns)
    assert not backbone.layers[1].trainable  # bottom stays frozen
    probs = model.predict(np.full((2, 32, 32, 3), 128.0, np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_backbone_and_missing_weights_are_clear_errors(tmp_path: Path) -> None:
    from device.errors import SmearscopeError

    with pytest.raises(SmearscopeError, match="unknown backbone"):
        build_model("resnet9000", 3, size=32)
    with pytest.raises(SmearscopeError, match="no such file"):
        build_model("mobilenetv2", 3, size=32, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(SmearscopeError, match="--weights PATH"):
        build_model("efficientnet-lite0", 3, size=224, weights="none")


def test_augmenter_keeps_shape_and_range() -> None:
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    out = make_augmenter(seed=1)(batch).numpy()
    assert out.shape == batch.shape
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert not np.allclose(out, batch)


def test_robust_components_stay_in_their_documented_ranges() -> None:
    import tensorflow as tf

    from convert import augment as A

    rng = np.random.default_rng(0)
    # a "smear": background at the white level, darker cells
    batch = np.full((16, 48, 48, 3), A.WHITE_LEVEL, np.float32)
    batch[:, 16:32, 16:32] = rng.uniform(60, 160, (16, 16, 16, 3))
    x = tf.constant(batch)
    # white balance + gamma: the background is re-normalised to the white level (the device's prepare)
    out = A.white_gamma(x, 1.0).numpy()
    np.testing.assert_allclose(out[:, :4, :4], A.WHITE_LEVEL, atol=0.5)
    assert np.abs(out[:, 16:32, 16:32] - batch[:, 16:32, 16:32]).max() > 1.0
    # stain: background stays (OD ~ 0 up to the bias), cells change by at most the documented range
    st = A.stain(x, 1.0).numpy()
    od_in = -np.log(batch[:, 16:32, 16:32] / 255.0)
    od_out = -np.log(np.maximum(st[:, 16:32, 16:32], 1.0) / 255.0)
    assert np.abs(od_out - od_in).max() < (A.STAIN_GAIN * od_in.max() + A.STAIN_BIAS) * 4
    # illumination: only darkens/brightens within vignetting + gradient bounds
    il = A.illumination(x, 1.0).numpy()
    ratio = il[:, :4, :4] / batch[:, :4, :4]
    assert (
        ratio.min() >= (1 - A.VIGNETTE * 1.7) * (1 - A.GRADIENT * 1.5) - 1e-3
        and ratio.max() <= 1 + A.GRADIENT * 1.5
    )
    # defocus preserves the mean, reduces the variance
    bl = A.defocus(x, 1.0).numpy()
    assert abs(bl.mean() - batch.mean()) < 1.0 and bl.std() < batch.std()
    # JPEG and noise keep the 0-255 range; noise changes pixels
    for fn in (A.jpeg, lambda t: A.noise(t, 1.0)):
        y = fn(x).numpy()
        assert y.shape == batch.shape and y.min() >= 0 and y.max() <= 255 and not np.allclose(y, batch)
    # geometry: scale within [0.75, 1.33] -> a centred square changes its area by at most 1/0.75^2
    geo = A.affine(x, 1.0).numpy()
    dark = (geo.mean(-1) < 200).sum((1, 2)) / 256.0
    assert dark.min() > 0.75**2 * 0.8 and dark.max() < (1 / 0.75) ** 2 * 1.2


def test_ablation_skip_names_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown augmentation component"):
        make_augmenter(skip=["nope"])
    out = make_augmenter(skip=["jpeg", "noise", "defocus"])(np.full((2, 16, 16, 3), 200, np.float32))
    assert out.shape == (2, 16, 16, 3)


@pytest.mark.slow
def test_tiny_train_run_writes_the_run_directory(tmp_path: Path, capsys) -> None:
    data = _make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--backbone", "mobilenetv2", "--alpha", "0.35"]
    argv += ["--size", "32", "--weights", "none", "--epochs-head", "2", "--epochs-finetune", "1"]
    argv += ["--finetune-layers", "10", "--batch", "16", "--seed", "3", "--quiet", "--eager"]
    assert main(argv) == 0
    expected = (
        "config.json split.json dataset_report.json history.csv training_curves.png confusion_matrix.png"
    )
    expected += " metrics.json baselines.json provenance.json model.keras REPORT.md"
    for name in expected.split():
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] == 10 and metrics["labels"] == sorted(COLOURS)
    assert set(metrics["per_class"]) == set(COLOURS)
    assert set(metrics) >= {"accuracy", "macro_f1", "confusion_matrix", "roc_auc_ovr"}
    assert "per image" in metrics["split_note"]
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 3 and {"loss", "val_loss", "accuracy"} <= set(rows[0])
    base = json.loads((run / "baselines.json").read_text())
    assert 0.0 <= base["svm_rbf"]["accuracy"] <= 1.0 and "random_forest" in base
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["epochs"] == {"head": 2, "finetune": 1} and len(prov["data_fingerprint"]) == 64
    # coloured discs are no smear: the scale is recorded as unknown, and how
    assert prov["um_per_px"] is None and prov["um_per_px_method"].startswith("could not be measured")
    assert json.loads((run / "config.json").read_text())["um_per_px"] is None
    assert prov["software"]["tensorflow"]
    model = keras.models.load_model(run / "model.keras")  # plain Keras, no custom objects
    assert model.output.shape[-1] == 3
    assert "test accuracy" in capsys.readouterr().out

    # --split reuses the same split
    again = tmp_path / "again"
    argv2 = [
        "train",
        "--split",
        str(run / "split.json"),
        "--out",
        str(again),
        "--alpha",
        "0.35",
        "--size",
        "32",
    ]
    argv2 += [
        "--weights",
        "none",
        "--epochs-head",
        "0",  # the split is under test here, not the training: no epoch at all
        "--epochs-finetune",
        "0",
        "--no-baselines",
        "--quiet",
        "--eager",
    ]
    assert main(argv2) == 0
    first = json.loads((run / "split.json").read_text())
    second = json.loads((again / "split.json").read_text())
    assert first["test"] == second["test"] and first["train"] == second["train"]

    # --init-model continues from a run's model.keras (no head phase) and records where it came from
    cont = tmp_path / "cont"
    argv3 = ["train", "--split", str(run / "split.json"), "--out", str(cont), "--size", "32", "--batch", "16"]
    argv3 += ["--init-model", str(run / "model.keras"), "--epochs-finetune", "3", "--finetune-layers", "5"]
    # a wall-clock budget far shorter than one epoch: the first epoch completes, then training stops
    argv3 += ["--finetune-minutes", "0.0001"]
    # ... with outlier exposure: batches of (images, labels, sample weights), no class_weight in fit
    argv3 += ["--outlier-exposure", "0.25", "--white-residual", "0.3"]
    assert main([*argv3, "--no-baselines", "--quiet", "--eager"]) == 0
    cfg3 = json.loads((cont / "config.json").read_text())
    assert cfg3["outlier_exposure"] == 0.25 and cfg3["white_residual"] == 0.3
    prov3 = json.loads((cont / "provenance.json").read_text())
    assert prov3["epochs"] == {"head": 0, "finetune": 1} and prov3["continued_from"]["run_id"] == "run"
    assert prov3["epochs_total"] == {"head": 2, "finetune": 2}
    assert [st["run_id"] for st in prov3["stages"]] == ["run", "cont"]


def test_keras_backbone_file_is_rebuilt_for_another_input_size(tmp_path: Path) -> None:
    """A fully convolutional `.keras` backbone (EfficientNet-Lite0's format) trains at any --size."""
    from training.models import build_backbone

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    out = keras.layers.ReLU(6.0)(keras.layers.Add()([x, y]))
    path = tmp_path / "lite.keras"
    keras.Model(inp, out).save(path)

    net = build_backbone("efficientnet-lite0", 48, weights=str(path))
    assert net.name == "backbone" and net.input_shape == (None, 48, 48, 3)
    assert net.output.shape[1:] == (24, 24, 8)
    original = keras.models.load_model(path)
    for a, b in zip(net.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
