"""The interface every camera source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from device.errors import SmearscopeError


class CameraError(SmearscopeError):
    """The camera is missing, busy or stopped delivering frames; the message says what to do."""


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

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
