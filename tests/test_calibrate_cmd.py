"""`smearscope calibrate`: typed, micrometer, automatic (over replayed frames), colour, and the
profile actions, on the configured (replay) camera."""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from device.camera.profiles import Profile, ProfileError, ProfileStore
from device.cli import main
from device.optics import calibrate as cal


@dataclass
class Est:
    diameter_px: float | None
    confident: bool
    reason: str | None = None


@pytest.fixture
def station(tmp_path):
    """A config whose replay camera shows `frames/` (filled by the test)."""
    frames = tmp_path / "frames"
    frames.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[device]\ndata_dir = "{tmp_path / "data"}"\n[camera]\npath = "{frames}"\nfps = 50.0\n')

    def run(*args: str) -> int:
        return main(["calibrate", "--config", str(cfg), *args])

    run.frames = frames
    run.profiles = ProfileStore(tmp_path / "data" / "profiles.toml")
    return run


def _frame(folder, name, rgb):
    cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_typed_list_activate_remove(station, capsys):
    assert station("--name", "HQ cam, 40x", "--um-per-px", "0.181") == 0
    assert station("--name", "HQ cam, 100x oil", "--um-per-px", "0.0725", "--activate") == 0
    assert station("--name", "HQ cam, 100x oil", "--um-per-px", "0.07") == 2  # exists: --replace
    assert "--replace" in capsys.readouterr().err
    assert station("list", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["active"] == "HQ cam, 100x oil" and len(out["profiles"]) == 2
    assert station("activate", "HQ cam, 40x") == 0
    assert station.profiles.active_name() == "HQ cam, 40x"
    assert station("remove", "HQ cam, 40x") == 0
    assert "no profile is active" in capsys.readouterr().out
    assert station("activate", "nope") == 2
    assert station("--name", "typo", "--um-per-px", "30") == 2  # px/µm typed: refused


def test_freeze_then_micrometer(station, tmp_path, capsys):
    _frame(station.frames, "a.png", np.full((120, 160, 3), 200, np.uint8))
    out = tmp_path / "frozen.png"
    assert station("--freeze", str(out)) == 0
    assert cv2.imread(str(out)).shape == (120, 160, 3)
    assert station("--name", "HQ cam, 40x", "--micrometer", "100", "--points", "10,60,150,60") == 0
    p = station.profiles.get("HQ cam, 40x")
    assert p.method == "micrometer" and p.um_per_px == pytest.approx(100 / 140)
    assert p.micrometer["points"] == [[10.0, 60.0], [150.0, 60.0]]
    assert station("--name", "x", "--micrometer", "100", "--points", "10,60") == 2
    assert "X1,Y1,X2,Y2" in capsys.readouterr().err


def test_automatic_over_live_frames(station, monkeypatch, capsys):
    for i in range(3):
        _frame(station.frames, f"{i}.png", np.full((60, 80, 3), 180 + i, np.uint8))
    steady = iter([Est(40.0 + 0.1 * (i % 3), True) for i in range(100)])
    monkeypatch.setattr(cal, "_default_estimator", lambda: lambda rgb, rbc_um: next(steady))
    assert station("--name", "HQ cam, 100x oil", "--frames", "8") == 0
    p = station.profiles.active()
    assert p.method == "auto" and p.n_frames == 8 and p.um_per_px == pytest.approx(7.5 / 40.1, rel=1e-3)
    assert "replay" in p.camera
    shaky = iter([Est(d, True) for d in (20, 30, 40, 50, 60, 70, 80, 90)])
    monkeypatch.setattr(cal, "_default_estimator", lambda: lambda rgb, rbc_um: next(shaky))
    assert station("--name", "shaky", "--frames", "8") == 2
    assert "disagree" in capsys.readouterr().err
    assert station.profiles.get("shaky") is None  # nothing stored when refused


def test_white_on_a_camera_without_controls_keeps_a_software_gain(station, capsys):
    _frame(station.frames, "blank.png", np.full((60, 80, 3), (200, 230, 160), np.uint8))
    assert station("--white") == 2  # no profile yet
    assert station("--name", "USB cam, 40x", "--um-per-px", "0.2") == 0
    assert station("--white") == 0
    p = station.profiles.get("USB cam, 40x")
    assert p.white_gains == pytest.approx([230 / 200, 1.0, 230 / 160], rel=0.01)
    out = capsys.readouterr().out
    assert "ignored by this camera: AeEnable, AwbEnable, ColourGains" in out  # replay has no controls


def test_backup_includes_the_profiles(station, tmp_path):
    from device.store import Store

    Store(tmp_path / "data", reserve_bytes=0).close()
    assert station("--name", "HQ cam, 40x", "--um-per-px", "0.181") == 0
    cfg = tmp_path / "config.toml"
    assert main(["backup", "--config", str(cfg), str(tmp_path / "bk"), "--keep", "0"]) == 0
    (copy,) = (tmp_path / "bk").glob("smearscope-*/profiles.toml")
    assert ProfileStore(copy).get("HQ cam, 40x").um_per_px == 0.181


def test_doctor_says_when_the_scale_is_unknown(station, tmp_path, capsys):
    from device.commands.doctor import WARN, check_calibration
    from device.config import load_config

    cfg = load_config(tmp_path / "config.toml", system_config=None, env={})
    (c,) = check_calibration(cfg, None)
    assert c.status == WARN and "scale" in c.message and "unknown" in c.message
    assert station("--name", "HQ cam, 40x", "--um-per-px", "0.181") == 0
    (c,) = check_calibration(cfg, None)
    assert c.status == "ok" and "HQ cam, 40x" in c.message
    station.profiles.path.write_text("not toml [")
    (c,) = check_calibration(cfg, None)
    assert c.status == "fail" and "not valid TOML" in c.message


def test_automatic_checks_the_name_before_measuring(station, monkeypatch, capsys):
    def never():
        raise AssertionError("measured although the name was wrong")

    monkeypatch.setattr(cal, "_default_estimator", never)
    assert station("--frames", "5") == 2
    assert "--name" in capsys.readouterr().err
    assert station("--name", "A", "--um-per-px", "0.1") == 0
    assert station("--name", "A", "--frames", "5") == 2
    assert "--replace" in capsys.readouterr().err


def test_export_then_import_on_another_station(station, tmp_path, capsys):
    assert station("--name", "HQ cam, 40x", "--um-per-px", "0.181") == 0
    assert station("--name", "HQ cam, 100x oil", "--um-per-px", "0.0725", "--activate") == 0
    capsys.readouterr()
    assert station("export") == 0
    copy = tmp_path / "copy.toml"
    copy.write_text(capsys.readouterr().out)
    other = ProfileStore(tmp_path / "other" / "profiles.toml")
    other.save(Profile("HQ cam, 40x", 0.2))
    with pytest.raises(ProfileError, match="already here: HQ cam, 40x"):
        other.import_from(copy)
    assert other.get("HQ cam, 40x").um_per_px == 0.2  # nothing changed
    assert other.import_from(copy, replace=True) == ["HQ cam, 40x", "HQ cam, 100x oil"]
    assert other.active_name() == "HQ cam, 40x"  # the station's own active profile stays
    assert other.get("HQ cam, 40x").um_per_px == 0.181
    assert station("import", str(copy)) == 2  # same names here: --replace needed
    assert main(["calibrate", "--data-dir", str(tmp_path / "d2"), "import", str(copy)]) == 0
    assert ProfileStore(tmp_path / "d2" / "profiles.toml").active_name() == "HQ cam, 100x oil"
