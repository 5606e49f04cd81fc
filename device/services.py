"""`Services`: what `smearscope run` builds once and hands to the web app and the sync worker
(DEVELOPERS.md Contract 4): config, store, live view, upload classification, field capture, status."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common.wording import DISCLAIMER
from device import __version__
from device.camera import FrameSource, declared_scale, open_source
from device.camera.profiled import ProfiledSource
from device.camera.profiles import Profile, ProfileError, ProfileStore
from device.config import Config
from device.errors import BundleError, SmearscopeError
from device.models.ensemble import Ensemble, Prediction, heatmap_overlay
from device.models.signing import signature_key_id
from device.optics.analyse import AcquisitionSettings, FieldAnalysis, FieldClassifier, ScaleArg
from device.optics.field import RULE
from device.optics.jobs import CalibrationJobs
from device.paths import default_bundle_dirs
from device.pipeline.live import LiveFrame, LiveView, encode_jpeg
from device.pipeline.pipeline import Classified, Gated, Pipeline, StoreJob
from device.pipeline.settle import thumbnail
from device.quality import QualityThresholds, assess
from device.reason_categories import abstention_category, refusal_category
from device.screening.screen import CELLS, CellScreen, ensemble_kind
from device.screening.second import FieldReader, load_reader
from device.screening.stages import COUNTED, REFUSED, FieldCells, ScreenSettings
from device.screening.writer import Origin, write_field
from device.store import DiskFullError, Store, StoreError, utc_now
from device.telemetry import ModelInfo, Telemetry

log = logging.getLogger(__name__)
MAX_CAPTURE_AGE_S = 5.0  # a captured field must be what the technician sees now


def model_dirs(config: Config) -> list[Path]:
    dirs = [Path(d) for d in config.classifier.models] or default_bundle_dirs()
    if not dirs:
        raise BundleError(
            "no model bundles: install one in models/ (smearscope models install) or set [classifier] models"
        )
    return dirs


def load_ensemble(config: Config, dirs: list[Path], threads: int | None = None) -> Ensemble:
    """Verified bundles (hash, tensors vs manifest) as one ensemble; a bad one, or a mix of cell and
    field bundles, raises BundleError."""
    ensemble = Ensemble.configured(dirs, config.classifier, threads)
    ensemble_kind(ensemble)
    return ensemble


def check_signatures(config: Config, dirs: list[Path]) -> list[str]:
    """Refuse (BundleError) a bundle that is unsigned, signed by a key not in `[models] trusted_keys`
    or changed after signing; with `allow_unsigned` return the problems instead (shown in red)."""
    from device.models.signing import SignaturePolicy

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
        profiles: ProfileStore | None = None,
        reader: FieldReader | None = None,
    ):
        self.config = config
        self.profiles = profiles or ProfileStore.from_config(config)
        self.camera_source: ProfiledSource | None = None  # the running camera, profile applied
        self.calibration = CalibrationJobs(self)
        self._load_models(ensemble, reader)
        self._reload_lock = threading.Lock()
        self.store = store or Store.from_config(config)
        self.store.set_labels({lb.id: lb.malignant for lb in self.ensemble.labels})
        self.store.acquisition_defaults = self._acquisition_defaults
        raw_factory = source_factory or (lambda: open_source(config.camera, pace=pace))
        # only the configured source states its frames' scale (a caller's own source does not)
        self._declared_scale = declared_scale(config.camera) if source_factory is None else None

        def profiled_source() -> FrameSource:
            self.camera_source = ProfiledSource(raw_factory(), self.profiles)
            return self.camera_source

        self.telemetry = telemetry or Telemetry()
        self._publish_model_info()
        self.live = LiveView()
        self.pipeline = Pipeline(
            config,
            self.store,
            self.ensemble,
            telemetry=self.telemetry,
            live=self.live,
            source_factory=profiled_source,
            pace=pace,
            notify_watchdog=notify_watchdog,
            profile=self._frame_scale,
            reader=self.reader,
        )
        self.sync_worker = None
        if sync and config.sync.enabled:
            from device.sync.worker import SyncWorker

            self.sync_worker = SyncWorker(config, self.store, on_models_installed=self.reload_models)
        self._upload_ensemble: Ensemble | None = None
        self._upload_fields: FieldClassifier | None = None
        self._upload_screen: CellScreen | None = None
        self._upload_lock = threading.Lock()
        self._counts_cache: tuple[float, dict[str, int]] = (0.0, {})
        self.started = False

    def _load_models(self, ensemble: Ensemble | None, reader: FieldReader | None) -> None:
        """The configured ensemble, verified, and its second reader. A caller handing in an ensemble
        has verified it and hands in its reader too (tests, benchmarks)."""
        config = self.config
        self.bundle_dirs = [Path(m.bundle.path) for m in ensemble.models] if ensemble else model_dirs(config)
        self.signature_problems: list[str] = []
        if ensemble is None:
            self.signature_problems = check_signatures(config, self.bundle_dirs)
        self.ensemble = ensemble or load_ensemble(config, self.bundle_dirs)
        if reader is None and ensemble is None and ensemble_kind(self.ensemble) == CELLS:
            reader = load_reader(config, self.bundle_dirs)
        self.reader = reader

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

    # -- calibration profiles (device/camera/profiles.py) ---------------------------------------

    def active_profile(self) -> Profile | None:
        """The station's active calibration profile (µm/px, white gains), None when there is none.
        A profiles file broken by hand keeps the last good one in force (the error is on the status)."""
        try:
            return self.profiles.active()
        except ProfileError:
            return self.profiles.last_active()

    def set_active_profile(self, name: str, user: str | None = None) -> Profile:
        p = self.profiles.activate(name)
        self.store.add_event(
            "info", "calibration", f"{user or 'command line'} switched to profile {p.name}: {p.summary()}"
        )
        return p

    def _acquisition_defaults(self) -> dict[str, Any]:
        p = self.active_profile()
        return {"um_per_px": p.um_per_px if p else None, "profile": p.name if p else None}

    def calibration_status(self) -> dict[str, Any]:
        p = self.active_profile()
        src = self.camera_source
        return {
            "profile": p.name if p else None,
            "um_per_px": p.um_per_px if p else None,
            "method": p.method if p else None,
            "white_gains": p.white_gains if p else None,
            "controls_applied": dict(src.applied) if src else {},
            "controls_ignored": list(src.ignored) if src else [],
            "profiles_file": str(self.profiles.path),
            "error": self.profiles.error,
        }

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
        if latest and latest[1].get("state") == "no_cells":
            raise SmearscopeError("no white cells in view: nothing to capture in this field")
        if c is None:
            raise SmearscopeError("no classified field yet: is the camera running and the field in focus?")
        if latest and latest[1].get("field") is not None and latest[1].get("field") != c.live.get("field"):
            raise SmearscopeError("the field changed since it was classified: wait for its result")
        field_no = c.live.get("field")
        if field_no is not None and self.pipeline.captured.get(sample_id) == field_no:
            raise SmearscopeError("this field is already captured: move to the next field")
        # a static field is classified once and then seen unchanged: its age is since it was last seen
        seen_ns = max(c.gated.frame.t_ns, self.pipeline.last_seen_ns)
        age_s = (time.monotonic_ns() - seen_ns) / 1e9
        if self.pipeline.camera.get("state") != "running" or age_s > MAX_CAPTURE_AGE_S:
            raise SmearscopeError(
                f"the camera is {self.pipeline.camera.get('state')} and the last classified field is "
                f"{age_s:.0f} s old: not stored. Check the camera (status page) and try again"
            )
        job = StoreJob(c, source="camera", sample_id=sample_id, require_image=True)
        try:
            rec = self.pipeline.write(job)  # DiskFullError (nothing stored) when the image cannot be kept
        except DiskFullError:
            self.telemetry.refused("disk_full", "upload")
            raise
        if field_no is not None:
            self.pipeline.field_captured(sample_id, field_no)
        self._wake_sync()
        return rec

    def _profile(self):
        """The active calibration profile, or None (the pipeline's view of `active_profile`)."""
        return self.active_profile()

    def _frame_scale(self):
        """The camera frames' scale for the pipeline: the active calibration profile; for a cell
        ensemble without one, the replay source's declared scale (a cell's crop is a fixed physical
        size, so its frames need a scale; the field path keeps its uncalibrated centre crop)."""
        prof = self.active_profile()
        if prof is None and self.pipeline.screen is not None:
            return self._declared_scale
        return prof

    def scale_info(self) -> dict[str, Any]:
        """The active profile and the models' µm/px (the upload page's scale choice shows them)."""
        prof = self._profile()
        return {
            "profile": getattr(prof, "name", None),
            "profile_um_per_px": getattr(prof, "um_per_px", None),
            "models_um_per_px": self.pipeline.fields.spec.um_per_px,
            "scale_known": self.pipeline.fields.scale_known,
        }

    def _uploader(self) -> FieldClassifier | CellScreen:
        """A second interpreter per model for uploads, so they never wait for the live classifier: the
        cell path for a cell ensemble, else the field path."""
        if self._upload_ensemble is None:
            self._set_uploader(load_ensemble(self.config, self.bundle_dirs, threads=1))
        if self._upload_screen is not None:
            return self._upload_screen
        assert self._upload_fields is not None
        return self._upload_fields

    def _set_uploader(self, ensemble: Ensemble) -> None:
        self._upload_ensemble = ensemble
        self._upload_fields = FieldClassifier(ensemble, AcquisitionSettings.from_config(self.config))
        self._upload_screen = (
            CellScreen(ensemble, ScreenSettings.from_config(self.config), reader=self._upload_reader())
            if ensemble_kind(ensemble) == CELLS
            else None
        )

    def _upload_reader(self) -> FieldReader | None:
        """A second reader of its own for uploads (its own interpreters, one thread)."""
        return self.reader.copy(threads=1) if self.reader is not None else None

    def classify_upload(
        self,
        rgb: np.ndarray,
        *,
        filename: str | None = None,
        sample_id: str | None = None,
        user: str | None = None,
        um_per_px: ScaleArg | str = "profile",
    ) -> dict[str, Any]:
        """Classify an uploaded image and store it (record JSON). A frame failing the quality gate is
        still classified but marked uncertain, with the reason.

        `um_per_px`: "profile" (default: the station's own images, at the active profile's scale;
        without one: assumed at the models' scale), "auto" (estimated from the red cells: images from
        elsewhere), a number (the image's µm/px), or None (assumed at the models' scale)."""
        if sample_id and self.store.get_sample(sample_id) is None:
            raise StoreError(f"no sample {sample_id}")
        q = assess(rgb, QualityThresholds.from_config(self.config.quality))
        profile = None
        scale: ScaleArg = um_per_px
        source = "given"
        if um_per_px == "profile":
            prof = self._profile()
            profile = getattr(prof, "name", None)
            scale = float(prof.um_per_px) if prof is not None and getattr(prof, "um_per_px", None) else None
            source = f"profile:{profile}"
        with self._upload_lock:
            path = self._uploader()
            if isinstance(path, CellScreen):
                result = path.screen(rgb, scale, source=source)
                models = [{"name": n, "sha256": h} for n, h in path.ensemble.hashes.items()]
            else:
                analysis = path.analyse(rgb, scale, with_cam=self.config.classifier.heatmap, source=source)
        if isinstance(path, CellScreen):
            return self._store_upload_cells(result, q, models, sample_id, filename, profile)
        pred = analysis.prediction
        if not q.ok and not pred.abstained:
            pred.abstained = True
            pred.reason = "image quality: " + ", ".join(q.reasons)
        if analysis.field.state in ("no_cells", "refused") and not pred.reason:
            pred.reason = analysis.field.display
        self._count_upload(analysis, pred)
        frame = LiveFrame(rgb, utc_now(), time.monotonic_ns())
        base = analysis.heat_base if analysis.heat_base is not None else rgb
        gated = Gated(0, frame, base, thumbnail(rgb), q, analysis.prepared, profile)
        name = filename[:255] if filename else None
        c = Classified(gated, pred, {}, analysis)
        job = StoreJob(c, source="upload", sample_id=sample_id, filename=name, require_image=True)
        try:
            rec = self.pipeline.write(job)  # DiskFullError (nothing stored) when the image cannot be kept
        except DiskFullError:
            self.telemetry.refused("disk_full", "upload")
            raise
        self._wake_sync()
        return {**rec, "field": analysis.to_dict(outlines=True)}

    def _store_upload_cells(
        self,
        result: FieldCells,
        q,
        models: list[dict[str, str]],
        sample_id: str | None,
        filename: str | None,
        profile: str | None,
    ) -> dict[str, Any]:
        """An upload screened by the cell path, stored through the one writer. A frame failing the
        quality gate keeps its cells but the record abstains, with the reason."""
        if not q.ok and not result.abstained:
            result = dataclasses.replace(
                result, abstained=True, reason="image quality: " + ", ".join(q.reasons)
            )
        state = result.state
        if state == REFUSED:
            self.telemetry.refused(result.prepared.refusal_category, "upload")
        elif state == COUNTED and result.abstained:
            state = "uncertain"
            self.telemetry.abstained(abstention_category(result.reason), "upload")
        self.telemetry.field_outcome("classified" if state == COUNTED else state, "upload")
        origin = Origin(
            "upload",
            utc_now(),
            time.monotonic_ns(),
            q.to_dict(),
            sample_id,
            filename[:255] if filename else None,
            profile,
            require_image=True,
        )
        try:
            rec = write_field(
                self.store, result, origin, models, jpeg_quality=self.config.store.jpeg_quality
            ).record
        except DiskFullError:
            self.telemetry.refused("disk_full", "upload")
            raise
        self.telemetry.records_stored.labels("upload").inc()
        self._wake_sync()
        return {**rec, "field": result.to_dict()}

    def _count_upload(self, analysis: FieldAnalysis, pred: Prediction) -> None:
        """Metrics for one classified upload: its field's outcome, and why it abstained or got no call
        (an upload failing the quality gate is classified and marked uncertain: an abstention)."""
        state = analysis.field.state
        if state == "refused":
            self.telemetry.refused(refusal_category(analysis.prepared), "upload")
        elif state != "no_cells" and pred.abstained:
            state = "uncertain"
            self.telemetry.abstained(abstention_category(pred.reason), "upload")
        self.telemetry.field_outcome(state, "upload")

    def _model_infos(self) -> list[ModelInfo]:
        return [
            ModelInfo(m.manifest.name, m.manifest.sha256, signature_key_id(Path(m.bundle.path)))
            for m in self.ensemble.models
        ]

    def _publish_model_info(self) -> None:
        try:
            self.telemetry.set_models(self._model_infos())
        except Exception:  # noqa: BLE001 - a metric must never stop the models from loading
            log.exception("cannot publish the model info metric")
        self.telemetry.signatures_ok.set(0 if self.signature_problems else 1)

    def reload_models(self) -> dict[str, Any]:
        """Load the configured bundles again (after `models install`/an update) and swap them in
        between two frames. The new ensemble is verified (signature, hash, tensors) before the swap;
        on any error the current one keeps serving and BundleError is raised."""
        with self._reload_lock:
            dirs = model_dirs(self.config)
            problems = check_signatures(self.config, dirs)
            ensemble = load_ensemble(self.config, dirs)
            uploader = load_ensemble(self.config, dirs, threads=1)
            reader = load_reader(self.config, dirs) if ensemble_kind(ensemble) == CELLS else None
            self.reader = self.pipeline.reader = reader
            self.pipeline.swap_ensemble(ensemble)
            with self._upload_lock:
                self._set_uploader(uploader)
            self.ensemble, self.bundle_dirs, self.signature_problems = ensemble, dirs, problems
            self.store.set_labels({lb.id: lb.malignant for lb in ensemble.labels})
            self._publish_model_info()
        self.store.add_event("info", "models", f"models reloaded: {', '.join(ensemble.names)}")
        return {"models": [{"name": n, "sha256": h} for n, h in ensemble.hashes.items()]}

    def model_update_status(self) -> dict[str, Any] | None:
        """The hub's model update as the station sees it (None without sync)."""
        updater = getattr(self.sync_worker, "updater", None)
        return updater.status() if updater is not None else None

    def accept_model_update(self, *, allow_downgrade: bool = False) -> dict[str, Any]:
        """An admin accepts the staged bundle set (`[models] update_policy = "manual"`; an older set
        than what runs only with `allow_downgrade`)."""
        if self.sync_worker is None or self.sync_worker.updater is None:
            raise SmearscopeError("model updates come through the hub sync, which is not enabled")
        return self.sync_worker.accept_models(allow_downgrade=allow_downgrade)

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
            "calibration": self.calibration_status(),
            "model_update": self.model_update_status(),
            "model_signatures": {
                "ok": not self.signature_problems,
                "allow_unsigned": self.config.models.allow_unsigned,
                "problems": self.signature_problems,
            },
            "scale": self.pipeline.scale_status,
            "tiling": {"settle_frames": self.pipeline.settle.settle_frames, "rule": RULE},
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
                        "um_per_px": getattr(man.input, "um_per_px", None),
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
