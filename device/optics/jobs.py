"""Calibration runs started from the admin page: one at a time, in a background thread, on the
daemon's live frames, with progress the page polls. The result is kept until the admin saves it
(or starts another run); nothing is written to the profiles file without the admin's word."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from device.errors import SmearscopeError
from device.optics import calibrate

FRAME_TIMEOUT_S = 10.0


class JobBusy(SmearscopeError):
    """Another calibration is running."""


class CalibrationJobs:
    def __init__(self, services):
        self.services = services
        self._lock = threading.Lock()
        self._job: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._frozen: tuple[str, np.ndarray] | None = None

    def freeze(self) -> tuple[str, np.ndarray]:
        """Keep the newest live frame (raw pixels) for marking a stage micrometer on it."""
        got = self.services.live.frames.latest()
        if got is None:
            raise SmearscopeError("no camera frame yet: is the camera running (status page)?")
        token = uuid.uuid4().hex
        with self._lock:
            self._frozen = (token, got[1].rgb)
        return token, got[1].rgb

    def frozen(self, token: str) -> np.ndarray | None:
        with self._lock:
            f = self._frozen
        return f[1] if f is not None and f[0] == token else None

    def state(self) -> dict[str, Any] | None:
        with self._lock:
            return None if self._job is None else {k: v for k, v in self._job.items() if k != "_"}

    def result(self, job_id: str) -> dict[str, Any] | None:
        """A finished run's result (for saving), None if unknown, still running or failed."""
        with self._lock:
            j = self._job
            if j is None or j["id"] != job_id or j["state"] != "done":
                return None
            return dict(j["result"])

    def _next_frame(self) -> Callable[[], np.ndarray]:
        frames = self.services.live.frames
        seq = [-1]
        got = frames.latest()
        if got is not None:
            seq[0] = got[0]

        def read() -> np.ndarray:
            item = frames.wait(seq[0], FRAME_TIMEOUT_S)
            if item is None:
                raise calibrate.CalibrationRefused(
                    f"no new camera frame for {FRAME_TIMEOUT_S:.0f} s: is the camera running (status page)?"
                )
            seq[0] = item[0]
            return item[1].rgb

        return read

    def _progress(self, i: int, n: int, what: str) -> None:
        with self._lock:
            if self._job is not None:
                self._job.update(done=i, total=n, message=what)

    def start(self, kind: str, *, user: str | None, **params: Any) -> dict[str, Any]:
        if kind not in ("auto", "white"):
            raise SmearscopeError(f"unknown calibration {kind!r}")
        with self._lock:
            if self._job is not None and self._job["state"] == "running":
                raise JobBusy("a calibration is running: wait for it to finish")
            job = {
                "id": uuid.uuid4().hex,
                "kind": kind,
                "state": "running",
                "done": 0,
                "total": int(params.get("frames") or 0),
                "message": "starting",
                "result": None,
                "error": None,
                "started_by": user,
                "params": params,
                "started": time.time(),
            }
            self._job = job
        self._thread = threading.Thread(target=self._run, args=(job,), name=f"calibrate-{kind}", daemon=True)
        self._thread.start()
        return self.state()  # type: ignore[return-value]

    def wait(self, timeout: float) -> None:
        """For tests and the command line: block until the running job ends."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, job: dict[str, Any]) -> None:
        try:
            result = self._auto(job["params"]) if job["kind"] == "auto" else self._white()
            outcome = {"state": "done", "result": result, "message": "finished"}
        except SmearscopeError as exc:
            outcome = {"state": "failed", "error": str(exc), "message": "refused"}
        except Exception as exc:  # noqa: BLE001 - shown on the page rather than killing the thread
            outcome = {"state": "failed", "error": f"calibration failed: {exc}", "message": "failed"}
        with self._lock:
            job.update(outcome)

    def _auto(self, params: dict[str, Any]) -> dict[str, Any]:
        cal = self.services.config.calibration
        res = calibrate.auto_scale(
            self._next_frame(),
            int(params.get("frames") or cal.frames),
            rbc_um=self.services.config.optics.rbc_diameter_um,
            min_confident=cal.min_confident,
            max_spread=cal.max_spread,
            estimate=getattr(self.services, "scale_estimator", None),
            progress=self._progress,
        )
        return res.to_dict()

    def _white(self) -> dict[str, Any]:
        src = getattr(self.services, "camera_source", None)
        if src is None:
            raise SmearscopeError("the camera is not running: start it (status page) and try again")
        src.raw = True
        try:
            res = calibrate.white_reference(
                self._next_frame(),
                lambda c: src.request(c).result(timeout=60),
                lambda: src.request(None).result(timeout=60),
                target=self.services.config.calibration.white_target,
                progress=self._progress,
            )
        finally:
            src.raw = False
            src.reapply()  # the active profile's own settings until this result is saved
        return res.to_dict()
