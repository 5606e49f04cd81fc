"""Camera sources: replay (folder, video, loop, pace), and the errors that say what to do."""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import pytest

from device.camera import CameraError, open_source
from device.camera.jetson import gstreamer_pipeline
from device.camera.opencv import OpenCVSource
from device.camera.picam import Picamera2Source
from device.camera.replay import ReplaySource
from device.config import CameraConfig


def test_default_replay_is_the_shipped_samples():
    with ReplaySource(fps=0) as src:
        frame = src.read()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert "samples" in src.describe()


def test_replay_folder_loops(sample_images):
    folder = sample_images[0].parent
    with ReplaySource(folder, fps=0) as src:
        frames = [src.read() for _ in range(len(sample_images) * 2)]
    assert np.array_equal(frames[0], frames[len(sample_images)])
    assert not np.array_equal(frames[0], frames[1])


def test_replay_no_loop_ends(sample_images):
    with ReplaySource(sample_images[0].parent, fps=0, loop=False) as src:
        for _ in sample_images:
            src.read()
        with pytest.raises(CameraError, match="end of"):
            src.read()


def test_replay_paces_frames(sample_images):
    with ReplaySource(sample_images[0].parent, fps=50) as src:
        t0 = time.monotonic()
        for _ in range(6):
            src.read()
        # 6 frames at 50 fps cannot arrive in under 5 intervals (a lower bound only: no upper bound)
        assert time.monotonic() - t0 >= 5 / 50 * 0.9


def test_replay_video(tmp_path, sample_images):
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 96))
    for p in sample_images:
        w.write(cv2.imread(str(p)))
    w.release()
    with ReplaySource(path, fps=0) as src:
        frames = [src.read() for _ in range(len(sample_images) + 1)]
    assert frames[0].shape == (96, 96, 3)
    assert np.abs(frames[0].astype(int) - frames[len(sample_images)].astype(int)).mean() < 2  # looped


def test_replay_errors(tmp_path):
    with pytest.raises(CameraError, match="does not exist"):
        ReplaySource(tmp_path / "nope").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="no images"):
        ReplaySource(tmp_path / "empty").open()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not a jpeg")
    src = ReplaySource(tmp_path / "bad", fps=0)
    src.open()
    with pytest.raises(CameraError, match="not a readable image"):
        src.read()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 device paths are Linux")
def test_missing_usb_camera_says_what_to_do():
    with pytest.raises(CameraError) as exc:
        OpenCVSource("/dev/video-smearscope-missing").open()
    assert "not found" in str(exc.value) and "v4l2-ctl" in str(exc.value)


def test_picamera2_missing_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a machine without it
    with pytest.raises(CameraError) as exc:
        Picamera2Source().open()
    assert "sudo apt install python3-picamera2" in str(exc.value)


def test_jetson_pipeline_string():
    s = gstreamer_pipeline(0, 1280, 720, 30)
    assert s.startswith("nvarguscamerasrc sensor-id=0") and "width=1280" in s and "appsink drop=true" in s


def test_factory_picks_the_configured_source():
    assert isinstance(open_source(CameraConfig(source="replay")), ReplaySource)
    assert isinstance(open_source(CameraConfig(source="opencv", device="2")), OpenCVSource)
    assert open_source(CameraConfig(source="replay", fps=7), pace=False).fps == 0


def test_picamera2_without_a_camera_names_the_raspi_config_step(monkeypatch):
    import types

    class FakePicamera2:
        @staticmethod
        def global_camera_info():
            return []

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    with pytest.raises(CameraError) as exc:
        Picamera2Source().open()
    assert "camera_auto_detect=1" in str(exc.value) and "raspi-config" in str(exc.value)


def test_opencv_source_reads_through_the_capture(monkeypatch, tmp_path):
    """The V4L2 path with OpenCV's capture replaced: BGR frames come out RGB; a failed read raises."""
    frames = [np.zeros((4, 8, 3), np.uint8) + np.array([255, 0, 0], np.uint8)]  # pure blue in BGR

    class FakeCap:
        def __init__(self, *a):
            pass

        def isOpened(self):
            return True

        def set(self, *a):
            return True

        def read(self):
            return (True, frames.pop().repeat(2, 0).repeat(2, 1)) if frames else (False, None)

        def release(self):
            pass

    dev = tmp_path / "video9"
    dev.touch()
    monkeypatch.setattr(cv2, "VideoCapture", FakeCap)
    src = OpenCVSource(str(dev))
    src.open()
    rgb = src.read()
    assert rgb[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(CameraError, match="stopped delivering frames"):
        src.read()
    src.close()
