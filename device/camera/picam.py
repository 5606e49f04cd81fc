"""Raspberry Pi CSI cameras through picamera2 (libcamera). Imported only when chosen."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from device.camera.base import CameraError, FrameSource
from device.camera.controls import check_controls
from device.config import CameraConfig

#: The [camera] defaults; device/config.py holds them (and their ranges).
_CAMERA = CameraConfig()

INSTALL_HINT = (
    "picamera2 is not installed: `sudo apt install python3-picamera2` and make the venv with "
    "--system-site-packages (pip's picamera2 needs libcamera from apt anyway)"
)
ENABLE_HINT = (
    "no Pi camera found: check the ribbon cable, set `camera_auto_detect=1` in /boot/firmware/config.txt "
    "(or enable the camera in `sudo raspi-config` → Interface Options) and reboot; "
    "`rpicam-hello --list-cameras` should list it"
)


SETTLE_FRAMES = 12  # libcamera applies new controls a few frames later
_TOLERANCE = {"ExposureTime": 0.05, "AnalogueGain": 0.05, "ColourGains": 0.02}  # sensor quantisation
_REPORTED = ("ExposureTime", "AnalogueGain", "ColourGains")  # what frame metadata reports back


def _clamp(value: float, limits: tuple) -> float:
    lo, hi = limits[0], limits[1]
    if isinstance(lo, int | float) and lo is not None and value < lo:
        value = lo
    if isinstance(hi, int | float) and hi and value > hi:
        value = hi
    return value


def _close(want: Any, got: Any, tol: float) -> bool:
    if isinstance(want, tuple | list):
        return isinstance(got, tuple | list) and all(
            _close(w, g, tol) for w, g in zip(want, got, strict=True)
        )
    return abs(float(got) - float(want)) <= tol * max(abs(float(want)), 1e-9)


class Picamera2Source(FrameSource):
    name = "picamera2"

    def __init__(self, width: int = _CAMERA.width, height: int = _CAMERA.height, fps: float = _CAMERA.fps):
        self.width, self.height, self.fps = width, height, fps
        self._cam = None

    def set_controls(self, controls: Mapping[str, Any]) -> dict[str, Any]:
        """libcamera controls: those the camera lacks are skipped, values are clamped to its limits,
        and a control counts as applied once the frame metadata reports it (enable flags, which the
        metadata does not echo, count when the camera accepted them)."""
        controls = check_controls(controls)  # typed, finite, in range: never NaN to libcamera
        if self._cam is None:
            raise CameraError("Pi camera is not open")
        available = self._cam.camera_controls  # {name: (min, max, default)}
        send: dict[str, Any] = {}
        for key, value in controls.items():
            if key not in available:
                continue
            limits = available[key]
            if key in ("AwbEnable", "AeEnable"):
                send[key] = bool(value)
            elif key == "ColourGains":
                send[key] = tuple(float(_clamp(float(v), limits)) for v in value)
            elif key == "ExposureTime":
                send[key] = int(round(_clamp(float(value), limits)))
            else:
                send[key] = float(_clamp(float(value), limits))
        if not send:
            return {}
        try:
            self._cam.set_controls(send)
        except Exception as exc:  # noqa: BLE001 - libcamera raises RuntimeError for a refused control
            raise CameraError(f"the Pi camera refused the controls {sorted(send)}: {exc}") from exc
        applied = {k: v for k, v in send.items() if k not in _REPORTED}
        for _ in range(SETTLE_FRAMES):
            md = self._cam.capture_metadata()
            for key in _REPORTED:
                if key in send and key in md and _close(send[key], md[key], _TOLERANCE[key]):
                    got = md[key]
                    applied[key] = tuple(got) if isinstance(got, list | tuple) else got
            if len(applied) == len(send):
                break
        return applied

    def get_controls(self) -> dict[str, Any]:
        if self._cam is None:
            return {}
        md = self._cam.capture_metadata()
        return {k: (tuple(md[k]) if isinstance(md[k], list | tuple) else md[k]) for k in _REPORTED if k in md}

    def describe(self) -> str:
        return f"picamera2 {self.width}x{self.height}@{self.fps:g}"

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise CameraError(INSTALL_HINT) from exc
        try:
            if not Picamera2.global_camera_info():
                raise CameraError(ENABLE_HINT)
            cam = Picamera2()
            cfg = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": float(self.fps)},
                buffer_count=2,
            )
            cam.configure(cfg)
            cam.start()
        except CameraError:
            raise
        except Exception as exc:  # libcamera raises RuntimeError for a busy camera
            raise CameraError(
                f"cannot start the Pi camera ({exc}): another process may hold it "
                "(stop it, e.g. `sudo systemctl stop smearscope` or close rpicam-*)"
            ) from exc
        self._cam = cam

    def read(self) -> np.ndarray:
        if self._cam is None:
            raise CameraError("Pi camera is not open")
        try:
            frame = self._cam.capture_array("main")
        except Exception as exc:
            raise CameraError(f"Pi camera stopped delivering frames ({exc})") from exc
        # picamera2's "RGB888" is BGR byte order in memory (libcamera naming): convert to RGB.
        return np.ascontiguousarray(frame[..., 2::-1] if frame.shape[-1] >= 3 else frame)

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception:  # noqa: BLE001 - closing a dead camera must not raise
                pass
            self._cam = None
