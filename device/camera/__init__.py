"""Camera sources behind one small interface (`FrameSource`), chosen by `[camera] source`."""

from __future__ import annotations

from device.camera.base import CameraError, FrameSource
from device.config import CameraConfig


def open_source(cfg: CameraConfig, *, pace: bool = True) -> FrameSource:
    """Build (not yet open) the configured source. `pace=False` lets replay run as fast as it can."""
    if cfg.source == "replay":
        from device.camera.replay import ReplaySource

        return ReplaySource(cfg.path or None, fps=cfg.fps if pace else 0.0, loop=cfg.loop)
    if cfg.source == "opencv":
        from device.camera.opencv import OpenCVSource

        return OpenCVSource(cfg.device, cfg.width, cfg.height, cfg.fps)
    if cfg.source == "picamera2":
        from device.camera.picam import Picamera2Source

        return Picamera2Source(cfg.width, cfg.height, cfg.fps)
    if cfg.source == "jetson":
        from device.camera.jetson import JetsonSource

        return JetsonSource(cfg.width, cfg.height, cfg.fps, sensor_id=cfg.device)
    raise CameraError(f"[camera] source: unknown source {cfg.source!r}")


__all__ = ["CameraError", "FrameSource", "open_source"]
