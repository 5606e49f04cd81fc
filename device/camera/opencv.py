"""USB (UVC) microscope and eyepiece cameras through OpenCV's V4L2 backend."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.camera.base import CameraError, FrameSource
from device.camera.controls import check_controls
from device.config import CameraConfig
from device.preprocess import to_rgb8

#: The [camera] defaults; device/config.py holds them (and their ranges).
_CAMERA = CameraConfig()


def _busy_hint(dev: str) -> str:
    """Which processes hold the device open (Linux /proc), to name them in the error."""
    path = Path(dev if dev.startswith("/") else f"/dev/video{dev}")
    holders = []
    try:
        target = path.resolve()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            fd_dir = Path("/proc", pid, "fd")
            try:
                for fd in fd_dir.iterdir():
                    if fd.resolve() == target:
                        holders.append(f"{(Path('/proc', pid, 'comm')).read_text().strip()} (pid {pid})")
                        break
            except OSError:
                continue
    except OSError:
        return ""
    return f"; it is in use by {', '.join(holders)}" if holders else ""


# controls vocabulary → (OpenCV property, to the camera's units, back from them, relative tolerance).
# V4L2: exposure_time_absolute is in 100 µs units; auto_exposure 1 = manual, 3 = aperture priority
# (some OpenCV builds use 0.25 / 0.75); the gain's units are the camera's own. UVC has no per-channel
# colour gains: ColourGains is never applied here (the profile's software white gain does that job).
_Conv = Callable[[Any], float]
CV_CONTROLS: dict[str, tuple[int, _Conv, Callable[[float], Any], float]] = {
    "AeEnable": (
        cv2.CAP_PROP_AUTO_EXPOSURE,
        lambda on: 3.0 if on else 1.0,
        lambda v: v > 1.5 or v == 0.75,
        0.0,
    ),
    "ExposureTime": (cv2.CAP_PROP_EXPOSURE, lambda us: float(us) / 100.0, lambda v: v * 100.0, 0.05),
    "AnalogueGain": (cv2.CAP_PROP_GAIN, float, float, 0.05),
    "AwbEnable": (cv2.CAP_PROP_AUTO_WB, lambda on: 1.0 if on else 0.0, lambda v: v >= 0.5, 0.0),
}


class OpenCVSource(FrameSource):
    name = "opencv"

    def __init__(
        self,
        device: str | int = "0",
        width: int = _CAMERA.width,
        height: int = _CAMERA.height,
        fps: float = _CAMERA.fps,
    ):
        self.device = str(device)
        self.width, self.height, self.fps = width, height, fps
        self._cap: cv2.VideoCapture | None = None
        self.backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY

    def describe(self) -> str:
        return f"opencv {self.device} {self.width}x{self.height}@{self.fps:g}"

    def _open_capture(self) -> cv2.VideoCapture:
        target: str | int = int(self.device) if self.device.isdigit() else self.device
        return cv2.VideoCapture(target, self.backend)

    def open(self) -> None:
        path = self.device if self.device.startswith("/") else f"/dev/video{self.device}"
        if sys.platform.startswith("linux") and not Path(path).exists():
            raise CameraError(
                f"camera {path} not found: plug the USB camera in (check `ls /dev/video*` and "
                "`v4l2-ctl --list-devices`), or set [camera] device / source (replay needs no camera)"
            )
        cap = self._open_capture()
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"cannot open camera {path}: it may be busy{_busy_hint(self.device)}, or the user lacks "
                "access (add it to the `video` group: `sudo usermod -aG video $USER`)"
            )
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        self._cap = cap

    def read(self) -> np.ndarray:
        if self._cap is None:
            raise CameraError(f"camera {self.device} is not open")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise CameraError(f"camera {self.device} stopped delivering frames (unplugged or busy?)")
        return to_rgb8(frame, name=f"camera {self.device}")

    def set_controls(self, controls: Mapping[str, Any]) -> dict[str, Any]:
        """Set what the camera has; a control took effect when `set` returned True AND reading it back
        gives the value (many UVC cameras accept a set and ignore it). Enable flags go first, since a
        camera ignores a manual exposure while its auto exposure is on."""
        controls = check_controls(controls)  # typed, finite, in range: never a negative exposure
        if self._cap is None:
            raise CameraError(f"camera {self.device} is not open")
        applied: dict[str, Any] = {}
        for key in sorted(controls, key=lambda k: k not in ("AeEnable", "AwbEnable")):
            if key not in CV_CONTROLS:
                continue
            prop, to_cam, from_cam, tol = CV_CONTROLS[key]
            want = to_cam(controls[key])
            if not self._cap.set(prop, want):
                continue
            got = float(self._cap.get(prop))
            if key in ("AeEnable", "AwbEnable"):
                if bool(from_cam(got)) == bool(controls[key]):
                    applied[key] = bool(controls[key])
            elif abs(got - want) <= max(tol * abs(want), 1e-6):
                applied[key] = from_cam(got)
        return applied

    def get_controls(self) -> dict[str, Any]:
        if self._cap is None:
            return {}
        out = {}
        for key in ("ExposureTime", "AnalogueGain"):
            prop, _, from_cam, _ = CV_CONTROLS[key]
            v = float(self._cap.get(prop))
            if v > 0:  # OpenCV answers 0 or -1 for a property the camera lacks
                out[key] = from_cam(v)
        return out

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
