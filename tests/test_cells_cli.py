"""`smearscope classify` / `evaluate` with a cell ensemble: the cell path (field line, differential, each
cell), the image-level figures by the station's own per-field call, the per-cell figures on crops, and a
mixed ensemble refused. The ensemble's probabilities are stubbed wherever a figure is asserted; the drawn
frames' cells are known by construction (tests/test_screening.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from make_tiny_bundle import make_cell_bundle
from test_screening import UM, WHITES, frame, probs

from device.cli import main
from device.datasets.labels import DatasetLabel, write_labels
from device.models.ensemble import Ensemble, Prediction
from device.screening.evaluate import UNCERTAIN, are_crops, field_verdict, fit_crop, subtype_matches
from device.screening.screen import screen_frame

BENIGN = probs(Benign=0.98, Pre=0.02)
BLAST = probs(Pre=0.96, Benign=0.04)
UNSURE = probs(Benign=0.5, Pre=0.5)


def answer(p: dict[str, float]) -> Prediction:
    return Prediction(list(p), p, max(p, key=p.get), max(p.values()), False, None)


@pytest.fixture
def cell_bundle(tmp_path) -> Path:
    return make_cell_bundle(tmp_path / "cells")


def stub_by_count(monkeypatch, by_n: dict[int, list[dict[str, float]]]) -> None:
    """Every ensemble answers a frame of n crops with by_n[n] (one drawn frame per folder, told apart
    by how many white cells it holds)."""

    def classify_tiles(self, tiles, **kw):
        assert all(t.shape == (64, 64, 3) for t in tiles)
        return [answer(p) for p in by_n[len(tiles)]]

    monkeypatch.setattr(Ensemble, "classify_tiles", classify_tiles)


def write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_classify_prints_the_field_line_differential_and_each_cell(
    cell_bundle, tmp_path, monkeypatch, capsys
):
    stub_by_count(monkeypatch, {4: [BENIGN, BENIGN, BENIGN, BLAST]})
    img = write(tmp_path / "field.png", frame())
    assert main(["classify", str(img), "--model", str(cell_bundle), "--um-per-px", str(UM)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(
        f"{img}: 4 white cells: 3 benigns (hematogones), 1 blast  | call: Pre  | 0.25 µm/px"
    )
    assert "differential: Benign 3, Pre 1" in out
    assert "blasts 1/4 = 25.0% (95% CI 0.6%-80.6%): count more cells: 4 of 100" in out
    cells = [ln for ln in lines if ln.startswith("  cell ")]
    assert len(cells) == 4 and sum(" blast Pre p_blast 0.960" in ln for ln in cells) == 1
    assert "not a diagnosis" in err

    assert main(["classify", str(img), "--model", str(cell_bundle), "--um-per-px", str(UM), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out.splitlines()[0])
    assert rec["kind"] == "cells" and rec["label"] == "Pre" and not rec["abstained"]
    assert rec["field"]["differential"]["blasts"] == 1 and rec["field"]["field_line"].startswith("4 white")
    assert [c["state"] for c in rec["cells"]].count("blast") == 1
    assert {"index", "box", "state", "label", "p_blast"} <= set(rec["cells"][0])


def test_classify_says_when_a_field_is_not_screened(cell_bundle, tmp_path, monkeypatch, capsys):
    stub_by_count(monkeypatch, {})  # no crop may reach the classifier
    img = write(tmp_path / "field.png", frame())
    assert main(["classify", str(img), "--model", str(cell_bundle), "--um-per-px", str(2 * UM)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{img}: NOT SCREENED (scale differs")


def test_a_mixed_ensemble_is_refused(cell_bundle, tiny_bundle, tmp_path, capsys):
    img = write(tmp_path / "field.png", frame())
    for cmd in (["classify", str(img)], ["evaluate", "--data", str(tmp_path)]):
        assert main([*cmd, "--model", str(cell_bundle), "--model", str(tiny_bundle)]) == 2
        err = capsys.readouterr().err
        assert "mixes cell bundles (tiny-cells-int8) with field bundles" in err and "Traceback" not in err


def test_cell_options_are_refused_for_field_bundles(tiny_bundle, tmp_path, capsys):
    args = ["evaluate", "--model", str(tiny_bundle), "--data", str(tmp_path), "--malignant", "Pre"]
    assert main(args) == 2
    assert "for a cell ensemble" in capsys.readouterr().err


def test_field_verdicts_follow_the_stations_own_call(cell_bundle, monkeypatch):
    ens = Ensemble.from_dirs([str(cell_bundle)], num_threads=1)

    def screened(rows, whites=WHITES, scale=UM):
        monkeypatch.setattr(ens, "classify_tiles", lambda tiles, **kw: [answer(p) for p in rows])
        return screen_frame(frame(whites), scale, ens)

    labels = ens.labels
    all_read = screened([BENIGN] * 4)
    one_blast = screened([BENIGN] * 3 + [BLAST])
    one_unsure = screened([BENIGN] * 3 + [UNSURE])
    refused = screened([], scale=2 * UM)
    none = screened([], whites=[])
    cases = {  # (folder, malignant, field) -> (call, outcome)
        ("Benign", False, all_read): ("no_blast", "right"),
        ("Pre", True, all_read): ("no_blast", "confidently_wrong"),
        ("Benign", False, one_blast): ("blast", "confidently_wrong"),
        ("Pre", True, one_blast): ("blast", "right"),
        ("Early", True, one_blast): ("blast", "right"),
        ("Benign", False, one_unsure): (UNCERTAIN, UNCERTAIN),
        ("Pre", True, one_unsure): (UNCERTAIN, UNCERTAIN),
        ("Pre", True, refused): (UNCERTAIN, UNCERTAIN),
        ("Benign", False, none): (UNCERTAIN, UNCERTAIN),
    }
    for (folder, malignant, fc), (call, outcome) in cases.items():
        v = field_verdict("x.png", folder, malignant, fc, labels)
        assert (v.call, v.outcome) == (call, outcome), (folder, fc.state, fc.label, fc.abstained)
    assert field_verdict("x", "Pre", True, one_blast, labels).subtype_match is True
    assert field_verdict("x", "Early", True, one_blast, labels).subtype_match is False
    assert field_verdict("x", "Benign", False, one_blast, labels).subtype_match is None
    assert subtype_matches("Early", "blast_early") and not subtype_matches("Pre", "blast_pro")


def test_evaluate_fields_reports_each_image_and_the_figures(cell_bundle, tmp_path, monkeypatch, capsys):
    data = tmp_path / "fields"
    for i in range(2):
        write(data / "Benign" / f"b{i}.png", frame())  # 4 white cells, all read benign: right
        write(data / "Pre" / f"p{i}.png", frame(WHITES[:3]))  # 3 cells, one blast: right
    write(data / "Pre" / "p_missed.png", frame(WHITES[:2]))  # 2 cells read benign: confidently wrong
    write(data / "Benign" / "b_unsure.png", frame(WHITES[:1]))  # 1 cell, unsure: uncertain
    stub_by_count(monkeypatch, {4: [BENIGN] * 4, 3: [BENIGN, BLAST, BENIGN], 2: [BENIGN] * 2, 1: [UNSURE]})
    write_labels(
        data,
        [DatasetLabel("Benign", "Benign", False, "test"), DatasetLabel("Pre", "Pre-B ALL", True, "test")],
    )
    out_json = tmp_path / "m.json"
    args = ["evaluate", "--model", str(cell_bundle), "--data", str(data), "--images", "fields"]
    assert main([*args, "--um-per-px", str(UM), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "fields n=6 right=4 uncertain=1 confidently_wrong=1 accuracy=0.6667" in out
    assert "subtype 2/2" in out and "rule: per image, the station's own call" in out
    m = json.loads(out_json.read_text())
    assert m["per_folder"]["Pre"]["confidently_wrong"] == 1 and m["per_folder"]["Benign"]["uncertain"] == 1
    by_file = {Path(im["path"]).name: im for im in m["images"]}
    assert by_file["p_missed.png"]["outcome"] == "confidently_wrong"
    assert by_file["b_unsure.png"]["reason"] == "1 of 1 white cells unclassified"
    assert m["models"][0]["name"] == "tiny-cells-int8"

    (data / "labels.json").unlink()  # no labels.json: --malignant says, or a clear error
    assert main([*args, "--um-per-px", str(UM), "--malignant", "Pre"]) == 0
    assert "right=4 uncertain=1 confidently_wrong=1" in capsys.readouterr().out
    assert main([*args, "--um-per-px", str(UM)]) == 2
    assert "which label folders are malignant?" in capsys.readouterr().err


def test_evaluate_cells_on_crops_at_the_input_scale(cell_bundle, tmp_path, monkeypatch, capsys):
    data = tmp_path / "crops"
    for i, side in enumerate((64, 80, 50)):  # larger crops are cut, smaller ones padded, none resized
        write(data / "Benign" / f"b{i}.png", np.full((side, side, 3), 40, np.uint8))
        write(data / "Pre" / f"p{i}.png", np.full((side, side, 3), 200, np.uint8))
    write(data / "Pre" / "p_unsure.png", np.full((64, 64, 3), 120, np.uint8))

    def classify_tiles(self, tiles, **kw):
        assert all(t.shape == (64, 64, 3) for t in tiles)
        by_grey = {40: BENIGN, 200: BLAST, 120: UNSURE}
        return [answer(by_grey[int(t[0, 0, 0])]) for t in tiles]

    monkeypatch.setattr(Ensemble, "classify_tiles", classify_tiles)
    write(data / "Benign" / "b_wrong.png", np.full((64, 64, 3), 200, np.uint8))
    out_json = tmp_path / "c.json"
    args = ["evaluate", "--model", str(cell_bundle), "--data", str(data), "--json", str(out_json)]
    assert main([*args, "--images", "cells"]) == 0
    out = capsys.readouterr().out
    assert "cells n=8 right=6 uncertain=1 confidently_wrong=1 accuracy=0.7500" in out
    m = json.loads(out_json.read_text())
    assert m["blast_sensitivity"] == 1.0 and m["blast_specificity"] == 0.75
    assert m["states"] == {"not_blast": 3, "blast": 4, "unclassified": 1}
    assert m["type_named"] == 7


def test_evaluate_single_cell_pictures_at_their_own_scale(cell_bundle, tmp_path, monkeypatch, capsys):
    data = tmp_path / "pictures"
    write(data / "Benign" / "b_right.png", frame())  # 4 white cells read benign: the central one right
    write(data / "Pre" / "p_right.png", frame(WHITES[:3]))  # 3 blasts
    write(data / "Pre" / "p_missed.png", frame(WHITES[:2]))  # read benign: confidently wrong
    write(data / "Benign" / "b_unsure.png", frame(WHITES[:1]))  # unclassified: uncertain
    write(data / "Benign" / "b_empty.png", frame([]))  # no white cell: uncertain
    stub_by_count(monkeypatch, {4: [BENIGN] * 4, 3: [BLAST] * 3, 2: [BENIGN] * 2, 1: [UNSURE]})
    out_json = tmp_path / "p.json"
    args = ["evaluate", "--model", str(cell_bundle), "--data", str(data), "--json", str(out_json)]
    # folders named by the bundle's labels, pictures not of the input size: judged at their own scale
    assert main([*args, "--um-per-px", str(UM)]) == 0
    assert "cells n=5 right=2 uncertain=2 confidently_wrong=1" in capsys.readouterr().out
    m = json.loads(out_json.read_text())
    assert m["images"] == "pictures at their own scale" and "nearest the centre" in m["rule"]
    by_file = {Path(c["path"]).name: c for c in m["cells"]}
    assert by_file["b_empty.png"]["reason"] == "no white cell found"
    assert (by_file["p_right.png"]["state"], by_file["p_right.png"]["label"]) == ("blast", "Pre")
    # crops of the input size without a scale: read as crops
    crops = tmp_path / "crops"
    write(crops / "Benign" / "c.png", np.full((64, 64, 3), 40, np.uint8))
    assert are_crops(crops, 64) and not are_crops(data, 64)


def test_fit_crop_keeps_the_pixels_scale():
    img = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    assert np.array_equal(fit_crop(img, 6), img[2:8, 2:8])
    padded = fit_crop(img, 14)
    assert padded.shape == (14, 14, 3) and np.array_equal(padded[2:12, 2:12], img)


def test_auto_scale_screens_a_set_at_its_median_red_cell_scale(cell_bundle, tmp_path, monkeypatch, capsys):
    from test_screening import BACKGROUND, CYTOPLASM, NUCLEUS, RBC, px

    data = tmp_path / "pictures"
    write(data / "Benign" / "b1.png", frame(WHITES[:1]))
    write(data / "Benign" / "b2.png", frame(WHITES[:1]))
    bare = np.zeros((px(60), px(80), 3), np.uint8)  # one white cell, too few red cells to tell the scale
    bare[:] = BACKGROUND
    for x, y in ((6, 6), (60, 50)):
        cv2.circle(bare, (px(x), px(y)), px(3.75), RBC, -1, cv2.LINE_AA)
    cv2.circle(bare, (px(28), px(24)), px(6), CYTOPLASM, -1, cv2.LINE_AA)
    cv2.circle(bare, (px(28), px(24)), px(4), NUCLEUS, -1, cv2.LINE_AA)
    write(data / "Benign" / "bare.png", bare)
    stub_by_count(monkeypatch, {1: [BENIGN]})
    out_json = tmp_path / "p.json"
    args = ["evaluate", "--model", str(cell_bundle), "--data", str(data), "--json", str(out_json)]
    assert main([*args, "--um-per-px", "auto"]) == 0
    out = capsys.readouterr().out
    assert "cells n=3 right=3 uncertain=0" in out and "  Benign: n=3 right=3" in out
    m = json.loads(out_json.read_text())
    # every picture at the set's median; the one whose red cells cannot tell is screened all the same
    assert m["set_scale"]["pictures"] == 3 and m["set_scale"]["from"] == 2
    assert abs(m["set_scale"]["um_per_px"] - UM) < 0.05 * UM
    assert "set scale: 3 pictures screened at" in out
    # a given scale is the scale: no set median
    assert main([*args, "--um-per-px", str(UM)]) == 0
    assert json.loads(out_json.read_text())["set_scale"] is None
