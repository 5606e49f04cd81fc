"""End to end, as a user runs it: generated smears -> `smearscope train` (a tiny MobileNetV2 from random
weights) -> `smearscope convert` (int8, CAM) -> `smearscope evaluate` / `classify` through the CLI, on
the run's own test split.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from make_tiny_bundle import LABELS, write_dataset  # noqa: E402

from device.cli import main  # noqa: E402

pytestmark = pytest.mark.slow
SIZE = 48


def make_run(root: Path) -> Path:
    """Train with the CLI and copy the run's test split into label folders for `evaluate`."""
    write_dataset(root / "data", 32, seed=11, size=64)
    run = root / "run"
    argv = ["train", "--data", str(root / "data"), "--out", str(run), "--backbone", "mobilenetv2"]
    argv += ["--alpha", "0.35", "--size", str(SIZE), "--weights", "none", "--epochs-head", "8"]
    # No fine-tuning phase: it costs a third of this module's training time, and test_training.py runs it
    # (continuations, time budget, outlier exposure included).
    argv += ["--lr-head", "3e-3", "--epochs-finetune", "0", "--batch", "16"]
    # Raw colour: these generated smears tell their classes mostly by their background's tint, which the
    # white reference removes; a from-scratch net then stayed near chance on the 26 test images (0.31-0.50
    # over six runs on 2026-12-01's machine), and this test is about the path, not about learning. The
    # white reference's own path: test_white_reference.py, test_tiling.py, test_field_classifier.py.
    argv += ["--white-reference", "none"]
    assert main([*argv, "--seed", "0", "--no-baselines", "--quiet"]) == 0
    split = json.loads((run / "split.json").read_text())
    test_dir = root / "testsplit"
    for r in split["test"]:
        (test_dir / r["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(r["path"], test_dir / r["label"])
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def same_conversion_once():
    """Both conversions of the tiny run hand TFLite the same model (same layers, constants and weights) and
    the same representative images, so the second one reuses the first's flatbuffer: a conversion costs half a
    minute of this module's time, and the refusal test is about what `convert` does after it."""
    import hashlib

    import numpy as np

    from convert import tflite

    real = tflite.convert
    done: dict[str, tflite.Converted] = {}

    def once(model, quantization, representative=None):
        h = hashlib.sha256(quantization.encode())
        # the layers, their constants (a Rescaling's scale is no weight) and their weights
        h.update(repr([(type(x).__name__, getattr(x, "scale", None)) for x in model.layers]).encode())
        for w in model.get_weights():
            h.update(np.ascontiguousarray(w).tobytes())
        for batch in representative() if representative is not None else ():
            h.update(np.ascontiguousarray(batch[0]).tobytes())
        key = h.hexdigest()
        if key not in done:
            done[key] = real(model, quantization, representative)
        return done[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tflite, "convert", once)
        yield done


def convert_argv(run: Path, bundle: Path) -> list[str]:
    argv = ["convert", str(run), "--out", str(bundle), "--quantization", "int8", "--cam", "--set-default"]
    return [*argv, "--representative", "32", "--no-float-reference"]


def test_convert_refuses_a_content_check_that_could_never_fire(
    tiny_run: Path, same_conversion_once, tmp_path: Path, capsys
):
    """Made certain here by asking for an impossible headroom: the refusal is one clear message and
    leaves nothing behind (no bundle, no staging folder, no DEFAULT)."""
    from convert import pipeline

    bundle = tmp_path / "models" / "tiny-int8"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "CONTENT_HEADROOM", 1e12)
        code = main(convert_argv(tiny_run, bundle))
    assert code == 2
    assert "content check: the int8 ood_distance output saturates" in capsys.readouterr().err
    assert not bundle.exists() and not (bundle.parent / "DEFAULT").exists()
    assert not list(bundle.parent.glob(f".{bundle.name}.staging-*"))


def convert_tiny(run: Path, bundle: Path, capsys) -> bool:
    """`smearscope convert` of the tiny run; returns whether the bundle carries the content check.

    A tiny random-weight model may embed the unfamiliar representative images barely further than its
    validation images, so whether the int8 `ood_distance` range clears 1.2x the threshold depends on the
    CPU's floating-point results. Both outcomes are product behaviour: the refusal (one clear message,
    nothing written) is checked when it happens, and the bundle is then made without the check."""
    argv = convert_argv(run, bundle)
    code = main(argv)
    printed = capsys.readouterr()
    if code == 0:
        assert "test split" in printed.out
        return True
    assert code == 2 and "content check: the int8 ood_distance output saturates" in printed.err
    assert not bundle.exists() and not (bundle.parent / "DEFAULT").exists()
    assert not list(bundle.parent.glob(f".{bundle.name}.staging-*"))
    assert main([*argv, "--no-content-check"]) == 0
    assert "test split" in capsys.readouterr().out
    return False


def test_train_convert_evaluate(
    tiny_run: Path, same_conversion_once, tmp_path: Path, capsys, monkeypatch
) -> None:
    run = tiny_run
    models = tmp_path / "models"
    bundle = models / "tiny-int8"
    content_check = convert_tiny(run, bundle, capsys)

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["input"]["dtype"] == "uint8" and manifest["quantization"] == "int8"
    if content_check:
        assert [o["name"] for o in manifest["outputs"]] == ["probabilities", "cam", "ood_distance"]
        cc = manifest["calibration"]["content_check"]
        assert cc["threshold"] > 0
        # ... and its int8 output reaches past the threshold (convert refuses a bundle where it cannot)
        assert cc["output_max"] >= 1.2 * cc["threshold"]
        from convert.pipeline import _check_content_headroom
        from device.errors import SmearscopeError

        with pytest.raises(SmearscopeError, match="saturates"):
            _check_content_headroom(bundle, {"threshold": cc["output_max"]})
    else:
        assert [o["name"] for o in manifest["outputs"]] == ["probabilities", "cam"]
        assert "content_check" not in manifest["calibration"]
    assert set(manifest["calibration"]["ood_by_check"]) >= {"all", "no_colour", "content_only"}
    assert [lb["id"] for lb in manifest["labels"]] == list(LABELS)
    assert 0.05 <= manifest["temperature"] <= 20 and 0.5 <= manifest["abstain_threshold"] < 1
    assert manifest["calibration"]["split"] == "val" and "ood" in manifest["calibration"]
    assert 0.0 <= manifest["verification"]["agreement"] <= 1.0
    assert manifest["verification"]["input_quantization"] == {"scale": 1.0, "zero_point": 0}
    assert manifest["metrics"]["split"] == "test" and "per image" in manifest["metrics"]["split_note"]
    assert "not a diagnosis" in (bundle / "MODEL.md").read_text()
    assert (bundle / "report" / "confusion_matrix.png").stat().st_size > 1000
    listed = (bundle / "report" / "test_split.txt").read_text().split()
    assert len(listed) == 26 and all((run.parent / "data" / f).is_file() for f in listed)  # LABEL/FILE
    assert "tiny-int8" in (models / "DEFAULT").read_text().split()

    out = tmp_path / "eval.json"
    data = run.parent / "testsplit"
    assert main(["evaluate", "--model", str(bundle), "--data", str(data), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {"n", "accuracy", "macro_f1", "labels", "per_class", "confusion_matrix", "models"} <= res.keys()
    assert res["n"] == 26 and res["labels"] == list(LABELS)
    # How well a tiny random-weight model learns depends on the CPU's float results, so no accuracy bar
    # here: the path is under test, and its figures must be the card's to the last image.
    assert 0.0 <= res["accuracy"] <= 1.0
    # The card's figures are reproduced exactly by `smearscope evaluate` on the same split.
    assert res["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"])
    assert res["confusion_matrix"] == manifest["metrics"]["confusion_matrix"]

    # Re-fitting the decision rules keeps the model file and reproduces the same test metrics.
    sha = manifest["sha256"]
    capsys.readouterr()
    assert main(["convert", str(run), "--recalibrate", str(bundle)]) == 0
    assert json.loads(capsys.readouterr().out)["bundle"] == str(bundle)
    again = json.loads((bundle / "manifest.json").read_text())
    assert again["sha256"] == sha and again["metrics"]["accuracy"] == manifest["metrics"]["accuracy"]
    assert "colour_check" in again["calibration"]
    # ... and keeps what only a conversion measures (the statistics baked into model.tflite).
    if content_check:
        before_cc, after_cc = manifest["calibration"]["content_check"], again["calibration"]["content_check"]
        assert after_cc["held_out_class"] == before_cc["held_out_class"]
        assert after_cc["statistics"] == before_cc["statistics"]

    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(models))
    some = sorted(data.rglob("*.jpg"))[:2]
    assert main(["classify", *map(str, some), "--json"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert [ln["file"] for ln in lines] == list(map(str, some))


def test_convert_refuses_an_incomplete_run_dir(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    assert main(["convert", str(tmp_path / "run"), "--out", str(tmp_path / "m")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
