"""training/cells: crop builder (scale, detail, manifest, groups), Reinhard transfer, label flags read
from the dataset, the field rule. Generated images only (no ../shared)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from convert.bundle import make_labels
from device.dataset_labels import DatasetLabel, read_labels, write_labels
from device.errors import SmearscopeError
from training.cells import build_crops
from training.cells.crops import CropOutside, CropSpec, cell_crop, degrade_detail, to_pitch
from training.cells.detect import FoundCell, nucleus_centres
from training.cells.image_rule import CellCall, field_call
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


def test_crop_keeps_physical_size_across_sources():
    spec = CropSpec(side_um=24.0, size=96, pitch_um=0.48)
    fine = smear(400, 400, [(200, 200, 10.0)], 0.1)  # a 10 µm disk at 0.1 µm/px
    coarse = smear(120, 120, [(60, 60, 10.0)], 0.48)  # the same disk at 0.48 µm/px
    a = dark_area_um2(cell_crop(fine, 200, 200, 0.1, spec), spec.um_per_px)
    b = dark_area_um2(cell_crop(coarse, 60, 60, 0.48, spec), spec.um_per_px)
    true = np.pi * 25.0
    assert abs(a - true) / true < 0.12 and abs(b - true) / true < 0.12
    assert cell_crop(fine, 200, 200, 0.1, spec).shape == (96, 96, 3)


def test_crop_refuses_to_leave_the_image():
    with pytest.raises(CropOutside):
        cell_crop(np.zeros((100, 100, 3), np.uint8), 5, 50, 0.48, CropSpec())


def test_detail_is_brought_to_the_coarse_pitch():
    rng = np.random.default_rng(0)
    fine = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # detail at every pixel
    soft = degrade_detail(fine, 0.1, 0.48)
    assert soft.shape == fine.shape
    # 1-px detail is averaged away: the local differences shrink several-fold
    assert (
        np.abs(np.diff(soft.astype(float), axis=1)).mean()
        < 0.4 * np.abs(np.diff(fine.astype(float), axis=1)).mean()
    )
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


def test_nucleus_centres_finds_cells_not_specks():
    um = 0.48
    img = smear(224, 224, [(60, 60, 7.0), (160, 150, 9.0), (120, 30, 2.0)], um)  # 2 µm speck: no cell
    found = nucleus_centres(img, um)
    got = sorted((c.x, c.y) for c in found)
    assert len(got) == 2
    assert np.abs(np.array(got) - [(60, 60), (160, 150)]).max() <= 1.5


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
    cells = [
        FoundCell(70, 70, 50.0, "test"),
        FoundCell(150, 150, 50.0, "test"),
        FoundCell(5, 5, 50.0, "test"),
    ]
    monkeypatch.setattr(build_crops, "white_cells", lambda rgb, um: cells)
    out = tmp_path / "crops"
    doc = build_crops.build(_args(ball, pbc, out))
    counts = doc["counts"]
    assert counts["ball_images"] == 8 and counts["ball_cells_at_edge"] == 8  # the (5, 5) cell of each image
    assert counts["crops"] == 8 * 2 + 8 and counts["stain_copies_written"] == counts["crops"]
    assert counts["per_label"]["blast_pre"] == 4 and counts["per_label"]["neutrophil"] == 1
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


def test_field_rule_is_safety_first():
    blast = {"blast_pre": True, "blast_pro": True, "hematogone": False, "neutrophil": False}
    c = CellCall
    one_blast = field_call([c("hematogone", 0.99, False), c("blast_pre", 0.9, False)], blast)
    assert (one_blast.state, one_blast.label) == ("malignant", "blast_pre")
    vote = field_call(
        [c("blast_pro", 0.9, False), c("blast_pre", 0.9, False), c("blast_pro", 0.8, False)], blast
    )
    assert vote.label == "blast_pro"
    assert field_call([c("hematogone", 0.99, False), c("blast_pre", 0.6, True)], blast).state == "uncertain"
    assert field_call([c("hematogone", 0.99, False), c("neutrophil", 0.98, False)], blast).state == "benign"
    assert field_call([], blast).state == "no_cells"
    assert field_call([c("unknown", 0.99, False)], blast).state == "malignant"  # undeclared counts as a blast


def test_cell_metrics_count_blasts_by_declared_flags():
    from training.cells.evaluate import cell_metrics

    labels = ["blast_pre", "hematogone", "neutrophil"]
    blast = {"blast_pre": True, "hematogone": False, "neutrophil": False}
    truth = ["blast_pre", "blast_pre", "blast_pre", "blast_pre", "neutrophil", "neutrophil", "hematogone"]
    c = CellCall
    calls = [
        c("blast_pre", 0.99, False),
        c("blast_pre", 0.5, True),  # uncertain, right arg-max
        c("neutrophil", 0.95, False),  # a blast confidently called normal
        c("hematogone", 0.4, True),  # uncertain, wrong arg-max
        c("neutrophil", 0.99, False),
        c("blast_pre", 0.97, False),  # a normal cell confidently called a blast
        c("hematogone", 0.9, False),
    ]
    m = cell_metrics(truth, calls, labels, blast, ["neutrophil"])
    assert m["blast_sensitivity"] == pytest.approx(2 / 4)
    assert m["blast_specificity"] == pytest.approx(2 / 3)
    assert m["confident_blast_on_normal"] == pytest.approx(1 / 3)
    assert m["blast_called_normal_confident"] == pytest.approx(1 / 4)
    assert m["uncertain"] == pytest.approx(2 / 7)
    assert m["confidently_wrong"] == pytest.approx(2 / 7)
    assert m["macro_f1_normal_types"] == pytest.approx(2 * 0.5 * 0.5 / 1.0)  # neutrophil P = R = 1/2
