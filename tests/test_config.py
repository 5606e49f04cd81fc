"""Config: embedded defaults, layering (file → CLI → env), and errors that name the bad key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from device.config import add_config_args, config_from_args, load_config
from device.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(system_config=None, env={})
    assert cfg.web.host == "127.0.0.1" and cfg.web.port == 8080
    assert cfg.web.max_upload_mb == 20 and cfg.web.open_live_view is False
    assert cfg.camera.source == "replay"
    assert cfg.sync.enabled is False and cfg.sync.batch_size > 0
    assert Path(cfg.device.data_dir) == (tmp_path / "var").resolve()
    assert cfg.source == "defaults"


def test_layers_file_then_cli_then_env(tmp_path):
    p = write(
        tmp_path, '[web]\nport = 9000\nhost = "0.0.0.0"\n[camera]\nfps = 2\n[device]\ndata_dir = "d1"\n'
    )
    cfg = load_config(p, port=9100, data_dir=tmp_path / "d2", env={"SMEARSCOPE_SECRET_KEY": "s3cret"})
    assert cfg.web.port == 9100  # CLI beats file
    assert cfg.web.host == "0.0.0.0"  # file beats defaults
    assert cfg.camera.fps == 2.0 and isinstance(cfg.camera.fps, float)
    assert cfg.device.data_dir == str((tmp_path / "d2").resolve())
    assert cfg.web.secret_key == "s3cret"  # env secret
    assert cfg.to_dict()["web"]["secret_key"] == "***"
    assert cfg.source == str(p)


def test_system_file_used_when_present(tmp_path):
    sys_cfg = write(tmp_path, "[store]\nevery_s = 3\n")
    assert load_config(system_config=sys_cfg, env={}).store.every_s == 3.0
    assert load_config(system_config=tmp_path / "missing.toml", env={}).store.every_s == 10.0


def test_sync_token_from_env(tmp_path):
    p = write(tmp_path, '[sync]\nenabled = true\nhub_url = "https://hub.example"\n')
    cfg = load_config(p, env={"SMEARSCOPE_SYNC_TOKEN": "tok"})
    assert cfg.sync.token == "tok" and cfg.sync.enabled


@pytest.mark.parametrize(
    "text, message",
    [
        ("[web]\nprot = 1\n", "unknown key [web] prot"),
        ("[camera]\nfps = 0\n", "[camera] fps: must be > 0"),
        ('[camera]\nfps = "fast"\n', "[camera] fps: must be a number"),
        ("[web]\nport = 70000\n", "[web] port"),
        ("[web]\nopen_live_view = 1\n", "[web] open_live_view: must be true or false"),
        ('[camera]\nsource = "webcam"\n', "[camera] source: must be one of"),
        ("[sync]\nenabled = true\n", "[sync] hub_url: must be set"),
        ("[quality]\nmax_clipped_high = 2\n", "[quality] max_clipped_high"),
        ("[classifier]\nmodels = 3\n", "[classifier] models: must be a list"),
        ("[nope]\na = 1\n", "unknown section [nope]"),
        ("[web]\nmjpeg_fps = inf\n", "[web] mjpeg_fps: must be a finite number, not inf"),
        ("[web]\nmjpeg_fps = 1000\n", "[web] mjpeg_fps: must be > 0 and <= 30 frames/s"),
        ("[camera]\nfps = nan\n", "[camera] fps: must be a finite number, not nan"),
        ("[camera]\nwidth = -5\n", "[camera] width: must be between 1 and 16384 px, not -5"),
        ("[sync]\ntimeout_s = -inf\n", "[sync] timeout_s: must be a finite number"),
        ("[store]\njpeg_quality = 95.5\n", "[store] jpeg_quality: must be an integer"),
        ("[calibration]\nmax_spread = 1\n", "[calibration] max_spread: must be > 0 and < 1"),
        ("[web\n", "not valid TOML"),
    ],
)
def test_bad_values_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), env={})
    assert message in str(exc.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_cli_arguments(tmp_path):
    p = argparse.ArgumentParser()
    add_config_args(p)
    args = p.parse_args(["--config", str(write(tmp_path, "")), "--port", "8181", "--data-dir", str(tmp_path)])
    cfg = config_from_args(args)
    assert cfg.web.port == 8181 and cfg.device.data_dir == str(tmp_path.resolve())


def test_every_number_in_the_config_has_a_range():
    """A new numeric key cannot slip in unchecked: each declares its Bounds (typed, finite, in range)."""
    import dataclasses

    from device.config import Config

    cfg = Config()
    for section in dataclasses.fields(cfg):
        if section.name == "source":
            continue
        for f in dataclasses.fields(getattr(cfg, section.name)):
            if f.type in ("int", "float"):
                assert "bounds" in f.metadata, f"[{section.name}] {f.name} has no Bounds"


def test_retired_keys_load_with_a_warning_and_do_nothing(tmp_path, caplog) -> None:
    from device.config import RETIRED_KEYS, load_config

    path = tmp_path / "old.toml"
    path.write_text("[classifier]\nsmoothing_alpha = 0.3\nfield_change = 12.0\nthreads = 1\n")
    with caplog.at_level("WARNING", logger="device.config"):
        cfg = load_config(path)
    assert cfg.classifier.threads == 1
    assert not hasattr(cfg.classifier, "smoothing_alpha") and not hasattr(cfg.classifier, "field_change")
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"[classifier] {key} is no longer used" in warned for _, key in RETIRED_KEYS)
