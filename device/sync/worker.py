"""Pushing the outbox to the hub: `Syncer` does one pass (images first, then record batches);
`SyncWorker` runs passes in a thread, probing the hub and backing off exponentially with jitter while it
is unreachable."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from device.config import SyncConfig
from device.store import Store, utc_now
from device.sync.outbox import Outbox, SyncBusy
from device.sync.transport import HubClient, HubError, HubRefused, HubUnreachable

#: The [sync] defaults; device/config.py holds them (and their ranges).
_SYNC = SyncConfig()

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 2.0


@dataclass
class SyncSummary:
    sent: int = 0  # records the hub confirmed in this pass (accepted + duplicate)
    accepted: int = 0
    duplicate: int = 0
    deferred: int = 0
    rejected_now: int = 0  # quarantined in this pass
    images_sent: int = 0
    images_skipped: int = 0  # the hub had them already
    samples_sent: int = 0
    batches: int = 0
    seconds: float = 0.0
    error: str | None = None
    clock_skew_s: float | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        counts = out.pop("counts")
        out["pending"] = counts.get("pending", 0) + counts.get("sending", 0)
        out["rejected"] = counts.get("rejected", 0)
        out["synced"] = counts.get("synced", 0)
        return out


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so many devices that
    lost the same hub do not all come back in the same second."""
    step = min(cap, base * 2 ** max(failures - 1, 0))
    return step / 2 + (rng or random).uniform(0, step / 2)


class Syncer:
    """One push pass over the outbox."""

    def __init__(self, outbox: Outbox, client: HubClient, batch_size: int = _SYNC.batch_size):
        self.outbox = outbox
        self.client = client
        self.batch_size = batch_size

    def run(self, should_stop: Callable[[], bool] = lambda: False, *, wait_s: float = 0.0) -> SyncSummary:
        """Take the outbox (SyncBusy if another pass holds it after `wait_s`), put back rows a crashed
        pass left in `sending`, probe, then push batches until nothing is pending, `should_stop()` or an
        error (raised after releasing the batch in flight; the summary so far is on it as `.summary`)."""
        with self.outbox.exclusive(wait_s):
            return self._run(should_stop)

    def _run(self, should_stop: Callable[[], bool]) -> SyncSummary:
        t0 = time.monotonic()
        summary = SyncSummary()
        try:
            recovered = self.outbox.recover()
            if recovered:
                log.info(
                    "sync: %d record(s) left in 'sending' by an interrupted pass go back to pending",
                    recovered,
                )
            self.client.ping()
            after = 0
            while not should_stop():
                batch = self.outbox.claim(self.batch_size, after_seq=after)
                if not batch:
                    break
                after = batch[-1]["seq"]
                try:
                    self._push(batch, summary)
                except BaseException as exc:
                    self.outbox.release([r["id"] for r in batch], error=str(exc)[:500])
                    raise
                summary.batches += 1
            if not should_stop():
                finished = self.outbox.finished_samples()
                self._push_samples(finished, summary)
                self.outbox.samples_confirmed(finished)
        except HubError as exc:
            summary.error = str(exc)
            exc.summary = summary  # type: ignore[attr-defined]
            raise
        finally:
            summary.seconds = round(time.monotonic() - t0, 3)
            summary.counts = self.outbox.counts()
        return summary

    def _push(self, batch: list[dict[str, Any]], summary: SyncSummary) -> None:
        bad = self._push_images(batch, summary)
        live = []
        for r in batch:
            reason = bad.get(r.get("image_sha256") or "") or bad.get(r.get("heatmap_sha256") or "")
            if reason:
                self.outbox.quarantine([r["id"]], reason)
                summary.rejected_now += 1
            else:
                live.append(r)
        if live:
            self._post(live, summary)
        self._push_samples(self.outbox.samples(r["sample_id"] for r in batch if r.get("sample_id")), summary)

    def _push_samples(self, samples: list[dict[str, Any]], summary: SyncSummary) -> None:
        """Slide ids, open/finished and the device's slide call, so the hub shows slides, not UUIDs."""
        if not samples:
            return
        for sid, status, reason in self.client.post_samples(samples):
            if status == "rejected":
                log.warning("sync: hub rejected sample %s: %s", sid, reason)
            elif status == "stored":
                summary.samples_sent += 1

    def _push_images(self, batch: list[dict[str, Any]], summary: SyncSummary) -> dict[str, str]:
        """Upload the images the batch names that the hub lacks. Returns {sha: reason} for images
        that cannot be sent (their records are quarantined, nothing is deleted)."""
        shas = self.outbox.unsynced_images(batch)
        if not shas:
            return {}
        missing = self.client.missing_images(shas)
        have = [s for s in shas if s not in missing]
        if have:
            self.outbox.mark_images_synced(have)
            summary.images_skipped += len(have)
        bad: dict[str, str] = {}
        for sha in shas:
            if sha not in missing:
                continue
            try:
                data = self.outbox.image_path(sha).read_bytes()
            except OSError as exc:
                bad[sha] = f"image {sha} cannot be read on the device ({exc.strerror or exc})"
                continue
            if hashlib.sha256(data).hexdigest() != sha:
                bad[sha] = f"image {sha} on the device does not match its hash (corrupted file)"
                continue
            try:
                self.client.put_image(sha, data)
            except HubRefused as exc:
                if exc.status in (413, 415, 422):
                    bad[sha] = f"hub refused image {sha}: {exc}"
                    continue
                raise
            self.outbox.mark_images_synced([sha])
            summary.images_sent += 1
        return bad

    def _post(self, records: list[dict[str, Any]], summary: SyncSummary) -> None:
        try:
            answer = self.client.post_results(records)
        except HubRefused as exc:
            if exc.status == 413 and len(records) > 1:  # the hub takes smaller batches: split
                half = len(records) // 2
                self._post(records[:half], summary)
                self._post(records[half:], summary)
                return
            if exc.status == 413:
                self.outbox.quarantine([records[0]["id"]], f"too large for the hub: {exc}")
                summary.rejected_now += 1
                return
            raise
        ids = {r["id"] for r in records}
        by_id = {r["id"]: r for r in records}
        answers = [a for a in answer.answers if a[0] in ids]
        counts = self.outbox.settle(answers)
        deferred = [by_id[a[0]] for a in answers if a[1] not in ("accepted", "duplicate", "rejected")]
        if deferred:
            self.outbox.forget_images(
                s for r in deferred for s in (r.get("image_sha256"), r.get("heatmap_sha256")) if s
            )
        unanswered = ids - {a[0] for a in answers}
        if unanswered:
            self.outbox.release(unanswered, error="the hub did not answer for this record")
        summary.accepted += counts["accepted"]
        summary.duplicate += counts["duplicate"]
        summary.sent += counts["accepted"] + counts["duplicate"]
        summary.deferred += counts["deferred"]
        summary.rejected_now += counts["rejected"]
        summary.clock_skew_s = answer.clock_skew_s


class SyncWorker:
    """The daemon's sync thread: `start()`, `stop()`, `wake()` (push soon, e.g. after a new result) and
    `status()` for /api/status and the page."""

    def __init__(
        self,
        config: Any,
        store: Store,
        *,
        client_factory: Callable[[], HubClient] | None = None,
        rng: random.Random | None = None,
        on_models_installed: Callable[[], Any] | None = None,
        models_root: Any = None,
    ):
        self.cfg = config.sync
        self.store = store
        self.updater = None
        if getattr(config, "models", None) is not None:
            from device.sync.updates import ModelUpdater

            self.updater = ModelUpdater(
                config, store, models_root=models_root, on_installed=on_models_installed
            )
        self._poll_s = config.models.poll_s if self.updater is not None else 0.0
        self._next_models = 0.0  # monotonic time of the next ask for the current bundle set
        self._model_failures = 0
        self._client_factory = client_factory or (lambda: HubClient.from_config(self.cfg))
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = "disabled" if not self.enabled else "idle"
        self._last_success: str | None = None
        self._last_attempt: str | None = None
        self._last_error: str | None = None
        self._backoff_s = 0.0
        self._failures = 0
        self._sent_total = 0
        self._clock_skew_s: float | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.enabled and self.cfg.hub_url)

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def accept_models(self, *, allow_downgrade: bool = False) -> dict[str, Any]:
        """Install the staged bundle set now (an admin's accept, `allow_downgrade` for an older set);
        reports to the hub when it can."""
        if self.updater is None:
            raise RuntimeError("no model updater")
        client = None
        try:
            client = self._client_factory()
        except Exception:  # noqa: BLE001 - installing must not depend on the hub being configured
            client = None
        try:
            return self.updater.accept(client, allow_downgrade=allow_downgrade)
        finally:
            if client is not None:
                client.close()

    def _check_models(self, client: HubClient) -> float:
        """Ask the hub for this station's bundle set when it is time; returns seconds until the next
        ask. Failures only delay it: the push and classification go on."""
        now = time.monotonic()
        if self.updater is None or now < self._next_models:
            return max(self._next_models - now, 0.0) if self.updater is not None else float("inf")
        try:
            result = self.updater.check(client)
            self._model_failures = 0
            log.info("models: %s", result.get("state"))
            self._next_models = time.monotonic() + self._poll_s
        except HubError as exc:
            self._model_failures += 1
            retry = min(
                self._poll_s,
                backoff_delay(self._model_failures, BACKOFF_BASE_S, self.cfg.max_backoff_s, self._rng),
            )
            log.warning("models: update check failed (%s); again in %.0f s", exc, retry)
            self._next_models = time.monotonic() + retry
        except Exception as exc:  # noqa: BLE001 - never let an update kill the sync thread
            log.exception("models: unexpected error in the update check")
            self._set(last_error=f"models: {type(exc).__name__}: {exc}"[:500])
            self._next_models = time.monotonic() + self._poll_s
        return max(self._next_models - time.monotonic(), 0.0)

    def status(self) -> dict[str, Any]:
        try:
            counts = Outbox(self.store).counts()
            rejected = Outbox(self.store).rejected(5)
        except Exception as exc:  # noqa: BLE001 - status must always answer
            counts, rejected = {}, [{"reason": f"cannot read the outbox: {exc}"}]
        with self._lock:
            return {
                "enabled": self.enabled,
                "hub_url": self.cfg.hub_url,
                "state": self._state,
                "last_success": self._last_success,
                "last_attempt": self._last_attempt,
                "last_error": self._last_error,
                "backoff": round(self._backoff_s, 1),
                "sent_total": self._sent_total,
                "clock_skew_s": self._clock_skew_s,
                "pending": counts.get("pending", 0) + counts.get("sending", 0),
                "synced": counts.get("synced", 0),
                "rejected": counts.get("rejected", 0),
                "rejected_recent": rejected,
            }

    def _set(self, **kw: Any) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, f"_{k}", v)

    def _run(self) -> None:
        outbox = Outbox(self.store)
        client: HubClient | None = None
        next_push = 0.0  # monotonic; the model check may wake the loop before a push is due
        woken = True
        while not self._stop.is_set():
            delay = self.cfg.interval_s
            if not woken and time.monotonic() < next_push:
                delay = next_push - time.monotonic()
            else:
                delay, client = self._push_once(outbox, client)
                next_push = time.monotonic() + delay
            if self.updater is not None:
                try:
                    client = client or self._client_factory()
                    delay = min(delay, self._check_models(client))
                except Exception as exc:  # noqa: BLE001 - e.g. a bad ca_file: reported, not fatal
                    self._set(last_error=f"models: {exc}"[:500])
            woken = self._wake.wait(delay)
            self._wake.clear()
        if client is not None:
            client.close()
        self._set(state="stopped")

    def _push_once(self, outbox: Outbox, client: HubClient | None) -> tuple[float, HubClient | None]:
        """One push when records are pending; returns (seconds until the next push, the client)."""
        delay = self.cfg.interval_s
        try:
            counts = outbox.counts()
            if counts["pending"] or counts["sending"]:  # sending: left by a crashed pass
                client = client or self._client_factory()
                self._set(state="syncing", last_attempt=utc_now())
                summary = Syncer(outbox, client, self.cfg.batch_size).run(self._stop.is_set)
                with self._lock:
                    self._sent_total += summary.sent
                    self._clock_skew_s = summary.clock_skew_s
                    self._last_success = utc_now()
                    self._last_error = None
                    self._failures = 0
                    self._backoff_s = 0.0
                    self._state = "idle"
        except SyncBusy as exc:  # a manual `smearscope sync` is pushing: not a failure, try later
            self._set(state="idle", last_error=str(exc))
        except HubError as exc:
            if isinstance(exc, HubUnreachable) and client is not None:
                client.close()
                client = None
            with self._lock:
                self._failures += 1
                delay = backoff_delay(
                    self._failures,
                    min(BACKOFF_BASE_S, self.cfg.interval_s),
                    self.cfg.max_backoff_s,
                    self._rng,
                )
                self._backoff_s = delay
                self._last_error = str(exc)[:500]
                self._state = "backoff"
            log.warning("sync: %s; next attempt in %.0f s", exc, delay)
        except Exception as exc:  # noqa: BLE001 - the worker must survive; the watchdog sees the error
            log.exception("sync: unexpected error")
            self._set(last_error=f"{type(exc).__name__}: {exc}"[:500], state="backoff")
        return delay, client
