"""Calibration profiles: the file, its rules, and the calibration procedures (device/optics/)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

import numpy as np
import pytest

from device.camera.profiles import Profile, ProfileError, ProfileStore
from device.optics import calibrate as cal


def test_profiles_round_trip_and_first_is_active(tmp_path):
    path = tmp_path / "profiles.toml"
    ps = ProfileStore(path)
    assert ps.list() == [] and ps.active() is None
    ps.save(Profile("HQ cam, 100x oil", 0.0725, "typed", created_by="ana"))
    ps.save(Profile("HQ cam, 40x", 0.181, "micrometer", micrometer={"length_um": 100.0, "length_px": 552.0}))
    assert ps.active_name() == "HQ cam, 100x oil"  # the station's first profile is active by itself
    data = tomllib.loads(path.read_text())  # plain TOML an IT person can read and copy
    assert data["active"] == "HQ cam, 100x oil"
    assert [p["name"] for p in data["profile"]] == ["HQ cam, 100x oil", "HQ cam, 40x"]
    other = ProfileStore(path)  # another process (the daemon) sees what the command wrote
    other.activate("HQ cam, 40x")
    assert ps.active().name == "HQ cam, 40x" and ps.active().um_per_px == 0.181
    ps.remove("HQ cam, 40x")
    assert other.active() is None and [p.name for p in other.list()] == ["HQ cam, 100x oil"]


def test_profile_rules(tmp_path):
    ps = ProfileStore(tmp_path / "p.toml")
    ps.save(Profile("A", 0.1))
    with pytest.raises(ProfileError, match="exists"):
        ps.save(Profile("A", 0.2))
    ps.save(Profile("A", 0.2), replace=True)
    assert ps.get("A").um_per_px == 0.2
    with pytest.raises(ProfileError, match="pixels per µm"):
        ps.save(Profile("B", 13.8 * 2))  # px/µm typed by mistake
    with pytest.raises(ProfileError, match="name"):
        ps.save(Profile("  ", 0.1))
    with pytest.raises(ProfileError, match="no profile"):
        ps.activate("nope")
    with pytest.raises(ProfileError, match="white_gains"):
        Profile("C", 0.1, white_gains=[1.0, 9.0, 1.0]).check()


def test_a_file_broken_by_hand_keeps_the_last_good_profile(tmp_path):
    path = tmp_path / "p.toml"
    ps = ProfileStore(path)
    ps.save(Profile("A", 0.1))
    assert ps.active().name == "A"
    path.write_text(path.read_text() + "\n[[profile]\nbroken")
    with pytest.raises(ProfileError, match="not valid TOML"):
        ps.active()
    assert ps.last_active().name == "A" and ps.error
    path.write_text('schema_version = 1\nactive = "X"\n')
    with pytest.raises(ProfileError, match="not in the file"):
        ps.list()


def test_update_keeps_the_rest_of_the_profile(tmp_path):
    ps = ProfileStore(tmp_path / "p.toml")
    ps.save(Profile("A", 0.1, "auto", spread=0.03, n_frames=20))
    p = ps.update("A", controls={"AwbEnable": False, "ColourGains": [1.8, 1.5]}, white_gains=[1.0, 1.0, 1.1])
    again = ProfileStore(ps.path).get("A")
    assert again == p and again.spread == 0.03 and again.controls["ColourGains"] == [1.8, 1.5]
    assert ps.update("A", controls=None, white_gains=None).controls == {}


# -- automatic scale -------------------------------------------------------------------------


@dataclass
class Est:
    diameter_px: float | None
    confident: bool
    reason: str | None = None
    n_cells: int = 50
    spread: float | None = 0.1


def _estimator(diameters):
    it = iter(diameters)

    def estimate(rgb, *, rbc_um=7.5):
        d = next(it)
        return Est(d, True) if d else Est(None, False, "too few red cells")

    return estimate


def test_auto_scale_takes_the_robust_median():
    frames = lambda: np.zeros((8, 8, 3), np.uint8)  # noqa: E731
    ds = [50.0, 50.5, 49.5, 50.2, 80.0, None, 50.1, 49.9, 50.0, 50.3]  # one outlier, one "cannot tell"
    seen = []
    res = cal.auto_scale(frames, 10, estimate=_estimator(ds), progress=lambda i, n, w: seen.append(i))
    assert res.diameter_px == pytest.approx(50.1, abs=0.05)
    assert res.um_per_px == pytest.approx(7.5 / res.diameter_px)
    assert res.n_confident == 9 and res.n_frames == 10 and seen == list(range(1, 11))


def test_auto_scale_refuses_when_unstable_or_unsure():
    frames = lambda: np.zeros((8, 8, 3), np.uint8)  # noqa: E731
    with pytest.raises(cal.CalibrationRefused, match="only 2 of 10 frames.*too few red cells"):
        cal.auto_scale(frames, 10, estimate=_estimator([50, 51] + [None] * 8))
    with pytest.raises(cal.CalibrationRefused, match="disagree"):
        cal.auto_scale(frames, 6, estimate=_estimator([30, 40, 50, 60, 70, 80]))


def test_micrometer_scale():
    um, px = cal.micrometer_scale(100.0, (100, 500), (1480, 500))
    assert px == 1380 and um == pytest.approx(100 / 1380)
    with pytest.raises(cal.CalibrationRefused, match="apart"):
        cal.micrometer_scale(10.0, (100, 100), (105, 100))
    with pytest.raises(cal.CalibrationRefused, match="positive"):
        cal.micrometer_scale(0.0, (0, 0), (500, 0))


# -- colour reference --------------------------------------------------------------------------


class SimCamera:
    """A blank field seen through a camera: the light's tint times exposure and colour gains."""

    def __init__(self, *, colour_gains: bool = True, exposure: bool = True):
        self.tint = np.array([0.9, 1.0, 0.7])  # a warm lamp
        self.c = {"ExposureTime": 10000.0, "AnalogueGain": 2.0, "ColourGains": (1.0, 1.0)}
        self.can = {"AeEnable", "AwbEnable", "AnalogueGain"}
        self.can |= {"ColourGains"} if colour_gains else set()
        self.can |= {"ExposureTime"} if exposure else set()

    def read(self):
        r, b = self.c["ColourGains"] if "ColourGains" in self.can else (1.0, 1.0)
        level = 150.0 * self.c["ExposureTime"] / 10000.0 * self.tint * np.array([r, 1.0, b])
        return np.full((60, 80, 3), np.clip(level, 0, 255), np.uint8)

    def set_controls(self, controls):
        out = {}
        for k, v in controls.items():
            if k in self.can:
                self.c[k] = tuple(v) if isinstance(v, list | tuple) else v
                out[k] = self.c[k]
        return out

    def get_controls(self):
        return {k: v for k, v in self.c.items() if k in self.can}


def test_white_reference_fixes_the_camera_first():
    cam = SimCamera()
    res = cal.white_reference(cam.read, cam.set_controls, cam.get_controls, target=230)
    assert res.controls["AwbEnable"] is False and res.controls["AeEnable"] is False
    assert np.all(np.abs(np.array(res.after) - 230) <= 4)
    assert res.white_gains is None and res.ignored == []


def test_white_reference_falls_back_to_a_software_gain():
    cam = SimCamera(colour_gains=False)  # a UVC camera: exposure but no per-channel gains
    res = cal.white_reference(cam.read, cam.set_controls, cam.get_controls, target=230)
    assert res.ignored == ["ColourGains"]
    assert res.white_gains is not None
    corrected = np.array(res.after) * np.array(res.white_gains)
    assert np.all(np.abs(corrected - 230) < 2)


def test_white_reference_refuses_a_field_with_cells():
    cam = SimCamera()
    frame = cam.read()
    frame[10:50, 10:70] = (120, 60, 150)
    with pytest.raises(cal.CalibrationRefused, match="not blank"):
        cal.white_reference(lambda: frame, cam.set_controls, cam.get_controls)
