"""The live pipeline's workers, Frigate-style, joined by small bounded hand-overs:

    capture ─► frame slot (1) ─► gate ─► gated slot (1) ─► classifier ─► store queue (bounded)
       │                                                              │
       └──────────────► live view (newest frame)        live view (newest result)

Slots keep only the newest item (stale frames are dropped and counted), the gate only prepares a
frame when the classifier is free, and the store queue drops (and counts) results rather than ever
blocking classification. Each worker has a heartbeat; the watchdog restarts a stuck one.

The gate classifies a field once (device/pipeline/settle.py): while the stage moves it waits; once the
field has settled it runs the quality gate, the scale check against the active calibration profile and
the tiling (device/optics/analyse.py `prepare`); a field that has not changed since it was classified
is not classified again, its result is re-published with the new frame. With a camera's settling the
scale check is made on the last frame before the field settles (`_check_ahead`), when the classifier is
idle; the tiles' colour checks run on the gate's thread while the classifier infers (`PendingChecks`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.camera import CameraError, FrameSource, open_source
from device.config import Config
from device.models.ensemble import Ensemble, Prediction, heatmap_overlay
from device.optics.analyse import AcquisitionSettings, FieldAnalysis, FieldClassifier, Prepared
from device.optics.scalecheck import MISMATCH, ScaleCheck, ScaleVerdicts
from device.pipeline.live import LiveFrame, LiveView, encode_jpeg
from device.pipeline.settle import SettleTracker, thumbnail
from device.pipeline.slot import LatestSlot
from device.pipeline.worker import Watchdog, Worker
from device.quality import Quality, QualityThresholds, assess, passed, shrink
from device.reason_categories import abstention_category, refusal_category
from device.screening.screen import CELLS, CellScreen, ensemble_kind
from device.screening.second import FieldReader
from device.screening.slide import slide_summary
from device.screening.stages import NO_CELLS, FieldCells, PreparedFrame, ScreenSettings
from device.screening.writer import Origin, write_field
from device.store import DiskFullError, Store, utc_now
from device.telemetry import Telemetry

log = logging.getLogger(__name__)
#: How long a worker waits on a slot before it looks round again (its watchdog heartbeat), seconds.
SLOT_WAIT_S = 0.5
#: A still field refocused to this many times its focus measure when classified is classified again.
REFOCUS_GAIN = 1.5
#: With a camera's settling, this many frames in a row that differ from the classified field (a glitch, a
#: flash of bad exposure) re-publish its result marked "held" before the page says "moving" or
#: "rejected": a still field's call does not blink on one bad frame. A stage move shows up one frame later.
HOLD_FRAMES = 1
#: The same error message is recorded as an event at most once in this many seconds ...
EVENT_REPEAT_S = 60.0
#: ... remembering at most this many distinct messages (a burst of new ones starts the memory afresh).
EVENT_MEMORY = 256
#: A still field's live result reads the open sample's count again at most this often, seconds.
SLIDE_REFRESH_S = 1.0
#: The classifier gives up on a field whose red-cell check has not finished after this many seconds.
SCALE_CHECK_TIMEOUT_S = 60.0
#: A worker silent longer than its stall time (s) is restarted by the watchdog. Capture waits at least
#: CAPTURE_STALL_MIN_S, or CAPTURE_STALL_FRAMES frame times at a slow frame rate (fps floored at MIN_FPS).
CAPTURE_STALL_MIN_S = 10.0
CAPTURE_STALL_FRAMES = 3.0
MIN_FPS = 0.1
GATE_STALL_S = 10.0
CLASSIFY_STALL_S = 30.0
STORE_STALL_S = 60.0


def settle_frames(config: Config) -> int:
    """`[classifier] settle_frames`, auto (-1) resolved: 0 for a replay camera showing its stills (unrelated
    images, each one a new field), 2 for a camera or the virtual microscope (frames taken while its stage
    moves and eases into a field are not fields to classify)."""
    n = config.classifier.settle_frames
    if n >= 0:
        return n
    cam = config.camera
    stills = cam.source == "replay" and not cam.virtual
    return 0 if stills else 2


@dataclass
class Gated:
    seq: int
    frame: LiveFrame
    model_input: np.ndarray  # the image a stored heatmap is drawn over (the frame, or its one tile)
    thumb: np.ndarray
    quality: Quality
    prepared: Prepared | None = None  # tiles, scale check and colour checks, made in the gate
    profile: str | None = None  # the calibration profile's name the frame was taken with
    checked: threading.Event = field(default_factory=threading.Event)  # the gate's scale check is done
    scale_doubt: bool = False  # refused: this field's red cells disagree, the objective is not judged changed
    cells: PreparedFrame | None = None  # a cell ensemble's prepared frame (then `prepared` is None)


@dataclass
class Classified:
    """One classified frame: what capture_field stores and the store worker writes."""

    gated: Gated
    prediction: Prediction
    live: dict[str, Any]
    analysis: FieldAnalysis | None = None
    cells: FieldCells | None = None  # a cell ensemble's result (then `prediction` is a summary)


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
        profile: Callable[[], Any] | None = None,
        field_classifier: FieldClassifier | None = None,
        reader: FieldReader | None = None,
    ):
        self.config = config
        self.store = store
        self.ensemble = ensemble
        self.reader = reader  # the second reading of a cell field left uncertain (screening/second.py)
        self.telemetry = telemetry or Telemetry()
        self.live = live or LiveView()
        self.pace = pace
        self.source_factory = source_factory or (lambda: open_source(config.camera, pace=pace))
        self.thresholds = QualityThresholds.from_config(config.quality)
        cc = config.classifier
        self.threshold = cc.abstain_threshold or ensemble.threshold
        self.profile = profile or (lambda: None)  # the active calibration profile (.name, .um_per_px)
        self.fields = field_classifier or FieldClassifier(ensemble, AcquisitionSettings.from_config(config))
        self.screen = self._cell_screen(ensemble)
        self._init_field_state(config)
        self.models = [{"name": n, "sha256": h} for n, h in ensemble.hashes.items()]
        self.frame_slot: LatestSlot[tuple[int, LiveFrame]] = LatestSlot()
        self.gated_slot: LatestSlot[Gated] = LatestSlot()
        self.store_q: queue.Queue[StoreJob] = queue.Queue(maxsize=config.store.queue_size)
        self.last_classified: Classified | None = None
        self._last_auto_store = 0.0
        self._last_stored_label: str | None = None
        self._init_camera_state(config)
        self.workers = self._make_workers(config.camera.fps)
        self.watchdog = Watchdog(self.workers, on_restart=self._restarted, on_healthy=notify_watchdog)

    def _init_field_state(self, config: Config) -> None:
        """What the classifier remembers between frames: the field, its settling, and the scale check."""
        self.captured: dict[str | None, int] = {}  # sample id (None: no sample) → the field last captured
        self._slide_at = 0.0  # when a still field's slide count was last read
        self.settle = SettleTracker(settle_frames(config), config.classifier.settle_threshold)
        q = config.quality
        self.scale_verdicts = ScaleVerdicts(q.scale_mismatch_fields, q.scale_ok_fields)
        self._verdicts_for: tuple[str | None, float | None] = (None, None)  # (profile, µm/px) judged
        self.field = 0  # increments on every field classified
        self.last_seen_ns = 0  # when the newest classified field was last seen unchanged (capture_field)
        self._field_result: dict[str, Any] | None = None  # the newest field's result (re-published)
        self._field_focus = 0.0
        self._held = 0  # frames in a row that differed from the classified field, its result held
        self._ahead: tuple[np.ndarray, ScaleCheck] | None = None  # (thumbnail, check) of a settling field
        self.scale_status: dict[str, Any] = (
            {"state": "pending", "message": "no frame checked yet"}
            if self.fields.scale_known
            else {
                "state": "unknown",
                "message": "scale unknown: the models declare no µm/px, so frames are centre-cropped as "
                "before and the scale check cannot run",
            }
        )

    def _init_camera_state(self, config: Config) -> None:
        """The camera's state, its reopen back-off, events and the pause switch."""
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

    def _make_workers(self, fps: float) -> list[Worker]:
        """The four stages' workers; a stage silent longer than its stall time is restarted by the watchdog
        (capture: at least CAPTURE_STALL_MIN_S, or CAPTURE_STALL_FRAMES frame times at a slow frame rate)."""
        stall_capture = max(CAPTURE_STALL_MIN_S, CAPTURE_STALL_FRAMES / max(fps, MIN_FPS))
        return [
            Worker("capture", self._capture_step, stall_s=stall_capture, on_error=self._worker_error),
            Worker("gate", self._gate_step, stall_s=GATE_STALL_S, on_error=self._worker_error),
            Worker("classify", self._classify_step, stall_s=CLASSIFY_STALL_S, on_error=self._worker_error),
            Worker("store", self._store_step, stall_s=STORE_STALL_S, on_error=self._worker_error),
        ]

    def swap_ensemble(self, ensemble: Ensemble) -> None:
        """Serve a new (already verified) ensemble from the next frame on; the workers keep running,
        so classification never stops. The current field is classified again by the new models."""
        cc = self.config.classifier
        fields = FieldClassifier(ensemble, AcquisitionSettings.from_config(self.config))
        screen = self._cell_screen(ensemble)
        self.threshold = cc.abstain_threshold or ensemble.threshold
        self.models = [{"name": n, "sha256": h} for n, h in ensemble.hashes.items()]
        self.ensemble = ensemble
        self.fields = fields
        self.screen = screen
        self.settle.forget()  # the next settled field is classified by the new models

    def _cell_screen(self, ensemble: Ensemble) -> CellScreen | None:
        """The frame → cells → result path for a cell ensemble (None: field bundles, the tiled path)."""
        if ensemble_kind(ensemble) != CELLS:
            return None
        return CellScreen(ensemble, ScreenSettings.from_config(self.config), reader=self.reader)

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
        if now - self._event_times.get(message, -1e9) < EVENT_REPEAT_S:
            return
        self._event_times[message] = now
        if len(self._event_times) > EVENT_MEMORY:
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
                w.stop_event.wait(min(wait, SLOT_WAIT_S))
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
        if not self.pace and not self.frame_slot.wait_demand(SLOT_WAIT_S):
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

    # -- gate: settle, quality, scale check, tiles -----------------------------------------------

    def _publish_field(self, result: dict[str, Any], seq: int, frame: LiveFrame) -> None:
        """Re-publish the unchanged field's result with this frame (no classification)."""
        result = self._refresh_slide(result)
        self.live.publish_result({**result, "frame_seq": seq, "republished": True, "new_field": False})
        self.last_seen_ns = frame.t_ns
        self.telemetry.count("republished")

    def _scale(self) -> tuple[float | None, str | None]:
        """(frame µm/px, profile name) from the active calibration profile."""
        try:
            prof = self.profile()
        except Exception as exc:  # noqa: BLE001 - a broken profiles file must not stop the gate
            self._error("profiles", f"cannot read the active profile: {exc}", "warning")
            prof = None
        if prof is None or not getattr(prof, "um_per_px", None):
            return None, getattr(prof, "name", None)
        return float(prof.um_per_px), prof.name

    def _reject(
        self,
        seq: int,
        frame: LiveFrame,
        q: Quality,
        reasons: list[str],
        state: str,
        category: str = "quality",
        scale_doubt: bool = False,
    ) -> dict:
        """Publish a frame with no call: `state` "rejected" (quality gate, `category` "quality") or
        "scale" (the field is refused; `category` from `refusal_category`; `scale_doubt`: only this
        field's red cells disagree, the objective is not judged changed)."""
        for reason in reasons:
            self.telemetry.frames_rejected.labels(reason if state == "rejected" else "scale").inc()
        self.telemetry.count("rejected")
        self.telemetry.refused(category, "camera")
        if state != "rejected":
            self.telemetry.field_outcome("refused", "camera")
        result = {
            "frame_seq": seq,
            "captured_at": frame.captured_at,
            "rejected": True,
            "state": state,
            "display": ("frame rejected: " if state == "rejected" else "not classified: ")
            + ", ".join(reasons),
            "label": None,
            "abstained": None,
            "quality": q.to_dict(),
        }
        if state == "scale":
            result["scale_doubt"] = scale_doubt
        self.live.publish_result(result)
        return result

    def _gate_step(self) -> None:
        w = self.workers[1]
        w.stage = "waiting for a frame"
        item = self.frame_slot.take(SLOT_WAIT_S)
        if item is None:
            return
        seq, frame = item
        w.stage = "settle check"
        # one shrunk copy serves the settle thumbnail and the quality gate (which measures on it anyway)
        small = shrink(frame.rgb, self.thresholds.analysis_width)
        thumb = thumbnail(small)
        state = self.settle.observe(thumb)
        if state == "same":
            self._held = 0
            if self._keep_field_result(seq, frame, small):
                return
        elif self._hold_field_result(seq, frame):
            return
        if state == "moving":
            self._publish_moving(seq, frame, thumb)
            return
        w.stage = "quality checks"
        q = self._assess(small)
        if not q.ok:
            # the classified field stays marked: when its frames come back they re-publish its result
            self._reject(seq, frame, q, q.reasons, "rejected")
            return
        self._gate_new_field(seq, frame, thumb, q)

    def _assess(self, small: np.ndarray) -> Quality:
        return assess(small, self.thresholds) if self.config.quality.enabled else passed()

    def _keep_field_result(self, seq: int, frame: LiveFrame, small: np.ndarray) -> bool:
        """The same field as the last one classified: re-publish its result with this frame (True), unless
        it was refocused to markedly sharper than when it was classified (False: classify it again).
        True too while the classifier is still on the field (nothing to publish yet)."""
        result = self._field_result
        if result is None:
            return True
        q = self._assess(small)
        if q.ok and self._field_focus > 0 and q.focus > REFOCUS_GAIN * self._field_focus:
            return False
        self._publish_field(result, seq, frame)
        return True

    def _hold_field_result(self, seq: int, frame: LiveFrame) -> bool:
        """A frame that differs from the classified field right after frames that showed it: re-publish
        the field's result marked "held" (True) for up to `HOLD_FRAMES` frames in a row. Only with a
        camera's settling: on a replay of unrelated stills each frame is a new field."""
        result = self._field_result
        if self.settle.settle_frames < 1 or result is None or self._held >= HOLD_FRAMES:
            self._held = HOLD_FRAMES  # once the field is left, a moving frame is not held again
            return False
        self._held += 1
        self.live.publish_result(
            {**result, "frame_seq": seq, "republished": True, "new_field": False, "held": True}
        )
        self.telemetry.count("held")
        return True

    def _publish_moving(self, seq: int, frame: LiveFrame, thumb: np.ndarray) -> None:
        self.live.publish_result(
            {
                "frame_seq": seq,
                "captured_at": frame.captured_at,
                "rejected": True,
                "state": "moving",
                "display": "field moving — classified once it is still",
                "label": None,
                "abstained": None,
                "motion": round(self.settle.motion, 2),
            }
        )
        self.telemetry.count("moving")
        if self.settle.about_to_settle:
            self.workers[1].stage = "scale check ahead"
            self._check_ahead(frame.rgb, thumb)

    def _gate_new_field(self, seq: int, frame: LiveFrame, thumb: np.ndarray, q: Quality) -> None:
        """A settled new field that passed the quality gate: prepare its tiles, hand them to the
        classifier, and run the red-cell scale check on this core while the classifier infers."""
        w = self.workers[1]
        if self.screen is not None:
            self._gate_new_cells(seq, frame, thumb, q)
            return
        w.stage = "scale check and tiles"
        um, profile = self._scale()
        prepared = self.fields.prepare(
            frame.rgb,
            um,
            source=f"profile:{profile}" if profile else "profile",
            hint="no calibration profile: calibrate this camera and objective (smearscope calibrate)",
            defer_check=True,
            refuse_assumed=True,
        )
        ahead, self._ahead = self._ahead, None
        if ahead is not None and self.settle.same_field(thumb, ahead[0]):
            prepared.check_ahead = ahead[1]  # run_check takes it when it was made at this frame's µm/px
            if not ahead[1].ok:
                self.fields.run_check(prepared)  # a known mismatch: refused without inferring a tile
        self.settle.mark(thumb)
        self._field_focus = q.focus
        if prepared.refused is not None:
            doubt = self._judge_scale(prepared, profile)
            self._field_result = self._reject(
                seq, frame, q, [prepared.refused], "scale", refusal_category(prepared), doubt
            )
            return
        self._field_result = None  # pending: the classifier publishes the new field's result
        plan = prepared.plan
        base = plan.selected[0].rgb if plan is not None and plan.legacy and plan.selected else prepared.image
        gated = Gated(seq, frame, base, thumb, q, prepared, profile)
        if not self.gated_slot.put(gated):
            self.telemetry.frames_dropped.labels("gate").inc()
            self.telemetry.count("dropped")
        # the classifier publishes nothing before the check is done (`gated.checked`)
        w.stage = "scale check"
        try:
            self.fields.run_check(prepared)
            gated.scale_doubt = self._judge_scale(prepared, profile)
        finally:
            gated.checked.set()
        w.stage = "waiting for the classifier"
        self.gated_slot.wait_empty(SLOT_WAIT_S)  # prepare the next frame once the classifier took this one

    def _gate_new_cells(self, seq: int, frame: LiveFrame, thumb: np.ndarray, q: Quality) -> None:
        """A settled new field for a cell ensemble: white reference and scale check here (the gate's
        core), detection and the cells' inference on the classifier's thread."""
        screen = self.screen
        assert screen is not None
        self.workers[1].stage = "scale check"
        um, profile = self._scale()
        ahead, self._ahead = self._ahead, None
        check = ahead[1] if ahead is not None and self.settle.same_field(thumb, ahead[0]) else None
        source = f"profile:{profile}" if profile else "profile"
        prepared = screen.prepare(frame.rgb, um, source=source, check=check)
        self.settle.mark(thumb)
        self._field_focus = q.focus
        doubt, refused = self._judge(prepared.scale_check, prepared.refused, prepared.um_per_px, profile)
        if refused is not None:
            self._field_result = self._reject(
                seq, frame, q, [refused], "scale", prepared.refusal_category, doubt
            )
            return
        self._field_result = None  # pending: the classifier publishes the new field's result
        gated = Gated(seq, frame, frame.rgb, thumb, q, None, profile, cells=prepared)
        gated.checked.set()
        if not self.gated_slot.put(gated):
            self.telemetry.frames_dropped.labels("gate").inc()
            self.telemetry.count("dropped")
        self.workers[1].stage = "waiting for the classifier"
        self.gated_slot.wait_empty(SLOT_WAIT_S)

    def _check_ahead(self, rgb: np.ndarray, thumb: np.ndarray) -> None:
        """The red-cell check on the last frame before the field settles (the classifier is idle then):
        when the next frame settles unchanged it is classified without the check on the cores beside the
        interpreters (device/optics/analyse.py `check_ahead`)."""
        self._ahead = None
        if not self.fields.scale_known or not self.fields.settings.scale_check:
            return
        um, profile = self._scale()
        if um is None:
            return
        source = f"profile:{profile}" if profile else "profile"
        self._ahead = (thumb, self.fields.check_ahead(rgb, um, source=source))
        self.telemetry.count("scale_checked_ahead")

    def _judge_scale(self, prepared: Prepared, profile: str | None) -> bool:
        """Count this field's red-cell check towards the station's scale state (`ScaleVerdicts`: once
        per field) and update `scale_status`. A field refused because its red cells disagree with the
        calibration says "uncertain for this field" until enough fields in a row disagree to say
        "objective changed?"; True for such a field."""
        doubt, prepared.refused = self._judge(prepared.check, prepared.refused, prepared.um_per_px, profile)
        return doubt

    def _judge(
        self, c: ScaleCheck, refused: str | None, um_per_px: float | None, profile: str | None
    ) -> tuple[bool, str | None]:
        """`_judge_scale` for either path: (doubt, the refusal to show)."""
        verdicts = self.scale_verdicts
        expected = (profile, c.expected_um_per_px)
        if expected != self._verdicts_for:
            verdicts.reset()  # a profile switched (or its scale re-calibrated): judged afresh
            self._verdicts_for = expected
        verdicts.observe(c)
        doubt = (
            refused is not None
            and c.ran
            and not c.ok
            and refused.startswith(MISMATCH)
            and not verdicts.confirmed
        )
        if doubt:
            refused = verdicts.field_message(c)
        self.scale_status = self._scale_state(c, um_per_px, profile)
        return doubt, refused

    def _scale_state(self, c: ScaleCheck, um_per_px: float | None, profile: str | None) -> dict[str, Any]:
        v = self.scale_verdicts
        message = c.message
        if not self.fields.scale_known:
            st = "unknown"
        elif um_per_px is None and profile is None:
            st = "no_profile"
        elif v.confirmed:
            st = "mismatch"
            if c.ok or not c.ran:
                last = f"{v.agreeing} of {v.ok_fields} fields in a row agree" if c.ok else "the last field"
                message = f"{MISMATCH} — {last} ({c.message}); still in force"
        elif c.ran:
            st = v.state
            if not c.ok:
                message = v.field_message(c)
        else:
            st = "not_run"
        if st == "no_profile":
            message = (
                "no calibration profile: frames are classified as before (centre crop, no rescaling); "
                "calibrate the station (smearscope calibrate). " + c.message
            )
        return {"state": st, "profile": profile, "message": message, **c.to_dict(), "at": utc_now()}

    # -- classifier ----------------------------------------------------------------------------

    def _classify_step(self) -> None:
        w = self.workers[2]
        w.stage = "waiting for a frame"
        g = self.gated_slot.take(SLOT_WAIT_S)
        if g is None:
            return
        w.stage = "inference"
        if g.cells is not None:
            self._classify_cells(g)
            return
        assert g.prepared is not None
        fields = self.fields  # read once: swap_ensemble() may replace them between frames
        analysis = self._analyse_field(fields, g, w)
        if g.prepared.refused is not None:  # the red cells say another magnification: nothing is called
            self._field_result = self._reject(
                g.seq,
                g.frame,
                g.quality,
                [g.prepared.refused],
                "scale",
                refusal_category(g.prepared),
                g.scale_doubt,
            )
            return
        pred = analysis.prediction
        fr = analysis.field
        self.field += 1
        latency_ms = (time.monotonic_ns() - g.frame.t_ns) / 1e6
        no_cells = fr.state == "no_cells"
        live = self._field_live(g, analysis, fields.ensemble.label_ids, latency_ms)
        self.live.publish_result(live, analysis.heat_base, pred.cam)
        self.telemetry.field_outcome(fr.state, "camera")
        if fr.state == "uncertain":
            self.telemetry.abstained(abstention_category(fr.reason), "camera")
        self._field_result = live
        self.last_seen_ns = g.frame.t_ns
        if no_cells:
            self.telemetry.count("no_cells")
            return
        self.telemetry.classified(pred.inference_ms, latency_ms)
        c = Classified(g, pred, live, analysis)
        self.last_classified = c
        w.stage = "store policy"
        self._maybe_store(c)

    def _analyse_field(self, fields: FieldClassifier, g: Gated, w: Worker) -> FieldAnalysis:
        """The field's analysis, once its scale check has finished; on any failure the settle tracker
        forgets the field (the gate must not wait for its result forever)."""
        assert g.prepared is not None
        try:
            analysis = fields.classify(g.prepared, with_cam=self.config.classifier.heatmap)
            w.stage = "waiting for the scale check"
            if not g.checked.wait(SCALE_CHECK_TIMEOUT_S):
                raise RuntimeError(f"the scale check did not finish in {SCALE_CHECK_TIMEOUT_S:.0f} s")
        except BaseException:
            self.settle.forget()
            raise
        return analysis

    def _field_live(
        self, g: Gated, analysis: FieldAnalysis, labels: Sequence[str], latency_ms: float
    ) -> dict[str, Any]:
        """The live result of a classified field (what the page and the store record show)."""
        assert g.prepared is not None
        pred = analysis.prediction
        return {
            "frame_seq": g.seq,
            "captured_at": g.frame.captured_at,
            "rejected": False,
            "label": None if analysis.field.state == "no_cells" else pred.label,
            "display": analysis.field.display,
            "confidence": round(pred.confidence, 4),
            "probabilities": {lb: round(float(pred.probabilities.get(lb, 0.0)), 4) for lb in labels},
            "abstained": pred.abstained,
            "reason": pred.reason,
            "frame": pred.to_dict(),
            "field": self.field,
            "new_field": True,
            "quality": g.quality.to_dict(),
            "has_heatmap": pred.cam is not None,
            "inference_ms": round(pred.inference_ms, 3),
            "prepare_ms": round(g.prepared.prepare_ms, 3),
            "latency_ms": round(latency_ms, 3),
            "models": self.models,
            "profile": g.profile,
            **analysis.to_dict(outlines=True),
        }

    def _classify_cells(self, g: Gated) -> None:
        """Detection, the cells' inference and the field's result of a cell ensemble; publishes the live
        result with the outlines (`cells`), the field line and, while a sample is open, its count."""
        screen = self.screen
        assert screen is not None and g.cells is not None
        try:
            result = screen.result(g.cells)
        except BaseException:
            self.settle.forget()  # the gate must not wait for this field's result forever
            raise
        self.field += 1
        latency_ms = (time.monotonic_ns() - g.frame.t_ns) / 1e6
        t = result.timings
        infer_ms = t.detect_ms + t.crop_ms + t.infer_ms + t.result_ms
        live = self._cells_live(g, result, infer_ms, latency_ms)
        no_cells = result.state == NO_CELLS
        c = None
        if not no_cells:
            pred = Prediction(
                list(screen.ensemble.label_ids),
                dict(result.probabilities),
                result.label,
                result.confidence,
                result.abstained,
                result.reason,
                inference_ms=infer_ms,
            )
            c = Classified(g, pred, live, None, result)
        # before the page sees the field: "Capture" on it takes this field, never the one before it
        # (which may be captured already) nor, for a field without white cells, an older one
        self.last_classified = c
        self.live.publish_result(live)
        if no_cells:
            self.telemetry.field_outcome("no_cells", "camera")
        else:
            self.telemetry.field_outcome("uncertain" if result.abstained else "classified", "camera")
        self._field_result = live
        self.last_seen_ns = g.frame.t_ns
        if c is None:
            self.telemetry.count("no_cells")
            return
        self.telemetry.classified(infer_ms, latency_ms)
        self.workers[2].stage = "store policy"
        self._maybe_store(c)

    def _cells_live(self, g: Gated, result: FieldCells, infer_ms: float, latency_ms: float) -> dict[str, Any]:
        """The live result of a cell-counted field: its outlines, field line and the open sample's
        running count (`slide`) when there is one."""
        no_cells = result.state == NO_CELLS
        live = {
            "frame_seq": g.seq,
            "captured_at": g.frame.captured_at,
            "rejected": False,
            "label": None if no_cells else result.label,
            "display": result.field_line,
            "confidence": round(result.confidence, 4),
            "probabilities": {k: round(v, 4) for k, v in result.probabilities.items()},
            "abstained": result.abstained,
            "reason": result.reason,
            "field": self.field,
            "new_field": True,
            "quality": g.quality.to_dict(),
            "has_heatmap": False,
            "inference_ms": round(infer_ms, 3),
            "prepare_ms": round(result.timings.prepare_ms, 3),
            "latency_ms": round(latency_ms, 3),
            "models": self.models,
            "profile": g.profile,
            **result.to_dict(),
        }
        live["state"] = result.state
        slide = self._slide(result)
        self._slide_at = time.monotonic()
        if slide is not None:
            live["slide"] = slide
        return live

    def _slide(self, result: FieldCells, *, with_field: bool = True) -> dict[str, Any] | None:
        """The running count of the newest open sample: its stored cells, plus this field's unless it
        is already stored in it (`field_captured`). None without an open sample."""
        if self.screen is None:
            return None
        try:
            open_samples = self.store.list_samples(status="open", limit=1)
            if not open_samples:
                return None
            sample_id = open_samples[0]["id"]
            stored = [cell for _, cell in self.store.sample_cells(sample_id)]
        except Exception as exc:  # noqa: BLE001 - the live result goes on without the slide count
            self._error("store", f"cannot read the open sample's cells: {exc}", "warning")
            return None
        if with_field and self.captured.get(sample_id) != self.field:
            stored += list(result.records)
        try:
            return slide_summary(sample_id, stored, self.screen.ensemble.labels, self.screen.settings)
        except ValueError as exc:  # cells stored by other models' labels (the models were changed)
            self._error("store", f"cannot count the open sample: {exc}", "warning")
            return None

    def _refresh_slide(self, result: dict[str, Any]) -> dict[str, Any]:
        """A still field's result with the open sample's count read again (at most every
        `SLIDE_REFRESH_S`): a sample opened, a field captured or a cell reviewed while it is shown."""
        c = self.last_classified
        now = time.monotonic()
        if c is None or c.cells is None or result.get("field") != c.live.get("field"):
            return result
        if now - self._slide_at < SLIDE_REFRESH_S:
            return result
        self._slide_at = now
        slide = self._slide(c.cells)
        result = {k: v for k, v in result.items() if k != "slide"}
        if slide is not None:
            result["slide"] = slide
        self._field_result = result
        return result

    def field_captured(self, sample_id: str | None, field_no: int) -> None:
        """`Services.capture_field` stored field `field_no` in `sample_id`: it is not captured again,
        and the live result's slide count now holds it once."""
        self.captured[sample_id] = field_no
        c = self.last_classified
        result = self._field_result
        if c is None or c.cells is None or result is None or result.get("field") != field_no:
            return
        slide = self._slide(c.cells, with_field=False)
        self._field_result = result = {**result, "slide": slide} if slide is not None else result
        self._slide_at = time.monotonic()
        self.live.publish_result({**result, "republished": True, "new_field": False})

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
            job = self.store_q.get(timeout=SLOT_WAIT_S)
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
        if c.cells is not None:
            return self._write_cells(job, c.cells)
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
                "quality": self._record_quality(c),
                "um_per_px": c.gated.prepared.um_per_px if c.gated.prepared is not None else None,
                "profile": c.gated.profile,
                "image_sha256": sha,
                "heatmap_sha256": heat_sha,
                "filename": job.filename,
                "captured_at": c.gated.frame.captured_at,
                "monotonic_ns": c.gated.frame.t_ns,
            },
            images=images,
        )
        return self._stored(job, rec)

    def _write_cells(self, job: StoreJob, result: FieldCells) -> dict[str, Any]:
        """A screened field through the one writer (device/screening/writer.py)."""
        g = job.classified.gated
        origin = Origin(
            job.source,
            g.frame.captured_at,
            g.frame.t_ns,
            g.quality.to_dict(),
            job.sample_id,
            job.filename,
            g.profile,
            job.require_image,
        )
        try:
            written = write_field(
                self.store, result, origin, self.models, jpeg_quality=self.config.store.jpeg_quality
            )
        except DiskFullError as exc:
            self.telemetry.images_refused.inc()
            self.last_error = {"at": utc_now(), "source": "store", "message": str(exc)}
            raise
        if written.image_error is not None:
            self.telemetry.images_refused.inc()
            self.last_error = {"at": utc_now(), "source": "store", "message": written.image_error}
        return self._stored(job, written.record)

    def _stored(self, job: StoreJob, rec: dict[str, Any]) -> dict[str, Any]:
        if self.store.budget_bytes:
            self.store.enforce_disk_budget()
        self.telemetry.records_stored.labels(job.source).inc()
        self.telemetry.count("stored")
        job.result = rec
        if job.done is not None:
            job.done.set()
        return rec

    @staticmethod
    def _record_quality(c: Classified) -> dict[str, Any]:
        """The quality figures plus, for tiled fields, the scale check and tile counts."""
        q = c.gated.quality.to_dict()
        if c.analysis is not None:
            a = c.analysis.to_dict()
            q["scale_check"] = a["scale_check"]
            q["tiles"] = a["tiles"]
            q["tile_labels"] = a["tile_labels"]
            if "white_reference" in a:  # the white the tiles were classified at (a clipped red's choice)
                q["white_reference"] = a["white_reference"]
        return q

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
