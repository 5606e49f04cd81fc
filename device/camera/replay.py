"""Replay camera: a folder of images or a video file, looping at a set pace (the default source).

With `virtual` optics (device/camera/virtual.py) a folder of images becomes a virtual microscope: the
images are laid out as one slide and frames are rendered at a chosen size, µm/px, tint, vignetting and
noise, with a stage that moves between fields.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from device.camera.base import CameraError, FrameSource
from device.camera.virtual import VirtualMicroscope, VirtualOptics
from device.config import CameraConfig
from device.errors import ImageError
from device.paths import SAMPLES_DIR
from device.preprocess import read_image, to_rgb8

#: The [camera] defaults; device/config.py holds them (and their ranges).
_CAMERA = CameraConfig()

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_CACHED = 64  # a folder this small is decoded once and kept in memory
SAMPLES_LABEL_ROWS = 0.1  # fraction of a sample slide's height holding the dataset's scale-bar label


class ReplaySource(FrameSource):
    name = "replay"

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        fps: float = _CAMERA.fps,
        loop: bool = True,
        virtual: VirtualOptics | None = None,
        frame_rate: float = 5.0,
    ):
        """`fps` paces reads (0: as fast as asked); `frame_rate` is the virtual stage's clock (frames
        per second of simulated time), so an unpaced virtual camera still pans as a real one would."""
        self.path = Path(path) if path else SAMPLES_DIR
        self.fps = fps
        self.loop = loop
        self.virtual = virtual
        self.frame_rate = frame_rate if frame_rate > 0 else 5.0
        self._scope: VirtualMicroscope | None = None
        self._files: list[Path] = []
        self._cache: dict[int, np.ndarray] = {}
        self._video: cv2.VideoCapture | None = None
        self._i = 0
        self._next_t = 0.0

    def describe(self) -> str:
        pace = f"at {self.fps:g} fps" if self.fps > 0 else "(unpaced)"
        if self.virtual is not None:
            v = self.virtual
            return (
                f"virtual microscope over {self.path} {pace}: {v.width}x{v.height} at "
                f"{v.frame_um_per_px:.4g} µm/px"
            )
        return f"replay {self.path} {pace}"

    def open(self) -> None:
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise CameraError(f"replay camera: no images ({', '.join(IMAGE_SUFFIXES)}) in {self.path}")
            if self.virtual is not None:
                self._open_virtual()
        elif self.virtual is not None:
            raise CameraError(f"virtual camera: [camera] path must be a folder of images, not {self.path}")
        elif self.path.is_file():
            self._video = cv2.VideoCapture(str(self.path))
            if not self._video.isOpened():
                raise CameraError(f"replay camera: cannot open video {self.path} (unsupported or corrupt)")
        else:
            raise CameraError(
                f"replay camera: {self.path} does not exist; "
                "set [camera] path to a folder of images or a video file"
            )
        self._i = 0
        self._next_t = time.monotonic()

    def _pace(self) -> None:
        if self.fps <= 0:
            return
        now = time.monotonic()
        if self._next_t > now:
            time.sleep(self._next_t - now)
        self._next_t = max(self._next_t + 1.0 / self.fps, time.monotonic() - 1.0 / self.fps)

    def _open_virtual(self) -> None:
        assert self.virtual is not None
        try:
            images = [read_image(p) for p in self._files[:MAX_CACHED]]
            # The shipped samples carry a scale-bar label in their bottom rows: keep it off the slide.
            trim = SAMPLES_LABEL_ROWS if self.path.resolve() == SAMPLES_DIR.resolve() else 0.0
            self._scope = VirtualMicroscope.from_images(
                images, self.virtual, self.frame_rate, trim_bottom=trim
            )
        except ImageError as exc:
            raise CameraError(f"virtual camera: {exc}") from exc
        except ValueError as exc:
            raise CameraError(f"virtual camera: {exc}") from exc

    def read(self) -> np.ndarray:
        self._pace()
        if self._scope is not None:
            i = self._i
            self._i += 1
            return self._scope.frame(i)
        if self._video is not None:
            ok, frame = self._video.read()
            if not ok:
                if not self.loop:
                    raise CameraError(f"replay camera: end of {self.path}")
                self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self._video.read()
                if not ok:
                    raise CameraError(f"replay camera: cannot read frames from {self.path}")
            return to_rgb8(frame, name=str(self.path))
        if self._i >= len(self._files):
            if not self.loop:
                raise CameraError(f"replay camera: end of {self.path}")
            self._i = 0
        i = self._i
        self._i += 1
        frame = self._cache.get(i)
        if frame is None:
            try:
                frame = read_image(self._files[i])
            except ImageError as exc:
                raise CameraError(f"replay camera: {exc}") from exc
            if len(self._files) <= MAX_CACHED:
                self._cache[i] = frame
        return frame

    def close(self) -> None:
        self._scope = None
        if self._video is not None:
            self._video.release()
            self._video = None
