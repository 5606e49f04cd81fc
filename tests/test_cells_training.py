"""training/cells: crop builder (the station's crop, edge cells, manifest, groups), Reinhard transfer,
label flags read from the dataset (malignant, white) and copied into the manifest, the field rule, the
per-cell figures. Generated images only (no ../shared)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from convert.bundle import make_labels
from device.cells.crop import model_input, to_pitch
from device.cells.decide import BLAST, NOT_BLAST, UNCLASSIFIED, CellDecision
from device.cells.detect import WHITE, Cell
from device.datasets.labels import DatasetLabel, read_labels, write_labels
from device.errors import SmearscopeError
from device.models.bundle import CellSpec, InputSpec, Label, Manifest
from training.cells import build_crops
from training.cells.crops import CropSpec
from training.cells.field_rule import LabelledField, call_field, choose_thresholds, summary
from training.cells.stain import LabStats, lab_stats, reinhard
from training.sources import scan_sources

NUCLEUS = (90, 40, 150)  # RGB of a stained nucleus (dark purple)


def smear(h: int, w: int, cells: list[tuple[float, float, float]], um_per_px: float) -> np.ndarray:
    """A white-background field with dark disks at (x, y, diameter µm), plus pink red cells' tone."""
    img = np.full((h, w, 3), 235, np.uint8)
    img[::7, ::5] = (225, 200, 205)
    for x, y, d in cells:
        cv2.circle(img, (int(x), int(y)), int(round(d / um_per_px / 2)), NUCLEUS, -1)
    return img


def dark_area_um2(rgb: np.ndarray, um_per_px: float) -> float:
    return float((rgb[..., 1] < 120).sum()) * um_per_px**2


def cell(x: float, y: float) -> Cell:
    return Cell(x, y, (int(x) - 5, int(y) - 5, int(x) + 5, int(y) + 5), 50.0, 120.0, WHITE, 1.0, False)


def test_crop_keeps_physical_size_across_sources():
    spec = CropSpec(side_um=24.0, size=96, pitch_um=0.48)
    fine = smear(400, 400, [(200, 200, 10.0)], 0.1)  # a 10 µm disk at 0.1 µm/px
    coarse = smear(120, 120, [(60, 60, 10.0)], 0.48)  # the same disk at 0.48 µm/px
    a = dark_area_um2(build_crops.cell_input(fine, cell(200, 200), 0.1, spec), spec.um_per_px)
    b = dark_area_um2(build_crops.cell_input(coarse, cell(60, 60), 0.48, spec), spec.um_per_px)
    true = np.pi * 25.0
    assert abs(a - true) / true < 0.12 and abs(b - true) / true < 0.12
    assert build_crops.cell_input(fine, cell(200, 200), 0.1, spec).shape == (96, 96, 3)


def test_crop_is_the_stations_model_input_even_at_the_border():
    spec = CropSpec(side_um=24.0, size=96, pitch_um=0.479)
    img = smear(224, 224, [(6, 100, 8.0)], 0.479)
    c = cell(6, 100)
    got = build_crops.cell_input(img, c, 0.479, spec)
    want = model_input(img, c, 0.479, size=96, input_um_per_px=0.25, pitch_um=0.479)
    assert np.array_equal(got, want)  # reflected at the border, exactly as the station reads it


def test_detail_is_brought_to_the_coarse_pitch():
    rng = np.random.default_rng(0)
    fine = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # detail at every pixel
    soft = to_pitch(fine, 0.1, 0.48)
    assert soft.shape[:2] == (42, 42)  # 20 µm at 0.48 µm/px
    assert to_pitch(fine, 0.5, 0.48) is fine  # a source at or above the pitch is not touched


def test_reinhard_moves_statistics_onto_the_target():
    rng = np.random.default_rng(1)
    src = np.clip(rng.normal((180, 120, 170), 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    ref = np.clip(rng.normal((200, 160, 150), 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    target = lab_stats(ref)
    out = lab_stats(reinhard(src, target))
    assert np.allclose(out.mean, target.mean, atol=1.5)
    assert np.allclose(out.std, target.std, atol=1.5)
    same = reinhard(src, lab_stats(src))
    assert np.abs(same.astype(int) - src.astype(int)).max() <= 2
    flat = np.full((8, 8, 3), 200, np.uint8)  # no colour spread: shifted, never divided by zero
    assert reinhard(flat, LabStats((50.0, 0.0, 0.0), (5.0, 5.0, 5.0))).shape == flat.shape


def noisy(img: np.ndarray, seed: int) -> np.ndarray:
    """Distinct bytes in every crop (the dataset scan drops exact duplicates)."""
    n = np.random.default_rng(seed).integers(-3, 4, img.shape)
    return np.clip(img.astype(int) + n, 0, 255).astype(np.uint8)


def _datasets(tmp_path: Path) -> tuple[Path, Path]:
    ball, pbc = tmp_path / "ball", tmp_path / "pbc"
    for i, folder in enumerate(build_crops.BALL_LABELS):
        for k in range(2):
            img = smear(224, 224, [(70, 70, 8.0), (150, 150, 8.0)], 0.479)
            img = noisy(img, 10 * i + k)
            (ball / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(ball / folder / f"img-{folder}-{k}.png"), img)
    for i, folder in enumerate(build_crops.PBC_LABELS):
        img = smear(363, 360, [(180, 181, 10.0)], 0.108)
        img = noisy(img, 100 + i)
        (pbc / folder).mkdir(parents=True)
        cv2.imwrite(str(pbc / folder / f"p{i}.png"), img)
    return ball, pbc


def _args(ball: Path, pbc: Path, out: Path, copies: float = 1.0) -> argparse.Namespace:
    return argparse.Namespace(
        ball=str(ball),
        pbc=str(pbc),
        out=str(out),
        side_um=24.0,
        size=64,
        ball_um_per_px=0.479,
        pbc_um_per_px=0.108,
        stain_copies=copies,
        limit=None,
        seed=0,
    )


def test_build_crops_writes_dataset_manifest_labels_and_groups(tmp_path, monkeypatch):
    ball, pbc = _datasets(tmp_path)
    cells = [cell(70, 70), cell(150, 150), cell(5, 5)]
    monkeypatch.setattr(build_crops, "white_cells", lambda rgb, um: cells)
    out = tmp_path / "crops"
    doc = build_crops.build(_args(ball, pbc, out))
    counts = doc["counts"]
    assert counts["ball_images"] == 8 and counts["ball_cells_at_edge"] == 8  # the (5, 5) cell of each image
    # the border cell is kept (the station sees it, reflected) and flagged
    assert counts["crops"] == 8 * 3 + 8 and counts["stain_copies_written"] == counts["crops"]
    assert counts["per_label"]["blast_pre"] == 6 and counts["per_label"]["neutrophil"] == 1
    edge = [r for r in doc["crops"] if r["edge"]]
    assert len(edge) == 2 * 8 and all(r["path"].split(".")[-2] in ("2", "rh") for r in edge)
    assert not any(r["edge"] for r in doc["crops"] if r["lab"] == "pbc")
    for rec in doc["crops"]:
        img = cv2.imread(str(out / rec["path"]))
        assert img.shape == (64, 64, 3)
        name = Path(rec["path"]).name
        assert re.match(build_crops.GROUP_REGEX, name).group(1) == rec["group"]
    by_group: dict[str, set[str]] = {}
    for rec in doc["crops"]:
        by_group.setdefault(rec["group"], set()).add(rec["source_image"])
    assert all(len(v) == 1 for v in by_group.values())  # one source image per group
    copies = [r for r in doc["crops"] if r["copy_of"]]
    originals = {r["path"]: r for r in doc["crops"] if not r["copy_of"]}
    assert all(originals[c["copy_of"]]["group"] == c["group"] for c in copies)
    assert json.loads((out / "crops.json").read_text())["crop"]["um_per_px_at_input"] == pytest.approx(
        24 / 64
    )
    # `smearscope train --group-regex` keeps each source image's crops (and copies) in one group
    items, _, rep = scan_sources([out], group_regex=build_crops.GROUP_REGEX)
    assert rep["grouping"].startswith("per group") and len(items) == len(doc["crops"])
    assert len({it.group for it in items}) == 8 + 8
    labels = read_labels(out)
    assert labels["blast_early"].malignant is True and labels["hematogone"].malignant is False
    assert labels["lymphocyte"].malignant is False
    assert labels["lymphocyte"].white and labels["hematogone"].white and labels["blast_pre"].white
    assert not labels["platelet"].white and not labels["erythroblast"].white
    # a rebuild replaces the crop dataset; a folder that is not one is refused
    build_crops.build(_args(ball, pbc, out, copies=0.0))
    assert not any(p.name.endswith(".rh.png") for p in out.rglob("*.png"))
    (tmp_path / "other").mkdir()
    with pytest.raises(SmearscopeError, match="not a crop dataset"):
        build_crops.build(_args(ball, pbc, tmp_path / "other"))


def test_malignant_flags_come_from_the_dataset(tmp_path):
    write_labels(
        tmp_path, [DatasetLabel("odd", "Odd cell", True, "test"), DatasetLabel("Pre", "Pre here", False, "t")]
    )
    labels = {lb.id: lb for lb in make_labels(["odd", "Pre", "mystery"], [tmp_path])}
    assert labels["odd"].malignant is True and labels["odd"].display == "Odd cell"
    assert labels["Pre"].malignant is False  # the dataset's declaration wins over the built-in table
    assert labels["mystery"].malignant is None  # undeclared: refer, never miss
    assert make_labels(["Pre"])[0].malignant is True  # no label file: the built-in table
    (tmp_path / "labels.json").write_text(
        json.dumps(
            {"format": "smearscope-labels/1", "labels": [{"id": "x", "display": "X", "malignant": "yes"}]}
        )
    )
    with pytest.raises(SmearscopeError, match="malignant must be true or false"):
        read_labels(tmp_path)


def test_white_flag_round_trips_and_reaches_the_manifest(tmp_path):
    write_labels(
        tmp_path,
        [
            DatasetLabel("platelet", "Platelet", False, "t", white=False),
            DatasetLabel("lymphocyte", "Lymphocyte", False, "t"),
        ],
    )
    doc = json.loads((tmp_path / "labels.json").read_text())
    assert [e["white"] for e in doc["labels"]] == [False, True]
    back = read_labels(tmp_path)
    assert back["platelet"].white is False and back["lymphocyte"].white is True
    labels = make_labels(["platelet", "lymphocyte"], [tmp_path])
    assert [lb.white for lb in labels] == [False, True]
    m = Manifest("m", "mobilenetv2", labels, InputSpec(96, 96), [], "0" * 64)
    assert [e.get("white", True) for e in m.to_dict()["labels"]] == [False, True]
    # a labels file without the flag (written before it existed): every label is a white cell
    doc["labels"] = [{k: v for k, v in e.items() if k != "white"} for e in doc["labels"]]
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    assert all(lb.white for lb in read_labels(tmp_path).values())
    doc["labels"][0]["white"] = "no"
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    with pytest.raises(SmearscopeError, match="white must be true or false"):
        read_labels(tmp_path)


def dec(state: str, label: str | None, conf: float = 0.9) -> CellDecision:
    return CellDecision(state, label, 0.99 if state == BLAST else 0.01, conf)


FIELD_LABELS = [
    Label("blast_pre", "Pre", True),
    Label("blast_pro", "Pro", True),
    Label("hematogone", "H", False),
    Label("lymphocyte", "L", False),
    Label("platelet", "P", False, white=False),
]


def lfield(truth: str, p_blasts: list[float], name: str = "f") -> LabelledField:
    """A field whose cells split their probability between blast_pre and hematogone."""
    probs = tuple({"blast_pre": p, "hematogone": 1 - p} for p in p_blasts)
    return LabelledField(name, truth, probs, (None,) * len(probs))


def test_field_thresholds_keep_every_validation_field_on_its_side_with_the_margin():
    val = [lfield("blast_pre", [0.7, 0.8, 0.9]), lfield("blast_pre", [0.99] * 4)]
    val += [lfield("hematogone", [0.2, 0.3, 0.4]), lfield("hematogone", [0.1] * 5)]
    val += [lfield("hematogone", [0.97, 0.97])]  # fewer cells than min_cells: not used
    lo, hi, doc = choose_thresholds(val, FIELD_LABELS, margin=0.05, min_cells=3)
    # apart: the gap between 0.35 and 0.75 (no validation field there) abstains
    assert (lo, hi) == (pytest.approx(0.35), pytest.approx(0.75))
    assert doc["fields_with_blasts"] == 2 and doc["fields_without_blasts"] == 2
    # overlapping once the margin is added: each kind's extreme field keeps the margin from the other side
    lo, hi, _ = choose_thresholds(val, FIELD_LABELS, margin=0.3, min_cells=3)
    assert (lo, hi) == (pytest.approx(0.5), pytest.approx(0.6))
    with pytest.raises(ValueError, match="with and without blasts"):
        choose_thresholds(val[:2], FIELD_LABELS, margin=0.05, min_cells=3)


def test_field_calls_are_the_stations_and_judged_against_the_field():
    spec = CellSpec(None, 0.95, 0.5, 0.4, 0.6, 3)
    blast_field = lfield("blast_pro", [0.7, 0.8, 0.9])  # no cell reaches 0.95, the field does
    out = call_field(blast_field, FIELD_LABELS, spec)
    assert (out.call, out.outcome, out.label) == ("blast", "right", "blast_pre")
    assert out.subtype_match is False  # called blast_pre on a Pro field: right, subtype apart
    benign = call_field(lfield("hematogone", [0.2, 0.3, 0.5]), FIELD_LABELS, spec)
    assert (benign.call, benign.outcome, benign.label) == ("no_blast", "right", "hematogone")
    # a benign field whose mean reaches the blast threshold is confidently wrong
    assert (
        call_field(lfield("hematogone", [0.5, 0.7, 0.8]), FIELD_LABELS, spec).outcome == "confidently_wrong"
    )
    # between the thresholds: uncertain; a decided blast in a clear-looking field: uncertain
    assert call_field(lfield("hematogone", [0.4, 0.5, 0.6]), FIELD_LABELS, spec).outcome == "uncertain"
    lone = call_field(lfield("hematogone", [0.96, 0.05, 0.05, 0.05]), FIELD_LABELS, spec)
    assert lone.outcome == "uncertain" and "decided a blast" in (lone.reason or "")
    # too few cells for the rule: the cells' own decisions (an unclassified cell -> uncertain)
    assert call_field(lfield("hematogone", [0.5, 0.02]), FIELD_LABELS, spec).outcome == "uncertain"
    assert call_field(lfield("hematogone", [0.01, 0.02]), FIELD_LABELS, spec).outcome == "right"
    assert call_field(lfield("hematogone", []), FIELD_LABELS, spec).call == "no_cells"
    # unfamiliar cells are not pooled (and are unclassified)
    odd = LabelledField("o", "blast_pre", ({"blast_pre": 0.9, "hematogone": 0.1},) * 3, ("unlike",) * 3)
    assert call_field(odd, FIELD_LABELS, spec).outcome == "uncertain"
    s = summary([out, benign, lone])
    assert (s["right"], s["uncertain"], s["four_class_right"], s["subtype_matches"]) == (2, 1, 1, 0)


def test_normal_fields_are_drawn_from_single_cells_and_called_by_the_rule():
    from training.cells.field_rule import normal_fields

    spec = CellSpec(None, 0.95, 0.5, 0.4, 0.6, 3)
    low = [{"blast_pre": 0.05, "lymphocyte": 0.95}] * 30
    r = normal_fields(low, [None] * 30, FIELD_LABELS, spec, n_fields=50)
    assert (r["n"], r["cleared"], r["called_blast"]) == (50, 1.0, 0.0)
    blasty = [{"blast_pre": 0.7, "lymphocyte": 0.3}] * 30  # each unclassified, together a blast field
    assert normal_fields(blasty, [None] * 30, FIELD_LABELS, spec, n_fields=50)["called_blast"] == 1.0
    mixed = low[:15] + [{"blast_pre": 0.5, "lymphocyte": 0.5}] * 15
    m = normal_fields(mixed, [None] * 30, FIELD_LABELS, spec, n_fields=200, seed=1)
    assert m["called_blast"] == 0.0 and 0 < m["uncertain"] < 1 and m["cleared"] + m["uncertain"] == 1.0


def test_cell_figures_count_by_the_decision():
    from training.cells.evaluate import cell_figures

    labels = [Label("blast_pre", "B", True), Label("hematogone", "H", False), Label("neutrophil", "N", False)]
    truth = ["blast_pre", "blast_pre", "blast_pre", "blast_pre", "neutrophil", "neutrophil", "hematogone"]
    decs = [
        dec(BLAST, "blast_pre"),
        dec(UNCLASSIFIED, None),
        dec(NOT_BLAST, "neutrophil"),  # a blast decided not a blast
        dec(BLAST, "blast_pre"),
        dec(NOT_BLAST, "neutrophil"),
        dec(BLAST, "blast_pre"),  # a normal cell decided a blast
        dec(NOT_BLAST, None),  # not a blast, type unnamed
    ]
    probs = np.eye(3)[[0, 0, 2, 0, 2, 0, 1]].astype(np.float32)
    m = cell_figures(truth, decs, probs, labels)
    assert m["blast_sensitivity_decided"] == pytest.approx(2 / 3)
    assert m["blast_specificity_decided"] == pytest.approx(2 / 3)
    assert m["states"]["unclassified"] == pytest.approx(1 / 7)
    assert m["confidently_wrong"] == pytest.approx(2 / 7)
    assert m["confident_blast_on_normal"] == pytest.approx(1 / 3)
    assert m["blast_called_not_blast"] == pytest.approx(1 / 4)
    n = m["per_type"]["neutrophil"]
    assert n["named_correct"] == pytest.approx(0.5) and n["confident_blast"] == pytest.approx(0.5)
    assert m["per_type"]["hematogone"]["not_blast_unnamed"] == 1.0
    # neutrophil: named 2 times, 1 right (P = 1/2), 1 of 2 found (R = 1/2); hematogone is not in the F1
    assert m["macro_f1_normal_decision"] == pytest.approx(0.5)


def _eval_doc() -> dict:
    cells = {
        "blast_sensitivity_decided": 0.995,
        "blast_specificity_decided": 0.99,
        "confidently_wrong": 0.004,
        "wrong_name": 0.01,
        "macro_f1_normal_decision": 0.93,
        "states": {"unclassified": 0.2},
        "confident_blast_on_normal": 0.001,
        "blast_called_not_blast": 0.002,
    }
    v = {"ensemble": {"cells": cells}, "m": {"cells": cells}}
    return {
        "models": {"m": "0" * 64},
        "variants": {"original": v, "colour_to_other": v},
        "fields": {"rule": "R", "test": {"n": 10, "accuracy": 0.9, "uncertain_rate": 0.1, "wrong_rate": 0.0}},
    }


def test_cell_card_section_is_added_once_and_renewed(tmp_path):
    from device.models.bundle import CellSpec, OutputSpec, write_manifest
    from training.cells.card import BEGIN, END, write_card

    labels = [Label("blast_pre", "Blast", True), Label("platelet", "Platelet", False, white=False)]
    outputs = [OutputSpec("probabilities", (1, 2))]
    m = Manifest("m", "mobilenetv2", labels, InputSpec(96, 96, um_per_px=0.25), outputs, "0" * 64)
    m.cells = CellSpec(0.479, 0.95, 0.7)
    write_manifest(tmp_path, m)
    (tmp_path / "MODEL.md").write_text("# Model card: `m`\n\nconvert's card\n")
    write_card(tmp_path, _eval_doc())
    write_card(tmp_path, _eval_doc())
    text = (tmp_path / "MODEL.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and "convert's card" in text
    assert "not a diagnosis" in text and "0.95" in text and "24 µm" in text and "99.50%" in text
    m.cells = None
    write_manifest(tmp_path, m)
    with pytest.raises(SmearscopeError, match="not a cell bundle"):
        write_card(tmp_path, _eval_doc())
