"""benchmarks/robustness.py end to end on the committed tiny bundle and generated images."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
from make_tiny_bundle import (
    LABELS,
    SIGNED_TINY,  # noqa: E402
    synth_smear,
)

from device.models.ensemble import Ensemble

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = SIGNED_TINY


def _module():
    spec = importlib.util.spec_from_file_location("robustness", ROOT / "benchmarks" / "robustness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _split(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        label = LABELS[i % 4]
        path = tmp_path / label / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(synth_smear(label, rng, 96), cv2.COLOR_RGB2BGR))
        rows.append({"path": str(path), "label": label, "sha256": "0" * 64})
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"labels": list(LABELS), "train": [], "val": [], "test": rows}))
    return split


def test_every_shift_changes_the_image_and_keeps_its_shape() -> None:
    mod = _module()
    img = synth_smear("Pre", np.random.default_rng(1), 96)
    for name, sev in mod.SHIFTS.items():
        for severity, (_, fn) in sev.items():
            out = fn(img, 0)
            assert out.shape == img.shape and out.dtype == np.uint8, (name, severity)
            assert not np.array_equal(out, img), (name, severity)


def test_decide_matches_the_device_ensemble() -> None:
    mod = _module()
    ens = Ensemble.from_dirs([str(BUNDLE), str(BUNDLE)])
    rng = np.random.default_rng(2)
    for i in range(6):
        img = synth_smear(LABELS[i % 4], rng, 96) if i < 4 else rng.integers(0, 256, (96, 96, 3), np.uint8)
        pred = ens.classify(img, with_cam=False)
        idx, abstained = mod.decide(ens, img)["ensemble"]
        assert (LABELS[idx], abstained) == (pred.label, pred.abstained)


def test_report_runs_end_to_end(tmp_path: Path) -> None:
    mod = _module()
    split = _split(tmp_path)
    report = mod.run([BUNDLE], split, shifts=["jpeg", "scale"], ood_per_kind=1)
    names = [(c["shift"], c["severity"]) for c in report["conditions"]]
    assert names == [
        ("none", "-"),
        ("scale", "mild"),
        ("scale", "strong"),
        ("jpeg", "mild"),
        ("jpeg", "strong"),
    ]
    r = report["conditions"][0]["results"]
    assert set(r) == {"tiny-bundle", "ensemble"} or set(r) == {load_name(), "ensemble"}
    for c in report["conditions"]:
        for v in c["results"].values():
            assert v["n"] == 8 and 0 <= v["confidently_wrong"] <= 1 - v["uncertain"] + 1e-9
    assert report["ood_probes"]["no_colour"]["all"]["n"] > 10
    out = tmp_path / "out"
    mod.write(report, out)
    for name in ("robustness.json", "robustness.md", "robustness.png"):
        assert (out / name).is_file()
    assert "colour check off" in (out / "robustness.md").read_text()


def load_name() -> str:
    return json.loads((BUNDLE / "manifest.json").read_text())["name"]
