"""The live pipeline's workers, Frigate-style, joined by small bounded hand-overs:

    capture ─► frame slot (1) ─► quality gate ─► gated slot (1) ─► classifier ─► store queue (bounded)
       │                                                              │
       └──────────────► live view (newest frame)        live view (newest result)

Slots keep only the newest item (stale frames are dropped and counted), the gate only prepares a
frame when the classifier is free, and the store queue drops (and counts) results rather than ever
blocking classification. Each worker has a heartbeat; the watchdog restarts a stuck one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.camera import CameraError, FrameSource, open_source
from device.config import Config
from device.ensemble import Ensemble, Prediction, heatmap_overlay
from device.pipeline.live import LiveFrame, LiveView, encode_jpeg
from device.pipeline.slot import LatestSlot
from device.pipeline.smoothing import FieldSmoother, thumbnail
from device.pipeline.worker import Watchdog, Worker
from device.preprocess import prepare
from device.quality import Quality, QualityThresholds, assess, passed
from device.store import DiskFullError, Store, utc_now
from device.telemetry import Telemetry

log = logging.getLogger(__name__)
UNCERTAIN = "uncertain — refer to a hematologist"


@dataclass
class Gated:
    seq: int
    frame: LiveFrame
    model_input: np.ndarray  # prepared for the models (or the full frame when their sizes differ)
    thumb: np.ndarray
    quality: Quality
    unfamiliar: list[str] | None = None  # the ensemble's colour check, run here off the classifier's core


@dataclass
class Classified:
    """One classified frame: what capture_field stores and the store worker writes."""

    gated: Gated
    prediction: Prediction
    live: dict[str, Any]


@dataclass
class StoreJob:
    classified: Classified
    source: str = "camera"
    sample_id: str | None = None
    filename: str | None = None
    #: An upload or a technician's capture is refused (DiskFullError) rather than stored without its
    #: image; a camera result is kept without it (the live record still counts).
    require_image: bool = False
    done: threading.Event | None = None
    result: dict[str, Any] | None = field(default=None)


def _shared_input_spec(ensemble: Ensemble) -> tuple | None:
    """(width, height, resize, white_reference) when every model takes the same input, else None."""
    specs = {
        (
            m.manifest.input.width,
            m.manifest.input.height,
            m.manifest.input.resize,
            m.manifest.input.white_reference,
        )
        for m in ensemble.models
    }
    return next(iter(specs)) if len(specs) == 1 else None


class Pipeline:
    def __init__(
        self,
        config: Config,
        store: Store,
        ensemble: Ensemble,
        *,
        telemetry: Telemetry | None = None,
        live: LiveView | None = None,
        source_factory: Callable[[], FrameSource] | None = None,
        pace: bool = True,
        notify_watchdog: Callable[[], None] | None = None,
    ):
        self.config = config
        self.store = store
        self.ensemble = ensemble
        self.telemetry = telemetry or Telemetry()
        self.live = live or LiveView()
        self.pace = pace
        self.source_factory = source_factory or (lambda: open_source(config.camera, pace=pace))
        self.thresholds = QualityThresholds.from_config(config.quality)
        cc = config.classifier
        self.threshold = cc.abstain_threshold or ensemble.threshold
        self.smoother = FieldSmoother(cc.smoothing_alpha, cc.field_change)
        self.input_spec = _shared_input_spec(ensemble)
        self.models = [{"name": n, "sha256": h} for n, h in ensemble.hashes.items()]
        self.frame_slot: LatestSlot[tuple[int, LiveFrame]] = LatestSlot()
        self.gated_slot: LatestSlot[Gated] = LatestSlot()
        self.store_q: queue.Queue[StoreJob] = queue.Queue(maxsize=config.store.queue_size)
        self.last_classified: Classified | None = None
        self._last_auto_store = 0.0
        self._last_stored_label: str | None = None
        self._source: FrameSource | None = None
        self._backoff = config.camera.reopen_initial_s
        self._reopen_at = 0.0
        self.camera: dict[str, Any] = {
            "source": config.camera.source,
            "state": "starting",
            "detail": "",
            "error": None,
        }
        self.last_error: dict[str, str] | None = None
        self._event_times: dict[str, float] = {}
        self._housekeeping_at = 0.0
        self.started_at = time.monotonic()
        self.paused = threading.Event()  # set: capture stops (benchmarks interleave other measurements)
        stall_capture = max(10.0, 3.0 / max(config.camera.fps, 0.1))
        self.workers = [
            Worker("capture", self._capture_step, stall_s=stall_capture, on_error=self._worker_error),
            Worker("gate", self._gate_step, stall_s=10.0, on_error=self._worker_error),
            Worker("classify", self._classify_step, stall_s=30.0, on_error=self._worker_error),
            Worker("store", self._store_step, stall_s=60.0, on_error=self._worker_error),
        ]
        self.watchdog = Watchdog(self.workers, on_restart=self._restarted, on_healthy=notify_watchdog)

    def swap_ensemble(self, ensemble: Ensemble) -> None:
        """Serve a new (already verified) ensemble from the next frame on; the workers keep running,
        so classification never stops. The field smoothing starts again (new model, new evidence)."""
        cc = self.config.classifier
        self.input_spec = _shared_input_spec(ensemble)
        self.threshold = cc.abstain_threshold or ensemble.threshold
        self.models = [{"name": n, "sha256": h} for n, h in ensemble.hashes.items()]
        self.smoother = FieldSmoother(cc.smoothing_alpha, cc.field_change)
        self.ensemble = ensemble

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for w in self.workers:
            w.start()
        self.watchdog.start()

    def stop(self, timeout: float = 4.0) -> None:
        """Stop capture first, let the store queue drain, then stop the rest; bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        self.watchdog.stop()
        by_name = {w.name: w for w in self.workers}
        for name in ("capture", "gate", "classify"):
            by_name[name].stop()
        self.frame_slot.close()
        self.gated_slot.close()
        for name in ("capture", "gate", "classify"):
            by_name[name].join(max(0.1, deadline - time.monotonic() - 1.0))
        while not self.store_q.empty() and time.monotonic() < deadline - 0.5:
            time.sleep(0.02)
        by_name["store"].stop()
        by_name["store"].join(max(0.1, deadline - time.monotonic()))
        if self._source is not None:
            with contextlib.suppress(Exception):  # best effort at shutdown
                self._source.close()
        self.camera["state"] = "stopped"

    # -- errors --------------------------------------------------------------------------------

    def _error(self, source: str, message: str, level: str = "error") -> None:
        """Remember the error for status and record an event (the same message at most once a minute,
        so a fault that repeats every frame does not flood the events table)."""
        if level != "info":
            self.last_error = {"at": utc_now(), "source": source, "message": message}
        now = time.monotonic()
        if now - self._event_times.get(message, -1e9) < 60.0:
            return
        self._event_times[message] = now
        if len(self._event_times) > 256:
            self._event_times.clear()
        try:
            self.store.add_event(level, source, message)
        except Exception:  # noqa: BLE001 - never let reporting an error raise another
            log.exception("cannot record event")

    def _worker_error(self, name: str, exc: BaseException) -> None:
        self._error(name, f"worker {name}: {exc.__class__.__name__}: {exc}")

    def _restarted(self, worker: Worker, why: str) -> None:
        self.telemetry.worker_restarts.labels(worker.name).inc()
        self._error("watchdog", f"{why}; restarted")
        if worker.name == "capture" and self._source is not None:
            src, self._source = self._source, None
            threading.Thread(target=src.close, daemon=True).start()  # may unblock the stuck read

    # -- capture -------------------------------------------------------------------------------

    def _camera_failed(self, exc: Exception) -> None:
        msg = str(exc)
        if self.camera["state"] != "reopening" or self.camera["error"] != msg:
            self._error("camera", f"{msg}; retrying in {self._backoff:.1f} s", "warning")
        self.camera.update(state="reopening", error=msg, retry_in_s=round(self._backoff, 1))
        self.telemetry.camera_up.set(0)
        self.telemetry.camera_reopens.inc()
        self._reopen_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.config.camera.reopen_max_s)

    def _capture_step(self) -> None:
        w = self.workers[0]
        if self.paused.is_set():
            w.stage = "paused"
            w.stop_event.wait(0.05)
            return
        if self._source is None:
            wait = self._reopen_at - time.monotonic()
            if wait > 0:
                w.stop_event.wait(min(wait, 0.5))
                return
            w.stage = "opening camera"
            src = self.source_factory()
            try:
                src.open()
            except Exception as exc:  # CameraError, or a driver's own exception
                self._camera_failed(exc if isinstance(exc, CameraError) else CameraError(str(exc)))
                return
            if self.camera["state"] == "reopening":
                self._error("camera", f"camera back: {src.describe()}", "info")
            self._source = src
            self.camera.update(state="running", detail=src.describe(), error=None, retry_in_s=None)
            self.telemetry.camera_up.set(1)
        if not self.pace and not self.frame_slot.wait_demand(0.5):
            return  # unpaced replay: produce a frame only when the gate asks for one
        w.stage = "reading a frame"
        src = self._source
        try:
            rgb = src.read()
        except Exception as exc:
            if self._source is src:
                self._source = None
            with contextlib.suppress(Exception):
                src.close()
            self._camera_failed(exc if isinstance(exc, CameraError) else CameraError(str(exc)))
            return
        frame = LiveFrame(rgb, utc_now(), time.monotonic_ns())
        seq = self.live.publish_frame(frame)
        self.telemetry.frames_captured.inc()
        self.telemetry.count("captured")
        if not self.frame_slot.put((seq, frame)):
            self.telemetry.frames_dropped.labels("capture").inc()
            self.telemetry.count("dropped")
        self._backoff = self.config.camera.reopen_initial_s

    # -- quality gate --------------------------------------------------------------------------

    def _gate_step(self) -> None:
        w = self.workers[1]
        w.stage = "waiting for a frame"
        item = self.frame_slot.take(0.5)
        if item is None:
            return
        seq, frame = item
        w.stage = "quality checks"
        q = assess(frame.rgb, self.thresholds) if self.config.quality.enabled else passed()
        if not q.ok:
            for reason in q.reasons:
                self.telemetry.frames_rejected.labels(reason).inc()
            self.telemetry.count("rejected")
            self.live.publish_result(
                {
                    "frame_seq": seq,
                    "captured_at": frame.captured_at,
                    "rejected": True,
                    "display": "frame rejected: " + ", ".join(q.reasons),
                    "label": None,
                    "abstained": None,
                    "quality": q.to_dict(),
                }
            )
            return
        if self.input_spec is not None:
            width, height, resize, white_reference = self.input_spec
            model_input = prepare(frame.rgb, (width, height), resize, white_reference=white_reference)
        else:
            model_input = frame.rgb
        colour = self.ensemble.colour_reasons(model_input)
        gated = Gated(seq, frame, model_input, thumbnail(model_input), q, colour)
        if not self.gated_slot.put(gated):
            self.telemetry.frames_dropped.labels("gate").inc()
            self.telemetry.count("dropped")
        w.stage = "waiting for the classifier"
        self.gated_slot.wait_empty(0.5)  # prepare the next frame only once the classifier took this one

    # -- classifier ----------------------------------------------------------------------------

    def _classify_step(self) -> None:
        w = self.workers[2]
        w.stage = "waiting for a frame"
        g = self.gated_slot.take(0.5)
        if g is None:
            return
        w.stage = "inference"
        ensemble = self.ensemble  # read once: swap_ensemble() may replace it between frames
        pred = ensemble.classify(
            g.model_input, with_cam=self.config.classifier.heatmap, precheck=g.unfamiliar
        )
        labels = ensemble.label_ids
        probs = np.array([pred.probabilities[lb] for lb in labels], dtype=np.float32)
        smoothed, new_field = self.smoother.update(g.thumb, probs)
        idx = int(np.argmax(smoothed))
        conf = float(smoothed[idx])
        reason = None
        if pred.abstained and not (pred.reason or "").startswith("confidence"):
            reason = pred.reason  # unfamiliar input or disagreement: smoothing must never hide it
        elif conf < self.threshold:
            reason = f"confidence {conf:.2f} below threshold {self.threshold:.2f}"
        latency_ms = (time.monotonic_ns() - g.frame.t_ns) / 1e6
        live = {
            "frame_seq": g.seq,
            "captured_at": g.frame.captured_at,
            "rejected": False,
            "label": labels[idx],
            "display": UNCERTAIN if reason else labels[idx],
            "confidence": round(conf, 4),
            "probabilities": {lb: round(float(p), 4) for lb, p in zip(labels, smoothed, strict=True)},
            "abstained": reason is not None,
            "reason": reason,
            "frame": pred.to_dict(),
            "field": self.smoother.field,
            "new_field": new_field,
            "frames_in_field": self.smoother.frames_in_field,
            "quality": g.quality.to_dict(),
            "has_heatmap": pred.cam is not None,
            "inference_ms": round(pred.inference_ms, 3),
            "latency_ms": round(latency_ms, 3),
            "models": self.models,
        }
        rgb_for_heat = g.model_input if pred.cam is not None else None
        self.live.publish_result(live, rgb_for_heat, pred.cam)
        self.telemetry.classified(pred.inference_ms, latency_ms)
        c = Classified(g, pred, live)
        self.last_classified = c
        w.stage = "store policy"
        self._maybe_store(c)

    def _maybe_store(self, c: Classified) -> None:
        sc = self.config.store
        now = time.monotonic()
        if now - self._last_auto_store < sc.every_s:
            return
        shown = c.live["display"]
        if sc.on_label_change and shown == self._last_stored_label:
            return
        self._last_auto_store = now
        self._last_stored_label = shown
        try:
            self.store_q.put_nowait(StoreJob(c))
        except queue.Full:
            self.telemetry.store_dropped.inc()
            self.telemetry.count("store_dropped")
        self.telemetry.store_queue.set(self.store_q.qsize())

    # -- store ---------------------------------------------------------------------------------

    def _store_step(self) -> None:
        w = self.workers[3]
        w.stage = "waiting for a result"
        try:
            job = self.store_q.get(timeout=0.5)
        except queue.Empty:
            self._housekeeping()
            return
        w.stage = "writing a record"
        try:
            self.write(job)
        except DiskFullError as exc:  # the database itself is full: live results go on, this one is lost
            self.telemetry.store_dropped.inc()
            self.telemetry.count("store_dropped")
            self.last_error = {"at": utc_now(), "source": "store", "message": str(exc)}
        finally:
            self.telemetry.store_queue.set(self.store_q.qsize())

    def write(self, job: StoreJob) -> dict[str, Any]:
        """Encode and store one classified frame (image, heatmap, row). The files are written first,
        then their rows and the record in one transaction (a kill leaves no half-record). A full disk
        stores a camera result without its image (and raises the alert) rather than losing it; a job
        with `require_image` is refused with DiskFullError instead, so nothing is acknowledged
        without its image."""
        c = job.classified
        pred = c.prediction
        sc = self.config.store
        sha = heat_sha = None
        images: list[tuple[str, int]] = []
        try:
            sha, size = self.store.write_image(encode_jpeg(c.gated.frame.rgb, sc.jpeg_quality))
            images.append((sha, size))
            if pred.cam is not None:
                overlay = heatmap_overlay(c.gated.model_input, pred.cam)
                heat_sha, size = self.store.write_image(encode_jpeg(overlay, sc.jpeg_quality))
                images.append((heat_sha, size))
        except DiskFullError as exc:
            self.telemetry.images_refused.inc()
            self.last_error = {"at": utc_now(), "source": "store", "message": str(exc)}
            if job.require_image:
                raise
            if sha is None:
                images = []
        rec = self.store.add_result(
            {
                "sample_id": job.sample_id,
                "source": job.source,
                "models": self.models,
                "probabilities": {k: round(v, 6) for k, v in pred.probabilities.items()},
                "label": pred.label,
                "confidence": pred.confidence,
                "abstained": pred.abstained,
                "reason": pred.reason,
                "quality": c.gated.quality.to_dict(),
                "image_sha256": sha,
                "heatmap_sha256": heat_sha,
                "filename": job.filename,
                "captured_at": c.gated.frame.captured_at,
                "monotonic_ns": c.gated.frame.t_ns,
            },
            images=images,
        )
        if self.store.budget_bytes:
            self.store.enforce_disk_budget()
        self.telemetry.records_stored.labels(job.source).inc()
        self.telemetry.count("stored")
        job.result = rec
        if job.done is not None:
            job.done.set()
        return rec

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._housekeeping_at:
            return
        self._housekeeping_at = now + 30.0
        try:
            self.telemetry.disk_free.set(self.store.free_bytes())
            self.store.refresh_disk_state()
            self.store.enforce_disk_budget()
            self.store.sweep_orphans()
        except Exception:  # noqa: BLE001 - housekeeping is best effort
            log.exception("housekeeping failed")

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        c = self.telemetry.counts
        return {
            "camera": dict(self.camera),
            "frames_captured": c["captured"],
            "frames_rejected": c["rejected"],
            "frames_classified": c["classified"],
            "frames_dropped": c["dropped"],
            "records_stored": c["stored"],
            "store_dropped": c.get("store_dropped", 0),
            "store_queue": self.store_q.qsize(),
            **self.telemetry.rolling(),
            "workers": [
                {
                    "name": w.name,
                    "alive": w.alive(),
                    "stage": w.stage,
                    "restarts": w.restarts,
                    "last_error": w.last_error,
                }
                for w in self.workers
            ],
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }
