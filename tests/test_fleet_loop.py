"""The fleet loop end to end on generated data: a hub with reviewed slides -> `smearscope-hub
export-dataset` -> `smearscope train --data ORIGINAL --data EXPORT` (a tiny MobileNetV2 from random
weights) -> per-source figures in metrics.json and REPORT.md, every slide on one side of the split.
(Conversion of such a run: tests/test_training_sources.py; the convert step itself: test_e2e_model.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from fleetkit import make_export  # noqa: E402
from make_tiny_bundle import write_dataset  # noqa: E402

from device.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


def test_export_then_train_on_two_sources(tmp_path: Path, capsys) -> None:
    export = make_export(tmp_path / "hub", slides=16, fields=4, size=48)
    write_dataset(tmp_path / "original", 12, seed=5, size=48)
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "original"), "--data", str(export), "--out", str(run)]
    argv += ["--backbone", "mobilenetv2", "--alpha", "0.35", "--size", "32", "--weights", "none"]
    # one epoch: the sources and the split are under test here, not the learning
    argv += ["--epochs-head", "1", "--epochs-finetune", "0", "--batch", "32", "--seed", "0"]
    assert main([*argv, "--no-baselines", "--quiet", "--eager"]) == 0

    metrics = json.loads((run / "metrics.json").read_text())
    per_source = metrics["per_source"]
    assert set(per_source) == {"original", "export"}
    assert sum(m["n"] for m in per_source.values()) == metrics["n"]
    assert all(
        {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= m.keys() for m in per_source.values()
    )
    assert "drawn per group (sample ids from the hub export manifest" in metrics["split_note"]
    report = (run / "REPORT.md").read_text()
    assert "## Per source (test split)" in report and "| export | hub export (manifest.json)" in report
    dataset = json.loads((run / "dataset_report.json").read_text())
    assert set(dataset["per_source"]) == {"original", "export"}
    assert json.loads((run / "config.json").read_text())["data"] == [str(tmp_path / "original"), str(export)]
    provenance = json.loads((run / "provenance.json").read_text())
    assert set(provenance["sources"]) == {"original", "export"}

    split = json.loads((run / "split.json").read_text())
    side: dict[str, set[str]] = {}
    for part in ("train", "val", "test"):
        for r in split[part]:
            side.setdefault(r["group"], set()).add(part)
    manifest = json.loads((export / "manifest.json").read_text())
    samples = {f"export:{e['sample_id']}" for e in manifest["images"]}
    assert samples <= set(side) and all(len(side[g]) == 1 for g in samples)
