"""benchmarks/ablation.py: the variants, the shifted validation sets and the table's arithmetic (the
training itself is `smearscope train`'s augmenter and model builder, tested in test_training.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
from make_tiny_bundle import synth_smear

ROOT = Path(__file__).resolve().parents[1]


def _module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_variants_leave_each_component_out_once() -> None:
    ab = _module()
    names = [v[0] for v in ab.variants(("geometry", "jpeg"))]
    assert names == ["none", "basic", "robust", "robust - geometry", "robust - jpeg"]
    assert set(ab.TARGETS) >= {"geometry", "stain", "white", "illumination", "defocus", "noise", "jpeg"}
    # every targeted shift is one the robustness report renders
    assert {s for t in ab.TARGETS.values() for s in t} <= set(ab.SHIFTS)


def test_shifted_sets_are_prepared_like_the_device(tmp_path: Path) -> None:
    ab = _module()
    rng = np.random.default_rng(0)
    paths = []
    for i, label in enumerate(("Benign", "Pro")):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(synth_smear(label, rng, 96), cv2.COLOR_RGB2BGR))
        paths.append(str(p))
    sets = ab.shifted_sets(paths, 48, "background", seed=0)
    assert set(sets) == {"none", *ab.SHIFTS}
    assert all(x.shape == (2, 48, 48, 3) and x.dtype == np.uint8 for x in sets.values())
    assert not np.array_equal(sets["none"], sets["blur"])


def test_score_and_table_arithmetic() -> None:
    ab = _module()
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.95, 0.05], [0.2, 0.8], [0.95, 0.05], [0.6, 0.4]])
    s = ab.score(proba, y)
    assert s["accuracy"] == 0.75 and s["confident_wrong"] == 0.25
    assert np.isclose(s["nll"], -np.mean(np.log([0.95, 0.8, 0.05, 0.6])))

    def scores(acc_jpeg: float) -> dict:
        out = {k: {"accuracy": 0.9, "nll": 0.3, "confident_wrong": 0.0} for k in ["none", *ab.SHIFTS]}
        out["jpeg"] = {"accuracy": acc_jpeg, "nll": 0.5, "confident_wrong": 0.01}
        return out

    doc = {
        "backbone": "mobilenetv2",
        "size": 64,
        "epochs": 1,
        "finetune_layers": 0,
        "white_reference": "background",
        "seed": 1,
        "n_val": 4,
        "variants": {
            "robust": {"train_seconds": 10, "scores": scores(0.9)},
            "robust - jpeg": {"train_seconds": 9, "scores": scores(0.7)},
        },
    }
    md = ab.table(doc)
    row = next(line for line in md.splitlines() if line.startswith("| robust - jpeg |"))
    assert "+20.0 pts (jpeg)" in row and "jpeg 70.0" in row
