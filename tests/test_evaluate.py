"""`smearscope evaluate --model DIR [--model DIR]... --data DIR --json OUT` through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from device.cli import main

KEYS = {"n", "accuracy", "macro_f1", "labels", "per_class", "confusion_matrix", "models"}


def test_evaluate_writes_the_metrics(tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--model", str(tiny_bundle), "--data", str(tiny_dataset), "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    assert res.keys() >= KEYS
    assert res["n"] == 24
    assert res["labels"] == ["Benign", "Early", "Pre", "Pro"]
    assert res["accuracy"] > 0.5  # chance is 0.25; the fixture gets ~0.8 on generated images
    cm = res["confusion_matrix"]
    assert len(cm) == 4 and all(len(row) == 4 for row in cm)
    assert sum(map(sum, cm)) == 24 and [sum(row) for row in cm] == [6, 6, 6, 6]
    assert sum(cm[i][i] for i in range(4)) / 24 == res["accuracy"]
    for lb in res["labels"]:
        assert set(res["per_class"][lb]) == {"precision", "recall", "f1", "support"}
        assert res["per_class"][lb]["support"] == 6
    assert res["models"][0]["name"] == "tiny-mobilenetv2-int8" and len(res["models"][0]["sha256"]) == 64
    assert "accuracy=" in capsys.readouterr().out


def test_ensemble_of_two_bundles(tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(tiny_bundle, twin)
    data = json.loads((twin / "manifest.json").read_text())
    data["name"] = "twin"
    (twin / "manifest.json").write_text(json.dumps(data))
    single, both = tmp_path / "single.json", tmp_path / "both.json"
    assert (
        main(["evaluate", "--model", str(tiny_bundle), "--data", str(tiny_dataset), "--json", str(single)])
        == 0
    )
    argv = ["evaluate", "--model", str(tiny_bundle), "--model", str(twin), "--data", str(tiny_dataset)]
    assert main([*argv, "--json", str(both)]) == 0
    one, two = json.loads(single.read_text()), json.loads(both.read_text())
    assert [m["name"] for m in two["models"]] == ["tiny-mobilenetv2-int8", "twin"]
    assert two["accuracy"] == one["accuracy"]  # identical members: same soft vote


def test_subset_of_labels_is_fine(tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    shutil.rmtree(tiny_dataset / "Pro")
    out = tmp_path / "e.json"
    assert (
        main(["evaluate", "--model", str(tiny_bundle), "--data", str(tiny_dataset), "--json", str(out)]) == 0
    )
    res = json.loads(out.read_text())
    assert res["n"] == 18 and res["per_class"]["Pro"]["support"] == 0


def test_folder_that_is_not_a_label_is_named(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    (tiny_dataset / "Lymphoma").mkdir()
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--model", str(tiny_bundle), "--data", str(tiny_dataset), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Lymphoma" in err and "not labels of the model" in err
    assert not out.exists()


def test_missing_data_folder(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    code = main(["evaluate", "--model", str(tiny_bundle), "--data", str(tmp_path / "nowhere")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
