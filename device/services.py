"""`Services`: what `smearscope run` builds once and hands to the web app and the sync worker
(DEVELOPERS.md Contract 4): config, store, live view, upload classification, field capture, status."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device import __version__
from device.camera import FrameSource
from device.config import Config
from device.ensemble import Ensemble, heatmap_overlay
from device.errors import BundleError, SmearscopeError
from device.paths import default_bundle_dirs
from device.pipeline.live import LiveFrame, LiveView, encode_jpeg
from device.pipeline.pipeline import Classified, Gated, Pipeline, StoreJob
from device.pipeline.smoothing import thumbnail
from device.preprocess import prepare
from device.quality import QualityThresholds, assess
from device.store import Store, StoreError, utc_now
from device.telemetry import Telemetry

log = logging.getLogger(__name__)
DISCLAIMER = "Screening aid for trained staff — not a diagnosis."
MAX_CAPTURE_AGE_S = 5.0  # a captured field must be what the technician sees now


def model_dirs(config: Config) -> list[Path]:
    dirs = [Path(d) for d in config.classifier.models] or default_bundle_dirs()
    if not dirs:
        raise BundleError(
            "no model bundles: install one in models/ (smearscope models install) or set [classifier] models"
        )
    return dirs


def load_ensemble(config: Config, dirs: list[Path], threads: int | None = None) -> Ensemble:
    """Verified bundles (hash, tensors vs manifest) as one ensemble; a bad one raises BundleError."""
    cc = config.classifier
    return Ensemble.from_dirs(
        [str(d) for d in dirs],
        num_threads=threads or cc.threads,
        threshold=cc.abstain_threshold or None,
        abstain_on_disagreement=cc.abstain_on_disagreement,
    )


def check_signatures(config: Config, dirs: list[Path]) -> list[str]:
    """Refuse (BundleError) a bundle that is unsigned, signed by a key not in `[models] trusted_keys`
    or changed after signing; with `allow_unsigned` return the problems instead (shown in red)."""
    from device.signing import SignaturePolicy

    problems = [v.problem() for v in SignaturePolicy.from_config(config).check(dirs)]
    for p in problems:
        log.warning("%s — loaded anyway: [models] allow_unsigned = true", p)
    return problems


class Services:
    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        ensemble: Ensemble | None = None,
        source_factory: Callable[[], FrameSource] | None = None,
        pace: bool = True,
        sync: bool = True,
        notify_watchdog: Callable[[], None] | None = None,
        telemetry: Telemetry | None = None,
    ):
        self.config = config
        self.bundle_dirs = [Path(m.bundle.path) for m in ensemble.models] if ensemble else model_dirs(config)
        self.signature_problems: list[str] = []
        if ensemble is None:  # a caller handing in an ensemble has verified it (tests, benchmarks)
            self.signature_problems = check_signatures(config, self.bundle_dirs)
        self.ensemble = ensemble or load_ensemble(config, self.bundle_dirs)
        self._reload_lock = threading.Lock()
        self.store = store or Store.from_config(config)
        self.store.set_labels({lb.id: lb.malignant for lb in self.ensemble.labels})
        self.telemetry = telemetry or Telemetry()
        self.live = LiveView()
        self.pipeline = Pipeline(
            config,
            self.store,
            self.ensemble,
            telemetry=self.telemetry,
            live=self.live,
            source_factory=source_factory,
            pace=pace,
            notify_watchdog=notify_watchdog,
        )
        self.sync_worker = None
        if sync and config.sync.enabled:
            from device.sync.worker import SyncWorker

            self.sync_worker = SyncWorker(config, self.store, on_models_installed=self.reload_models)
        self._upload_ensemble: Ensemble | None = None
        self._upload_lock = threading.Lock()
        self._counts_cache: tuple[float, dict[str, int]] = (0.0, {})
        self.started = False

    @property
    def registry(self):
        """The prometheus CollectorRegistry served at /metrics."""
        return self.telemetry.registry

    def start(self) -> None:
        self.pipeline.start()
        if self.sync_worker is not None:
            self.sync_worker.start()
        self.store.add_event(
            "info", "daemon", f"smearscope {__version__} started: models {', '.join(self.ensemble.names)}"
        )
        self.started = True

    def stop(self, timeout: float = 4.0) -> None:
        deadline = time.monotonic() + timeout
        if self.sync_worker is not None:
            self.sync_worker.stop(timeout=min(1.5, timeout / 3))
        self.pipeline.stop(max(0.5, deadline - time.monotonic()))
        if self.started:
            with contextlib.suppress(Exception):
                self.store.add_event("info", "daemon", "stopped")
        self.store.close()

    # -- technician actions --------------------------------------------------------------------

    def capture_field(self, sample_id: str | None, user: str | None) -> dict[str, Any]:
        """Store the field the classifier saw last (image + its own prediction) in the sample."""
        if sample_id:
            sample = self.store.get_sample(sample_id)
            if sample is None:
                raise StoreError(f"no sample {sample_id}")
            if sample["status"] != "open":
                raise StoreError(f"sample {sample['slide_id']} is finished; start a new one")
        c = self.pipeline.last_classified
        latest = self.live.latest_result()
        if latest and latest[1].get("rejected"):
            raise SmearscopeError("the current field failed the quality check: " + latest[1]["display"])
        if c is None:
            raise SmearscopeError("no classified field yet: is the camera running and the field in focus?")
        age_s = (time.monotonic_ns() - c.gated.frame.t_ns) / 1e9
        if self.pipeline.camera.get("state") != "running" or age_s > MAX_CAPTURE_AGE_S:
            raise SmearscopeError(
                f"the camera is {self.pipeline.camera.get('state')} and the last classified field is "
                f"{age_s:.0f} s old: not stored. Check the camera (status page) and try again"
            )
        job = StoreJob(c, source="camera", sample_id=sample_id, require_image=True)
        rec = self.pipeline.write(job)  # DiskFullError (nothing stored) when the image cannot be kept
        self._wake_sync()
        return rec

    def _uploader(self) -> Ensemble:
        """A second interpreter per model for uploads, so they never wait for the live classifier."""
        if self._upload_ensemble is None:
            self._upload_ensemble = load_ensemble(self.config, self.bundle_dirs, threads=1)
        return self._upload_ensemble

    def classify_upload(
        self,
        rgb: np.ndarray,
        *,
        filename: str | None = None,
        sample_id: str | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        """Classify an uploaded image and store it (record JSON). A frame failing the quality gate is
        still classified but marked uncertain, with the reason."""
        if sample_id and self.store.get_sample(sample_id) is None:
            raise StoreError(f"no sample {sample_id}")
        q = assess(rgb, QualityThresholds.from_config(self.config.quality))
        with self._upload_lock:
            pred = self._uploader().classify(rgb, with_cam=self.config.classifier.heatmap)
        if not q.ok and not pred.abstained:
            pred.abstained = True
            pred.reason = "image quality: " + ", ".join(q.reasons)
        frame = LiveFrame(rgb, utc_now(), time.monotonic_ns())
        gated = Gated(0, frame, rgb, thumbnail(rgb), q)
        if pred.cam is not None:
            # the heatmap is drawn over the model's view of the image
            spec = self.ensemble.models[0].manifest.input
            gated.model_input = prepare(rgb, spec.size, spec.resize, white_reference=spec.white_reference)
        name = filename[:255] if filename else None
        classified = Classified(gated, pred, {})
        job = StoreJob(classified, source="upload", sample_id=sample_id, filename=name, require_image=True)
        rec = self.pipeline.write(job)  # DiskFullError (nothing stored) when the image cannot be kept
        self._wake_sync()
        return rec

    def reload_models(self) -> dict[str, Any]:
        """Load the configured bundles again (after `models install`/an update) and swap them in
        between two frames. The new ensemble is verified (signature, hash, tensors) before the swap;
        on any error the current one keeps serving and BundleError is raised."""
        with self._reload_lock:
            dirs = model_dirs(self.config)
            problems = check_signatures(self.config, dirs)
            ensemble = load_ensemble(self.config, dirs)
            uploader = load_ensemble(self.config, dirs, threads=1)
            self.pipeline.swap_ensemble(ensemble)
            with self._upload_lock:
                self._upload_ensemble = uploader
            self.ensemble, self.bundle_dirs, self.signature_problems = ensemble, dirs, problems
            self.store.set_labels({lb.id: lb.malignant for lb in ensemble.labels})
        self.store.add_event("info", "models", f"models reloaded: {', '.join(ensemble.names)}")
        return {"models": [{"name": n, "sha256": h} for n, h in ensemble.hashes.items()]}

    def model_update_status(self) -> dict[str, Any] | None:
        """The hub's model update as the station sees it (None without sync)."""
        updater = getattr(self.sync_worker, "updater", None)
        return updater.status() if updater is not None else None

    def accept_model_update(self) -> dict[str, Any]:
        """An admin accepts the staged bundle set (`[models] update_policy = "manual"`)."""
        if self.sync_worker is None or self.sync_worker.updater is None:
            raise SmearscopeError("model updates come through the hub sync, which is not enabled")
        return self.sync_worker.accept_models()

    def heatmap_jpeg(self, rgb: np.ndarray, cam: np.ndarray) -> bytes:
        return encode_jpeg(heatmap_overlay(rgb, cam))

    def _wake_sync(self) -> None:
        if self.sync_worker is not None:
            self.sync_worker.wake()

    # -- status --------------------------------------------------------------------------------

    def _counts(self) -> dict[str, int]:
        at, counts = self._counts_cache
        if time.monotonic() - at > 1.0:
            counts = self.store.counts()
            self._counts_cache = (time.monotonic(), counts)
        return counts

    def status(self) -> dict[str, Any]:
        """The /api/status body."""
        p = self.pipeline.status()
        counts = self._counts()
        try:
            free = shutil.disk_usage(self.config.device.data_dir).free
        except OSError:
            free = None
        self.telemetry.unsynced.set(counts.get("unsynced", 0))
        if free is not None:
            self.telemetry.disk_free.set(free)
        last = self.pipeline.last_error
        out = {
            "version": __version__,
            "device_id": self.store.device_id,
            **p,
            "models": [{"name": n, "sha256": h} for n, h in self.ensemble.hashes.items()],
            "disk_free_bytes": free,
            "disk_full": self.store.refresh_disk_state(),
            "storage": self.store.storage_state()["state"],
            "records_total": counts.get("records_total", 0),
            "unsynced": counts.get("unsynced", 0),
            "last_error": f"{last['at']} {last['source']}: {last['message']}" if last else None,
            "sync": self.sync_worker.status() if self.sync_worker is not None else {"enabled": False},
            "model_update": self.model_update_status(),
            "model_signatures": {
                "ok": not self.signature_problems,
                "allow_unsigned": self.config.models.allow_unsigned,
                "problems": self.signature_problems,
            },
            "disclaimer": DISCLAIMER,
        }
        return out

    def ensemble_info(self) -> list[dict[str, Any]]:
        out = []
        for m, d in zip(self.ensemble.models, self.bundle_dirs, strict=True):
            man = m.manifest
            out.append(
                {
                    "name": man.name,
                    "path": str(Path(d).resolve()),
                    "architecture": man.architecture,
                    "quantization": man.quantization,
                    "sha256": man.sha256,
                    "hash_state": "ok (checked at start)",
                    "labels": [
                        {"id": lb.id, "display": lb.display, "malignant": lb.malignant} for lb in man.labels
                    ],
                    "input": {
                        "width": man.input.width,
                        "height": man.input.height,
                        "resize": man.input.resize,
                    },
                    "temperature": man.temperature,
                    "abstain_threshold": man.abstain_threshold,
                    "has_cam": m.has_cam,
                    "card_path": str(m.bundle.card_path) if m.bundle.card_path.is_file() else None,
                    "runtime": m.runtime,
                    "threads": m.num_threads,
                }
            )
        return out
