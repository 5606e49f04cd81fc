"""Prometheus counters for a fleet dashboard, plus the rolling figures `/api/status` shows.

Each daemon has its own CollectorRegistry (`telemetry.registry`), served at `/metrics` with
`prometheus_client.generate_latest(registry)`. A registry of its own holds only what is registered
on it, so the process, platform and garbage-collector collectors are added explicitly
(`process_resident_memory_bytes`, `python_info`...). Labels come from fixed sets
(`device/reason_categories.py`), never from free text.
"""

from __future__ import annotations

import platform
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from common.build import build_commit
from device import __version__
from device.reason_categories import ABSTENTION_REASONS, REFUSAL_REASONS

SOURCES = ("camera", "upload")
FIELD_STATES = ("classified", "uncertain", "no_cells", "refused")

#: Histogram buckets in seconds, 1 ms to 2.5 s.
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class ModelInfo:
    """What `smearscope_model_info` says about one loaded bundle."""

    name: str
    sha256: str
    key_id: str | None  # the signing key's id; None for an unsigned bundle


class Telemetry:
    def __init__(self, window: int = 512, commit: str | None = None):
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if GC_COLLECTOR is not None:
            GCCollector(registry=r)
        self._add_build_and_models(r, commit)
        self._add_outcomes(r)
        self._add_pipeline_counters(r)
        self._add_timings_and_levels(r)
        self._lock = threading.Lock()
        self._inference_ms: deque[float] = deque(maxlen=window)
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._classified_at: deque[float] = deque(maxlen=window)
        self._captured_at: deque[float] = deque(maxlen=window)
        self.counts = {"captured": 0, "rejected": 0, "classified": 0, "dropped": 0, "stored": 0}

    def _add_build_and_models(self, r: CollectorRegistry, commit: str | None) -> None:
        self.build = Info("smearscope_build", "The daemon's version and code", registry=r)
        self.build.info(
            {
                "version": __version__,
                "commit": commit if commit is not None else build_commit(),
                "python": platform.python_version(),
                "machine": platform.machine(),
            }
        )
        self.model_info = Gauge(
            "smearscope_model_info",
            "1 for each model bundle the ensemble runs (sha256 and signing key id prefixes)",
            ["name", "sha256", "key_id"],
            registry=r,
        )
        self.signatures_ok = Gauge(
            "smearscope_model_signatures_ok",
            "1 when every bundle's signature verified against the trusted keys, 0 when loaded anyway",
            registry=r,
        )

    def _add_outcomes(self, r: CollectorRegistry) -> None:
        """Abstentions, refusals and fields by fixed label sets, every series present from the start."""
        self.abstentions = Counter(
            "smearscope_abstentions",
            "Results shown as 'uncertain - refer', by reason category",
            ["reason", "source"],
            registry=r,
        )
        self.refusals = Counter(
            "smearscope_refusals",
            "Frames (per frame at the quality gate, per field for scale) and uploads given no call, "
            "by reason category",
            ["reason", "source"],
            registry=r,
        )
        self.fields = Counter(
            "smearscope_fields",
            "Fields of view and uploads by outcome (a field is counted once, not per frame)",
            ["state", "source"],
            registry=r,
        )
        for source in SOURCES:  # every series exists from the start, at 0
            for reason in ABSTENTION_REASONS:
                self.abstentions.labels(reason, source)
            for reason in REFUSAL_REASONS:
                self.refusals.labels(reason, source)
            for state in FIELD_STATES:
                self.fields.labels(state, source)

    def _add_pipeline_counters(self, r: CollectorRegistry) -> None:
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

    def _add_timings_and_levels(self, r: CollectorRegistry) -> None:
        self.inference_seconds = Histogram(
            "smearscope_inference_seconds", "Ensemble inference time", buckets=_SECONDS_BUCKETS, registry=r
        )
        self.latency_seconds = Histogram(
            "smearscope_latency_seconds", "Capture to published result", buckets=_SECONDS_BUCKETS, registry=r
        )
        self.camera_up = Gauge("smearscope_camera_up", "1 while the camera delivers frames", registry=r)
        self.disk_free = Gauge("smearscope_disk_free_bytes", "Free bytes on the data disk", registry=r)
        self.unsynced = Gauge("smearscope_unsynced_records", "Records not yet at the hub", registry=r)
        self.store_queue = Gauge("smearscope_store_queue", "Results waiting to be written", registry=r)

    def set_models(self, models: Iterable[ModelInfo]) -> None:
        """Replace the model series (after a start or a reload)."""
        self.model_info.clear()
        for m in models:
            self.model_info.labels(m.name, m.sha256[:12], (m.key_id or "unsigned")[:16]).set(1)

    def abstained(self, category: str, source: str) -> None:
        self.abstentions.labels(_known(category, ABSTENTION_REASONS), _known(source, SOURCES)).inc()

    def refused(self, category: str, source: str) -> None:
        self.refusals.labels(_known(category, REFUSAL_REASONS), _known(source, SOURCES)).inc()

    def field_outcome(self, state: str, source: str) -> None:
        self.fields.labels(_known(state, FIELD_STATES, "refused"), _known(source, SOURCES)).inc()

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


def _known(value: str, allowed: tuple[str, ...], fallback: str = "other") -> str:
    """Keep a label inside its fixed set (a caller's slip must not mint new series)."""
    if value in allowed:
        return value
    return fallback if fallback in allowed else allowed[-1]


def rate(times: list[float], now: float, window_s: float = 5.0) -> float:
    """Events per second over the last `window_s` (0.0 when fewer than three, or none lately)."""
    recent = [t for t in times if now - t <= window_s]
    if len(recent) <= 2 or recent[-1] <= recent[0]:
        return 0.0
    return round((len(recent) - 1) / (recent[-1] - recent[0]), 1)
