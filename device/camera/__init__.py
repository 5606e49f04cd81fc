"""Camera sources behind one small interface (`FrameSource`), chosen by `[camera] source`; their
controls (`controls.py`), the calibration profiles (`profiles.py`), the source that applies the
active profile to every frame (`profiled.py`) and the virtual microscope behind the replay source
(`virtual.py`). Imports nothing of `device/optics/`."""

from __future__ import annotations

from dataclasses import dataclass

from device.camera.base import CameraError, FrameSource
from device.config import CameraConfig


def open_source(cfg: CameraConfig, *, pace: bool = True) -> FrameSource:
    """Build (not yet open) the configured source. `pace=False` lets replay run as fast as it can."""
    if cfg.source == "replay":
        from device.camera.replay import ReplaySource

        return ReplaySource(
            cfg.path or None,
            fps=cfg.fps if pace else 0.0,
            loop=cfg.loop,
            virtual=virtual_optics(cfg) if cfg.virtual else None,
            frame_rate=cfg.fps,
        )
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


def virtual_optics(cfg: CameraConfig):
    """The `[camera]` keys of the virtual microscope as `device.camera.virtual.VirtualOptics`."""
    from device.camera.virtual import SAMPLES_UM_PER_PX, VirtualOptics

    return VirtualOptics(
        width=cfg.width,
        height=cfg.height,
        um_per_px=cfg.um_per_px,
        source_um_per_px=cfg.source_um_per_px or SAMPLES_UM_PER_PX,
        tint_r=cfg.tint_r,
        tint_b=cfg.tint_b,
        vignetting=cfg.vignetting,
        noise=cfg.noise,
        blur=cfg.blur,
        pan=cfg.pan,
        dwell_s=cfg.dwell_s,
        move_s=cfg.move_s,
        seed=cfg.seed,
    )


@dataclass(frozen=True)
class DeclaredScale:
    """The µm/px a replay source states of its own frames (images of a known scale), read as a
    calibration profile's scale is (`name`, `um_per_px`) where no profile is active; the frames' red
    cells are checked against it all the same."""

    name: str
    um_per_px: float


def declared_scale(cfg: CameraConfig) -> DeclaredScale | None:
    """The scale the configured source declares of its frames: the virtual microscope renders at a
    chosen µm/px; a replay of the shipped samples is at their measured `SAMPLES_UM_PER_PX`; a replay of
    other images at `[camera] source_um_per_px` when set. A real camera (and a replay of images of
    unknown scale) declares none: its scale comes from calibration."""
    if cfg.source != "replay":
        return None
    from device.camera.virtual import SAMPLES_UM_PER_PX

    if cfg.virtual:
        return DeclaredScale("virtual microscope", virtual_optics(cfg).frame_um_per_px)
    if cfg.source_um_per_px > 0:
        return DeclaredScale("replay ([camera] source_um_per_px)", cfg.source_um_per_px)
    if not cfg.path:
        return DeclaredScale("replay (shipped samples)", SAMPLES_UM_PER_PX)
    return None


__all__ = [
    "CameraError",
    "DeclaredScale",
    "FrameSource",
    "declared_scale",
    "open_source",
    "virtual_optics",
]
