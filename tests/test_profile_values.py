"""Calibration profiles are checked at the door: every value typed, finite and in range, on import, on
load of the file already on disk (a clear error naming the file and the key), and in `doctor`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.camera.profiles import Profile, ProfileError, ProfileStore
from device.cli import main

GOOD = (
    'schema_version = 1\nactive = "HQ, 100x"\n'
    '[[profile]]\nname = "HQ, 100x"\num_per_px = 0.0725\nmethod = "auto"\n'
)


def _file(tmp_path: Path, extra: str, name: str = "other.toml") -> Path:
    path = tmp_path / name
    path.write_text(GOOD + extra, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "extra, key",
    [
        ('spread = "0.05"\n', "spread: must be a number, not '0.05'"),
        ("spread = nan\n", "spread: must be a finite number"),
        ("n_frames = 2.5\n", "n_frames: must be an integer"),
        ("n_frames = -3\n", "n_frames: must be between 1 and 100000 frames"),
        ('white_gains = [1.0, "x", 1.0]\n', "white_gains[1]: must be a number"),
        ("white_gains = [1.0, inf, 1.0]\n", "white_gains[1]: must be a finite number"),
        ("white_gains = 3\n", "white_gains: must be 3 numbers"),
        ("notes = 5\n", "notes: must be a string"),
        ("micrometer = {length_um = -100.0, length_px = 500.0}\n", "micrometer.length_um: must be > 0"),
        ("micrometer = {length_um = 100.0, length_px = 500.0, points = [[1, 2]]}\n", "micrometer.points"),
        ("controls = {ExposureTime = -5}\n", "controls.ExposureTime: must be > 0"),
        ("controls = {AnalogueGain = nan}\n", "controls.AnalogueGain: must be a finite number, not nan"),
        ("controls = {ColourGains = [1.5, inf]}\n", "controls.ColourGains[1]: must be a finite number"),
        ('controls = {AeEnable = "no"}\n', "controls.AeEnable: must be true or false"),
        ("controls = {Brightness = 0.5}\n", "unknown camera controls ['Brightness']"),
        ("controls = 7\n", "controls: must be a table"),
    ],
)
def test_import_refuses_a_bad_value_naming_file_and_key(tmp_path, extra, key):
    station = ProfileStore(tmp_path / "profiles.toml")
    station.save(Profile("mine", 0.1))
    before = station.path.read_bytes()
    src = _file(tmp_path, extra)
    with pytest.raises(ProfileError) as exc:
        station.import_from(src)
    msg = str(exc.value)
    assert str(src) in msg and "'HQ, 100x'" in msg and key in msg, msg
    assert station.path.read_bytes() == before  # nothing changed


def test_a_good_profile_keeps_its_values(tmp_path):
    extra = (
        "spread = 0.04\nn_frames = 18\nwhite_gains = [1.1, 1, 0.9]\n"
        "controls = {AeEnable = false, ExposureTime = 12330, AnalogueGain = 2.0, ColourGains = [1.9, 1.4]}\n"
    )
    station = ProfileStore(tmp_path / "profiles.toml")
    assert station.import_from(_file(tmp_path, extra)) == ["HQ, 100x"]
    p = station.get("HQ, 100x")
    assert p.spread == 0.04 and p.n_frames == 18 and p.white_gains == [1.1, 1.0, 0.9]
    assert p.controls == {
        "AeEnable": False,
        "ExposureTime": 12330.0,
        "AnalogueGain": 2.0,
        "ColourGains": [1.9, 1.4],
    }


def test_a_bad_file_on_disk_is_named_by_list_and_doctor(tmp_path, tiny_bundle, capsys, monkeypatch):
    """`calibrate list` says which file and key (exit 2, no traceback); doctor reports it as a failed
    calibration check with that message, not as a crashed check."""
    data = tmp_path / "data"
    data.mkdir()
    bad = _file(data, 'spread = "wide"\n', name="profiles.toml")
    models = tmp_path / "models"
    import shutil

    shutil.copytree(tiny_bundle, models / "tiny")
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(models))
    monkeypatch.delenv("SMEARSCOPE_SYNC_TOKEN", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\ndata_dir = "{data}"\n[camera]\nsource = "replay"\n')

    rc = main(["calibrate", "list", "--config", str(config)])
    err = capsys.readouterr().err
    assert rc != 0 and str(bad) in err and "spread: must be a number, not 'wide'" in err
    assert "Traceback" not in err

    main(["doctor", "--config", str(config), "--no-system", "--json", "--no-camera"])
    report = json.loads(capsys.readouterr().out)
    cal = [c for c in report["checks"] if c["area"] == "calibration"]
    assert cal and cal[0]["status"] == "fail", cal
    assert str(bad) in cal[0]["message"] and "spread" in cal[0]["message"]
    assert "crashed" not in cal[0]["message"]


def test_controls_asked_of_the_capture_thread_are_checked_in_the_asking_thread(tmp_path):
    from device.camera.base import FrameSource
    from device.camera.controls import ControlError
    from device.camera.profiled import ProfiledSource

    class Cam(FrameSource):
        def open(self):
            pass

        def read(self):
            raise AssertionError("not read")

    src = ProfiledSource(Cam(), ProfileStore(tmp_path / "p.toml"))
    with pytest.raises(ControlError, match="ExposureTime"):
        src.request({"ExposureTime": float("nan")})
    assert src._requests.empty()
