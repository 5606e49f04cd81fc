"""A restartable worker thread with a heartbeat, and the watchdog that restarts stuck ones."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Worker:
    """Runs `step()` in a loop on a daemon thread. `step` must return within a second or so (it
    waits with timeouts), so a heartbeat older than `stall_s` means the thread is stuck."""

    def __init__(
        self,
        name: str,
        step: Callable[[], None],
        *,
        stall_s: float = 30.0,
        on_error: Callable[[str, BaseException], None] | None = None,
    ):
        self.name = name
        self.step = step
        self.stall_s = stall_s
        self.on_error = on_error
        self.stop_event = threading.Event()
        self.generation = 0
        self.restarts = 0
        self.heartbeat = time.monotonic()
        self.stage = "idle"
        self.thread: threading.Thread | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self.generation += 1
        self.heartbeat = time.monotonic()
        self.thread = threading.Thread(
            target=self._run, args=(self.generation,), name=f"smearscope-{self.name}", daemon=True
        )
        self.thread.start()

    def _run(self, generation: int) -> None:
        while not self.stop_event.is_set() and generation == self.generation:
            self.heartbeat = time.monotonic()
            try:
                self.step()
            except Exception as exc:  # a bad frame must not kill the worker
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                log.exception("worker %s failed", self.name)
                if self.on_error:
                    self.on_error(self.name, exc)
                self.stop_event.wait(0.5)

    def stalled_for(self) -> float:
        return time.monotonic() - self.heartbeat

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


class Watchdog:
    """Restarts a worker whose heartbeat is older than its `stall_s` (or whose thread died) and reports
    why; calls `on_healthy` each round when all are fine (systemd WATCHDOG=1)."""

    def __init__(
        self,
        workers: list[Worker],
        *,
        on_restart: Callable[[Worker, str], None],
        on_healthy: Callable[[], None] | None = None,
        interval_s: float = 1.0,
    ):
        self.workers = workers
        self.on_restart = on_restart
        self.on_healthy = on_healthy
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="smearscope-watchdog", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def check(self) -> bool:
        healthy = True
        for w in self.workers:
            if w.stop_event.is_set():
                continue
            why = None
            if not w.alive():
                why = f"worker {w.name} died"
            elif w.stalled_for() > w.stall_s:
                why = f"worker {w.name} stuck for {w.stalled_for():.0f} s in {w.stage}"
            if why:
                healthy = False
                w.restarts += 1
                self.on_restart(w, why)
                w.start()  # the old thread exits when it wakes (its generation is stale)
        return healthy

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                if self.check() and self.on_healthy:
                    self.on_healthy()
            except Exception:  # the watchdog itself must never die
                log.exception("watchdog round failed")

    def stop(self) -> None:
        self.stop_event.set()
