"""Raspberry Pi CSI cameras through picamera2 (libcamera). Imported only when chosen."""

from __future__ import annotations

import numpy as np

from device.camera.base import CameraError, FrameSource

INSTALL_HINT = (
    "picamera2 is not installed: `sudo apt install python3-picamera2` and make the venv with "
    "--system-site-packages (pip's picamera2 needs libcamera from apt anyway)"
)
ENABLE_HINT = (
    "no Pi camera found: check the ribbon cable, set `camera_auto_detect=1` in /boot/firmware/config.txt "
    "(or enable the camera in `sudo raspi-config` → Interface Options) and reboot; "
    "`rpicam-hello --list-cameras` should list it"
)


class Picamera2Source(FrameSource):
    name = "picamera2"

    def __init__(self, width: int = 1280, height: int = 960, fps: float = 5.0):
        self.width, self.height, self.fps = width, height, fps
        self._cam = None

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
