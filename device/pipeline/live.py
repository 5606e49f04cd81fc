"""What the live page reads: the newest frame (JPEG made on demand) and the newest result."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from device.models.ensemble import heatmap_overlay
from device.pipeline.slot import Published


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


@dataclass
class LiveFrame:
    rgb: np.ndarray
    captured_at: str
    t_ns: int  # time.monotonic_ns() at capture


class LiveView:
    """`services.live`. JPEGs are encoded only when somebody asks (and once per frame), so an
    unwatched device spends nothing on them."""

    def __init__(self, jpeg_quality: int = 80):
        self.frames: Published[LiveFrame] = Published()
        self.results: Published[dict[str, Any]] = Published()
        self.jpeg_quality = jpeg_quality
        self._lock = threading.Lock()
        self._frame_jpeg: tuple[int, bytes] | None = None
        self._heat: tuple[int, np.ndarray, np.ndarray] | None = None  # (result seq, rgb, cam)
        self._heat_jpeg: tuple[int, bytes] | None = None

    # producers
    def publish_frame(self, frame: LiveFrame) -> int:
        return self.frames.publish(frame)

    def publish_result(self, result: dict[str, Any], rgb: np.ndarray | None = None, cam=None) -> int:
        seq = self.results.publish(result)
        if cam is not None and rgb is not None:
            with self._lock:
                self._heat = (seq, rgb, cam)
        return seq

    # readers
    def _jpeg_of(self, seq: int, frame: LiveFrame) -> bytes:
        with self._lock:
            if self._frame_jpeg and self._frame_jpeg[0] == seq:
                return self._frame_jpeg[1]
        data = encode_jpeg(frame.rgb, self.jpeg_quality)
        with self._lock:
            self._frame_jpeg = (seq, data)
        return data

    def latest_frame(self) -> tuple[int, bytes] | None:
        got = self.frames.latest()
        return (got[0], self._jpeg_of(*got)) if got else None

    def wait_frame(self, after_seq: int, timeout: float) -> tuple[int, bytes] | None:
        got = self.frames.wait(after_seq, timeout)
        return (got[0], self._jpeg_of(*got)) if got else None

    def latest_result(self) -> tuple[int, dict[str, Any]] | None:
        return self.results.latest()

    def wait_result(self, after_seq: int, timeout: float) -> tuple[int, dict[str, Any]] | None:
        return self.results.wait(after_seq, timeout)

    def latest_heatmap(self) -> tuple[int, bytes] | None:
        """The class-activation overlay of the newest classified frame (None without a cam output)."""
        with self._lock:
            heat = self._heat
            cached = self._heat_jpeg
        if heat is None:
            return None
        seq, rgb, cam = heat
        if cached and cached[0] == seq:
            return cached
        data = encode_jpeg(heatmap_overlay(rgb, cam), self.jpeg_quality)
        with self._lock:
            self._heat_jpeg = (seq, data)
        return seq, data
