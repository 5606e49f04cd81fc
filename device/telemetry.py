"""Prometheus counters for a fleet dashboard, plus the rolling figures `/api/status` shows.

Each daemon has its own CollectorRegistry (`telemetry.registry`), served at `/metrics` with
`prometheus_client.generate_latest(registry)`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_MS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Telemetry:
    def __init__(self, window: int = 512):
        r = self.registry = CollectorRegistry()
        self.frames_captured = Counter(
            "smearscope_frames_captured", "Frames read from the camera", registry=r
        )
        self.frames_rejected = Counter(
            "smearscope_frames_rejected", "Frames failing the quality gate", ["reason"], registry=r
        )
        self.frames_classified = Counter("smearscope_frames_classified", "Frames classified", registry=r)
        self.frames_dropped = Counter(
            "smearscope_frames_dropped",
            "Stale frames replaced unused",
            ["stage"],
            registry=r,
        )
        self.records_stored = Counter("smearscope_records_stored", "Records written", ["source"], registry=r)
        self.store_dropped = Counter(
            "smearscope_store_dropped", "Results not stored because the store queue was full", registry=r
        )
        self.images_refused = Counter(
            "smearscope_images_refused", "Images not written (disk below the reserve)", registry=r
        )
        self.camera_reopens = Counter("smearscope_camera_reopens", "Camera reopen attempts", registry=r)
        self.worker_restarts = Counter(
            "smearscope_worker_restarts", "Workers restarted by the watchdog", ["worker"], registry=r
        )
        self.inference_seconds = Histogram(
            "smearscope_inference_seconds", "Ensemble inference time", buckets=_MS_BUCKETS, registry=r
        )
        self.latency_seconds = Histogram(
            "smearscope_latency_seconds", "Capture to published result", buckets=_MS_BUCKETS, registry=r
        )
        self.camera_up = Gauge("smearscope_camera_up", "1 while the camera delivers frames", registry=r)
        self.disk_free = Gauge("smearscope_disk_free_bytes", "Free bytes on the data disk", registry=r)
        self.unsynced = Gauge("smearscope_unsynced_records", "Records not yet at the hub", registry=r)
        self.store_queue = Gauge("smearscope_store_queue", "Results waiting to be written", registry=r)
        self._lock = threading.Lock()
        self._inference_ms: deque[float] = deque(maxlen=window)
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._classified_at: deque[float] = deque(maxlen=window)
        self._captured_at: deque[float] = deque(maxlen=window)
        self.counts = {"captured": 0, "rejected": 0, "classified": 0, "dropped": 0, "stored": 0}

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n
            if key == "captured":
                self._captured_at.append(time.monotonic())

    def classified(self, inference_ms: float, latency_ms: float) -> None:
        self.frames_classified.inc()
        self.inference_seconds.observe(inference_ms / 1000)
        self.latency_seconds.observe(latency_ms / 1000)
        with self._lock:
            self.counts["classified"] += 1
            self._inference_ms.append(inference_ms)
            self._latency_ms.append(latency_ms)
            self._classified_at.append(time.monotonic())

    def rolling(self) -> dict[str, float | None]:
        """Frame rates over the last few seconds and inference/latency percentiles (ms, one decimal) over
        the last frames. `fps` counts the camera's frames; `classified_fps` the classifications, which
        stop while the field stays the same (a field is classified once)."""
        with self._lock:
            inf = np.array(self._inference_ms)
            lat = np.array(self._latency_ms)
            classified = list(self._classified_at)
            captured = list(self._captured_at)
        now = time.monotonic()

        def pct(a: np.ndarray, q: float) -> float | None:
            return round(float(np.percentile(a, q)), 1) if a.size else None

        return {
            "fps": rate(captured, now),
            "classified_fps": rate(classified, now),
            "inference_ms_p50": pct(inf, 50),
            "inference_ms_p95": pct(inf, 95),
            "latency_ms_p50": pct(lat, 50),
            "latency_ms_p95": pct(lat, 95),
        }


def rate(times: list[float], now: float, window_s: float = 5.0) -> float:
    """Events per second over the last `window_s` (0.0 when fewer than three, or none lately)."""
    recent = [t for t in times if now - t <= window_s]
    if len(recent) <= 2 or recent[-1] <= recent[0]:
        return 0.0
    return round((len(recent) - 1) / (recent[-1] - recent[0]), 1)
