"""The interface every camera source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from device.errors import SmearscopeError


class CameraError(SmearscopeError):
    """The camera is missing, busy or stopped delivering frames; the message says what to do."""


#: The controls vocabulary (libcamera's names and units): AwbEnable / AeEnable (bool), ColourGains
#: (red gain, blue gain), ExposureTime (µs), AnalogueGain (x).
CONTROLS = ("AwbEnable", "AeEnable", "ColourGains", "ExposureTime", "AnalogueGain")


class FrameSource(ABC):
    """open() → read() repeatedly → close(). read() returns an RGB uint8 (H, W, 3) frame or raises
    CameraError; the capture worker then closes the source and reopens it with backoff."""

    name = "camera"

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - optional for sources without resources
        pass

    def describe(self) -> str:
        return self.name

    def set_controls(self, controls: Mapping[str, Any]) -> dict[str, Any]:
        """Apply camera controls, named as picamera2/libcamera names them (`CONTROLS`); returns the
        ones that took effect, with the value the camera reports back. Controls the camera ignores
        or lacks are left out, so the caller knows what a software gain must make up for. A source
        without controls (replay, video file) applies none."""
        return {}

    def get_controls(self) -> dict[str, Any]:
        """The current values of the controls this source can read back (same names)."""
        return {}

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
