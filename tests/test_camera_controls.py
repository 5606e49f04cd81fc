"""Camera controls (`FrameSource.set_controls`) with fakes for picamera2 and OpenCV, and the profiled
camera that applies the active calibration profile."""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import pytest

from device.camera.base import FrameSource
from device.camera.opencv import OpenCVSource
from device.camera.picam import Picamera2Source
from device.camera.profiled import ProfiledSource
from device.camera.profiles import Profile, ProfileStore
from device.camera.replay import ReplaySource
from device.colour import apply_gains


class FakePicamera2:
    """libcamera as picamera2 shows it: a control table, and metadata that reports applied values a
    couple of frames later, exposure quantised to the sensor's line time."""

    instances: list = []

    def __init__(self):
        self.camera_controls = {
            "AwbEnable": (False, True, True),
            "AeEnable": (False, True, True),
            "ColourGains": (0.0, 32.0, None),
            "ExposureTime": (26, 220000, 20000),
            "AnalogueGain": (1.0, 16.0, 1.0),
        }
        self.md = {"ExposureTime": 20000, "AnalogueGain": 1.0, "ColourGains": (2.1, 1.6)}
        self.pending: list[dict] = []
        self.sent: list[dict] = []
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info():
        return [{"Model": "imx477"}]

    def create_video_configuration(self, **kw):
        return kw

    def configure(self, cfg):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def close(self):
        pass

    def set_controls(self, c):
        self.sent.append(dict(c))
        self.pending.append(dict(c))

    def capture_metadata(self):
        if self.pending:  # applied one frame later
            c = self.pending.pop(0)
            for k in ("AnalogueGain", "ColourGains"):
                if k in c:
                    self.md[k] = c[k]
            if "ExposureTime" in c:
                self.md["ExposureTime"] = c["ExposureTime"] // 30 * 30  # line-time quantisation
        return dict(self.md)

    def capture_array(self, name):
        return np.zeros((4, 4, 3), np.uint8)


@pytest.fixture
def picam(monkeypatch):
    FakePicamera2.instances.clear()
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    src = Picamera2Source()
    src.open()
    yield src, FakePicamera2.instances[-1]
    src.close()


def test_picamera2_controls_are_clamped_and_confirmed_by_metadata(picam):
    src, cam = picam
    got = src.set_controls(
        {"AwbEnable": False, "AeEnable": False, "ExposureTime": 12345.6, "AnalogueGain": 40.0,
         "ColourGains": [1.9, 1.4]}
    )  # fmt: skip
    assert cam.sent[0]["AnalogueGain"] == 16.0  # clamped to the sensor's limit
    assert got["AwbEnable"] is False and got["AeEnable"] is False
    assert got["ExposureTime"] == 12330  # what the sensor really uses
    assert got["AnalogueGain"] == 16.0 and got["ColourGains"] == (1.9, 1.4)
    assert src.get_controls() == {"ExposureTime": 12330, "AnalogueGain": 16.0, "ColourGains": (1.9, 1.4)}


def test_picamera2_leaves_out_a_control_that_never_shows_up(picam):
    src, cam = picam
    cam.capture_metadata = lambda: {"ExposureTime": 20000, "AnalogueGain": 1.0}  # no ColourGains reported
    got = src.set_controls({"ColourGains": (1.5, 1.5), "AnalogueGain": 1.0})
    assert got == {"AnalogueGain": 1.0}


class FakeCap:
    """A UVC camera: accepts auto-exposure and exposure; says yes to gain but ignores it; has no
    auto white balance control."""

    def __init__(self, *a):
        self.props = {cv2.CAP_PROP_AUTO_EXPOSURE: 3.0, cv2.CAP_PROP_EXPOSURE: 156.0, cv2.CAP_PROP_GAIN: 0.0}
        self.calls = []

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.calls.append((prop, value))
        if prop == cv2.CAP_PROP_AUTO_WB:
            return False
        if prop == cv2.CAP_PROP_GAIN:
            return True  # accepted, then ignored
        if prop == cv2.CAP_PROP_EXPOSURE and self.props[cv2.CAP_PROP_AUTO_EXPOSURE] != 1.0:
            return True  # ignored while auto exposure is on
        self.props[prop] = float(value)
        return True

    def get(self, prop):
        return self.props.get(prop, -1.0)

    def read(self):
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self):
        pass


def test_opencv_controls_report_only_what_took_effect(monkeypatch, tmp_path):
    dev = tmp_path / "video3"
    dev.touch()
    monkeypatch.setattr(cv2, "VideoCapture", FakeCap)
    src = OpenCVSource(str(dev))
    src.open()
    got = src.set_controls(
        {
            "ExposureTime": 5000,
            "AeEnable": False,
            "AwbEnable": False,
            "AnalogueGain": 4.0,
            "ColourGains": (2, 1),
        }
    )
    assert got == {"AeEnable": False, "ExposureTime": 5000.0}  # V4L2 units of 100 µs, read back
    props = [p for p, _ in src._cap.calls]
    assert props.index(cv2.CAP_PROP_AUTO_EXPOSURE) < props.index(cv2.CAP_PROP_EXPOSURE)  # manual first
    assert src.get_controls() == {"ExposureTime": 5000.0}  # gain 0: the camera lacks a readable one


def test_sources_without_controls_apply_none(tmp_path):
    assert ReplaySource(tmp_path).set_controls({"AwbEnable": False}) == {}


class Counting(FrameSource):
    name = "fake"

    def __init__(self, level=(100, 120, 140), accepts=("AeEnable", "AwbEnable", "ExposureTime")):
        self.level = level
        self.accepts = accepts
        self.sets: list[dict] = []

    def open(self):
        pass

    def read(self):
        return np.full((4, 4, 3), self.level, np.uint8)

    def set_controls(self, controls):
        self.sets.append(dict(controls))
        return {k: v for k, v in controls.items() if k in self.accepts}


def test_profiled_source_applies_the_active_profile(tmp_path):
    store = ProfileStore(tmp_path / "p.toml")
    store.save(
        Profile(
            "100x", 0.07, white_gains=[2.0, 1.0, 0.5], controls={"AeEnable": False, "ColourGains": [2, 1]}
        )
    )
    store.save(Profile("40x", 0.18))
    inner = Counting()
    src = ProfiledSource(inner, store)
    src.open()
    assert src.read()[0, 0].tolist() == [200, 120, 70]  # software gain on every frame
    assert inner.sets == [{"AeEnable": False, "ColourGains": [2, 1]}]
    assert src.applied == {"AeEnable": False} and src.ignored == ["ColourGains"]
    src.raw = True
    assert src.read()[0, 0].tolist() == [100, 120, 140]  # the colour calibration sees the camera itself
    src.raw = False
    ProfileStore(store.path).activate("40x")  # e.g. the technician switched objective on the page
    assert src.read()[0, 0].tolist() == [100, 120, 140]
    assert inner.sets[-1] == {"AeEnable": True, "AwbEnable": True}  # automatic again
    src.close()
    src.open()
    src.read()
    assert len(inner.sets) == 2  # the 40x profile has no controls: nothing to set after a reopen


def test_profiled_source_serves_other_threads_in_the_capture_thread(tmp_path):
    inner = Counting()
    src = ProfiledSource(inner, ProfileStore(tmp_path / "p.toml"))
    src.open()
    fut = src.request({"ExposureTime": 100})
    assert not fut.done() and inner.sets == []
    src.read()
    assert fut.result(0) == {"ExposureTime": 100}


def test_apply_gains_saturates():
    rgb = np.array([[[100, 200, 250]]], np.uint8)
    assert apply_gains(rgb, [2.0, 1.0, 0.5]).tolist() == [[[200, 200, 125]]]
    assert apply_gains(rgb, [3.0, 1.5, 1.0]).tolist() == [[[255, 255, 250]]]


@pytest.mark.parametrize(
    "controls, message",
    [
        ({"ExposureTime": -5}, "controls.ExposureTime: must be > 0 and <= 1e+07 µs, not -5"),
        ({"AnalogueGain": float("nan")}, "controls.AnalogueGain: must be a finite number, not nan"),
        ({"AnalogueGain": "4"}, "controls.AnalogueGain: must be a number, not '4'"),
        ({"ColourGains": [1.5]}, "controls.ColourGains: must be two gains"),
        ({"ColourGains": [1.5, float("inf")]}, "controls.ColourGains[1]: must be a finite number"),
        ({"AeEnable": 0}, "controls.AeEnable: must be true or false"),
        ({"Brightness": 0.3}, "unknown camera controls ['Brightness']"),
    ],
)
def test_bad_controls_are_refused_before_any_camera_sees_them(picam, controls, message):
    from device.camera.controls import ControlError

    src, cam = picam
    with pytest.raises(ControlError) as exc:
        src.set_controls(controls)
    assert message in str(exc.value)
    assert cam.sent == []  # nothing reached libcamera
