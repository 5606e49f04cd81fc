"""The virtual microscope (device/camera/virtual.py) behind the replay camera."""

from __future__ import annotations

import numpy as np
import pytest

from device.camera import open_source
from device.camera.virtual import SAMPLES_UM_PER_PX, VirtualMicroscope, VirtualOptics, build_slide
from device.colour import estimate_background
from device.config import load_config
from device.errors import ConfigError
from device.optics.scale import estimate_scale


def _camera(**keys):
    cfg = load_config(system_config=None, overrides={"camera": {"virtual": True, **keys}})
    src = open_source(cfg.camera, pace=False)
    src.open()
    return src


def test_frames_have_the_configured_size_and_are_deterministic():
    a = _camera(width=320, height=240, noise=2.0, seed=3)
    b = _camera(width=320, height=240, noise=2.0, seed=3)
    fa, fb = [a.read() for _ in range(3)], [b.read() for _ in range(3)]
    assert fa[0].shape == (240, 320, 3) and fa[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert "virtual microscope" in a.describe() and "320x240" in a.describe()


def test_default_replay_is_unchanged():
    cfg = load_config(system_config=None)
    assert cfg.camera.virtual is False
    src = open_source(cfg.camera, pace=False)
    src.open()
    assert src.read().shape == (224, 224, 3)  # the sample slides as they are


def test_rendered_scale_is_what_the_red_cells_say():
    # The samples at their own scale, and at 2x finer µm/px: the red cells measure twice as big.
    native = _camera(width=448, height=448, pan=False).read()
    fine = _camera(width=896, height=896, pan=False, um_per_px=SAMPLES_UM_PER_PX / 2).read()
    a, b = estimate_scale(native), estimate_scale(fine)
    assert a.diameter_px and b.diameter_px
    assert b.diameter_px / a.diameter_px == pytest.approx(2.0, rel=0.10)
    # and µm/px from the red cells matches the configured one (the samples' scale was measured this way)
    assert b.um_per_px() == pytest.approx(SAMPLES_UM_PER_PX / 2, rel=0.15)


def test_tint_vignetting_and_noise():
    plain = _camera(width=400, height=300, pan=False).read()
    warm = _camera(width=400, height=300, pan=False, tint_r=1.1, tint_b=0.8).read()
    bp, bw = estimate_background(plain), estimate_background(warm)
    assert bw[2] / bp[2] == pytest.approx(0.8, abs=0.05)
    vig = _camera(width=400, height=300, pan=False, vignetting=0.5).read().astype(float)
    ratio = vig[:20, :20].mean() / plain[:20, :20].astype(float).mean()
    assert ratio == pytest.approx(0.5, abs=0.08)  # corners lose half their light
    assert vig[140:160, 190:210].mean() == pytest.approx(plain[140:160, 190:210].mean(), rel=0.03)
    noisy = _camera(width=400, height=300, pan=False, noise=6.0).read().astype(float)
    assert 3.0 < np.std(noisy - plain) < 8.0


def test_stage_dwells_then_moves():
    optics = VirtualOptics(width=64, height=48, dwell_s=1.0, move_s=1.0)
    scope = VirtualMicroscope(build_slide([np.full((64, 64, 3), 200, np.uint8)]), optics, fps=5)
    positions = [scope.position(i) for i in range(10)]  # 2 s at 5 fps
    assert all(settled for _, _, settled in positions[:5])
    assert len({(x, y) for x, y, _ in positions[:5]}) == 1
    assert not any(settled for _, _, settled in positions[5:10])
    assert positions[9][:2] != positions[0][:2]
    assert scope.position(10)[2]  # arrived at the next field


def test_slide_wraps_without_an_edge():
    slide = build_slide([np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)] * 4)
    assert np.array_equal(slide[:, 0], slide[:, -1])  # mirrored: the left and right edges meet
    assert np.array_equal(slide[0], slide[-1])


def test_bad_virtual_keys_are_config_errors():
    with pytest.raises(ConfigError, match="vignetting"):
        load_config(system_config=None, overrides={"camera": {"vignetting": 1.5}})
    with pytest.raises(ConfigError, match="um_per_px"):
        load_config(system_config=None, overrides={"camera": {"um_per_px": -1.0}})


def test_the_documented_virtual_hq_camera(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "virtual-hq.toml"
    cfg = load_config(example, system_config=None)
    assert cfg.camera.virtual and (cfg.camera.width, cfg.camera.height) == (2028, 1520)
    src = open_source(cfg.camera, pace=False)
    src.open()
    frame = src.read()
    assert frame.shape == (1520, 2028, 3)
    est = estimate_scale(frame)
    assert est.confident, est
    assert est.um_per_px() == pytest.approx(cfg.camera.um_per_px, rel=0.15)
