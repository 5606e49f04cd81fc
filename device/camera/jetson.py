"""Jetson CSI cameras: a GStreamer `nvarguscamerasrc` pipeline opened by OpenCV."""

from __future__ import annotations

import cv2

from device.camera.base import CameraError
from device.camera.opencv import OpenCVSource
from device.config import CameraConfig

#: The [camera] defaults; device/config.py holds them (and their ranges).
_CAMERA = CameraConfig()


def gstreamer_pipeline(sensor_id: int, width: int, height: int, fps: float) -> str:
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={max(1, round(fps))}/1 ! "
        "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1"
    )


class JetsonSource(OpenCVSource):
    name = "jetson"

    def __init__(
        self,
        width: int = _CAMERA.width,
        height: int = _CAMERA.height,
        fps: float = _CAMERA.fps,
        sensor_id: str = "0",
    ):
        super().__init__(sensor_id, width, height, fps)
        self.backend = cv2.CAP_GSTREAMER

    def set_controls(self, controls):
        """nvarguscamerasrc takes exposure and white balance as pipeline properties, not through
        OpenCV: none applied here (the profile's software white gain is used instead)."""
        return {}

    def get_controls(self):
        return {}

    def describe(self) -> str:
        return f"jetson csi sensor {self.device} {self.width}x{self.height}@{self.fps:g}"

    def open(self) -> None:
        info = [ln for ln in cv2.getBuildInformation().splitlines() if "GStreamer:" in ln]
        if not info or "YES" not in info[0]:
            raise CameraError(
                "this OpenCV has no GStreamer support: on JetPack use the system OpenCV "
                "(`sudo apt install python3-opencv`, venv with --system-site-packages), not opencv-python"
            )
        sensor = int(self.device) if self.device.isdigit() else 0
        cap = cv2.VideoCapture(
            gstreamer_pipeline(sensor, self.width, self.height, self.fps), cv2.CAP_GSTREAMER
        )
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"cannot open CSI camera sensor-id={sensor}: check the ribbon cable, that "
                "`nvargus-daemon` is running (`sudo systemctl restart nvargus-daemon`) and that no other "
                "process uses the camera"
            )
        self._cap = cap
