"""The training images' µm/px (training/scale.py): measured at the model's input size, or unknown."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from smearkit import synthetic_smear

from training.scale import measure_training_scale, model_pixels_per_image_pixel


def _write(folder: Path, n: int, diameter: float, side: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rgb = synthetic_smear(diameter, cells=50, wbcs=1, size=(side, side), seed=i)
        p = folder / f"img{i:02d}.png"
        cv2.imwrite(str(p), rgb[:, :, ::-1])
        paths.append(p)
    return paths


def test_pixel_factor_follows_prepare():
    assert model_pixels_per_image_pixel((224, 224, 3), (288, 288), "center_crop") == pytest.approx(288 / 224)
    # A 4:3 frame centre-cropped to a square: the short side decides.
    assert model_pixels_per_image_pixel((300, 400, 3), (150, 150), "center_crop") == pytest.approx(0.5)
    assert model_pixels_per_image_pixel((100, 400, 3), (100, 100), "stretch") == pytest.approx(0.5)


def test_scale_is_measured_at_the_model_input_size(tmp_path):
    paths = _write(tmp_path / "a", 12, diameter=16, side=224)
    scale = measure_training_scale(paths, (288, 288), "center_crop")
    # 16-px cells in 224-px images become 16 * 288/224 = 20.6 px at the model's input: 7.5/20.6 µm/px.
    assert scale["um_per_px"] == pytest.approx(7.5 / (16 * 288 / 224), rel=0.08)
    assert scale["images_confident"] == 12
    assert scale["method"].startswith("measured") and "288x288" in scale["method"]
    json.dumps(scale)  # goes into provenance.json as is


def test_too_few_cells_leaves_the_scale_unknown(tmp_path):
    folder = tmp_path / "blank"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"b{i}.png"), synthetic_smear(16, cells=1, wbcs=0, size=(96, 96), seed=i))
    scale = measure_training_scale(sorted(folder.glob("*.png")), (96, 96))
    assert scale["um_per_px"] is None
    assert scale["method"].startswith("could not be measured")


def test_tool_writes_the_scale_into_an_old_bundle_and_its_card(tmp_path):
    import shutil

    from device.models.bundle import load_bundle
    from training.scale import main

    bundle = tmp_path / "bundle"
    shutil.copytree(Path(__file__).parent / "data" / "tiny-bundle", bundle)
    assert load_bundle(bundle).manifest.input.um_per_px is None
    paths = _write(tmp_path / "imgs", 12, diameter=16, side=224)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [{"path": str(p), "label": "x"} for p in paths]}))
    assert main(["--split", str(split), "--size", "288", "--bundle", str(bundle), "--write"]) == 0
    man = load_bundle(bundle).manifest  # the model file is untouched: the hash still matches
    assert man.input.um_per_px == pytest.approx(7.5 / (16 * 288 / 224), rel=0.08)
    assert man.provenance["um_per_px_method"].startswith("measured")
    assert man.provenance["scale"]["images_confident"] == 12
    card = (bundle / "MODEL.md").read_text()
    assert f"{man.input.um_per_px:.4g} µm per pixel" in card
    assert "7.5 µm" in card and "red cells" in card
