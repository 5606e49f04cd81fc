"""`smearscope classify IMAGE... [--model DIR]... [--json]` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.cli import main


def test_json_lines_and_a_corrupt_file(
    tiny_bundle: Path, sample_images: list[Path], tmp_path: Path, capsys
) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(sample_images[0].read_bytes()[:200])  # truncated JPEG
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    files = [
        str(sample_images[0]),
        str(corrupt),
        str(sample_images[1]),
        str(text),
        str(tmp_path / "gone.png"),
    ]
    code = main(["classify", *files, "--model", str(tiny_bundle), "--json"])
    out, err = capsys.readouterr()
    assert code != 0
    lines = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
    assert [ln["file"] for ln in lines] == [str(sample_images[0]), str(sample_images[1])]
    for rec in lines:
        assert {"file", "label", "confidence", "probabilities", "abstained"} <= rec.keys()
        assert rec["label"] in rec["probabilities"]
        assert set(rec["probabilities"]) == {"Benign", "Early", "Pre", "Pro"}
        assert 0.0 <= rec["confidence"] <= 1.0 and isinstance(rec["abstained"], bool)
        assert sum(rec["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert str(corrupt) in err and "not a readable image" in err
    assert str(text) in err
    assert "gone.png" in err and "cannot read file" in err
    assert "Traceback" not in err


def test_human_output_and_success_exit(tiny_bundle: Path, sample_images: list[Path], capsys) -> None:
    code = main(["classify", *map(str, sample_images), "--model", str(tiny_bundle)])
    out, err = capsys.readouterr()
    assert code == 0
    assert len(out.splitlines()) == len(sample_images)
    assert all("confidence" in ln for ln in out.splitlines())
    assert "not a diagnosis" in err


def test_bad_bundle_is_a_clear_error(tiny_bundle: Path, sample_images: list[Path], capsys) -> None:
    (tiny_bundle / "model.tflite").write_bytes(b"tampered")
    code = main(["classify", str(sample_images[0]), "--model", str(tiny_bundle), "--json"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "sha256" in err and "Traceback" not in err


def test_default_models_come_from_models_default(
    tiny_bundle: Path, sample_images: list[Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    tiny_bundle.rename(models / "tiny")
    (models / "DEFAULT").write_text("# default ensemble\ntiny\n")
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(models))
    assert main(["classify", str(sample_images[2]), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out.splitlines()[0])
    assert rec["models"] == ["tiny-mobilenetv2-int8"]


def _with_scale(bundle: Path, um: float) -> Path:
    import json

    m = json.loads((bundle / "manifest.json").read_text())
    m["input"]["um_per_px"] = um
    (bundle / "manifest.json").write_text(json.dumps(m))
    return bundle


def test_um_per_px_tiles_the_image_at_the_models_scale(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    import cv2
    from test_tiling import smear

    img = tmp_path / "field.png"  # 0.5 µm/px, two white cells; the model is at 0.25 µm/px (64 px tiles)
    cv2.imwrite(str(img), cv2.cvtColor(smear(160, 120, 0.5, [(0.25, 0.3), (0.75, 0.7)]), cv2.COLOR_RGB2BGR))
    cfg = tmp_path / "c.toml"
    cfg.write_text("[quality]\nscale_check = false\n")
    bundle = str(_with_scale(tiny_bundle, 0.25))
    assert (
        main(["classify", str(img), "--model", bundle, "--json", "--um-per-px", "0.5", "--config", str(cfg)])
        == 0
    )
    out = json.loads(capsys.readouterr().out.splitlines()[0])
    f = out["field"]
    assert f["um_per_px"] == 0.5 and f["tiles"]["factor"] == 2.0 and not f["tiles"]["legacy"]
    assert 1 <= f["tiles"]["classified"] < f["tiles"]["tiles"]
    assert main(["classify", str(img), "--model", bundle, "--um-per-px", "fast"]) == 2
    assert "um_per_px" in capsys.readouterr().err
