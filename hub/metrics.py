"""Prometheus metrics of the hub, served at `/metrics` to a registered hub user's bearer token.

One process (waitress): the app's own CollectorRegistry with the process, platform and GC
collectors. Several gunicorn workers: each worker counts into files under
`$PROMETHEUS_MULTIPROC_DIR` (`use_multiprocess_dir`, called by `smearscope-hub serve` before the
workers fork) and a scrape, whichever worker answers it, sums them (prometheus_client's
multiprocess mode). That mode has no per-process collectors, so `process_*` is absent there.
The fleet figures (devices, last contact) are read from the database at each scrape, so every worker
reports the same.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine, select

from common.build import build_commit

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ANSWERS = ("accepted", "duplicate", "deferred", "rejected")

metrics_bp = Blueprint("metrics", __name__)


def use_multiprocess_dir(path: str | None = None) -> str:
    """Switch this process (and the workers it forks) to multiprocess metrics in an empty folder:
    `path`, else `$PROMETHEUS_MULTIPROC_DIR`, else a new temporary one. Returns the folder."""
    folder = path or os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="smearscope-hub-metrics-")
    os.makedirs(folder, exist_ok=True)
    for stale in Path(folder).glob("*.db"):  # counts of an earlier run must not add up with these
        stale.unlink()
    os.environ[MULTIPROC_ENV] = folder
    # prometheus_client picks its value storage when it is imported; it is imported already here
    values.ValueClass = values.get_value_class()
    return folder


def worker_exited(_server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: drop a dead worker's live gauges (its counters still add up)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(worker.pid)


def remove_multiprocess_dir(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _version() -> str:
    try:
        return metadata.version("smearscope")
    except metadata.PackageNotFoundError:
        return "unknown"


class FleetCollector:
    """Devices by state and each device's seconds since its last contact, read at scrape time."""

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        if self.engine is None:
            return
        from hub.models import Device

        with self.engine.connect() as conn:
            rows = conn.execute(select(Device.name, Device.disabled, Device.last_seen_at)).all()
        states = GaugeMetricFamily("smearscope_hub_devices", "Registered devices by state", labels=["state"])
        states.add_metric(["active"], sum(1 for r in rows if not r.disabled))
        states.add_metric(["disabled"], sum(1 for r in rows if r.disabled))
        yield states
        # one series per registered device: the fleet's size bounds it (an admin registers devices)
        age = GaugeMetricFamily(
            "smearscope_hub_device_last_contact_seconds",
            "Seconds since an active device last reached the hub (absent: never)",
            labels=["device"],
        )
        now = datetime.now(UTC)
        for r in rows:
            if r.disabled or r.last_seen_at is None:
                continue
            seen = r.last_seen_at if r.last_seen_at.tzinfo else r.last_seen_at.replace(tzinfo=UTC)
            age.add_metric([r.name], max(0.0, (now - seen).total_seconds()))
        yield age


class HubMetrics:
    def __init__(self, engine: Engine | None = None, commit: str | None = None) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        # in multiprocess mode the values live in files; a scrape builds its registry from them
        own = None if self.multiprocess else self.registry
        self.fleet = FleetCollector(engine)
        if not self.multiprocess:
            ProcessCollector(registry=own)
            PlatformCollector(registry=own)
            GCCollector(registry=own)
            self.registry.register(self.fleet)
        self.build = Gauge(
            "smearscope_hub_build_info",
            "The hub's version and code",
            ["version", "commit", "python"],
            registry=own,
            multiprocess_mode="max",
        )
        self.build.labels(
            _version(), commit if commit is not None else build_commit(), platform.python_version()
        ).set(1)
        self.requests = Counter(
            "smearscope_hub_requests",
            "HTTP answers by route (Flask endpoint) and status code",
            ["endpoint", "code"],
            registry=own,
        )
        self.records = Counter(
            "smearscope_hub_records",
            "Records devices sent, by the hub's answer",
            ["answer"],
            registry=own,
        )
        for answer in ANSWERS:
            self.records.labels(answer)

    def scrape_registry(self) -> CollectorRegistry:
        if not self.multiprocess:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        PlatformCollector(registry=registry)
        registry.register(self.fleet)
        return registry

    def render(self) -> bytes:
        return generate_latest(self.scrape_registry())

    def count_records(self, counts: dict[str, int]) -> None:
        for answer in ANSWERS:
            if counts.get(answer):
                self.records.labels(answer).inc(counts[answer])

    def count_request(self, endpoint: str | None, code: int) -> None:
        self.requests.labels(endpoint or "unmatched", str(code)).inc()


def hub_metrics() -> HubMetrics:
    return current_app.extensions["hub"]["metrics"]


def init_metrics(app: Any, engine: Engine) -> HubMetrics:
    """Make the app's metrics and count every answer (after the route, errors included)."""
    m = HubMetrics(engine)
    app.extensions["hub"]["metrics"] = m

    @app.after_request
    def _count(resp):  # noqa: ANN001, ANN202
        rule = request.url_rule
        m.count_request(rule.endpoint if rule is not None else None, resp.status_code)
        return resp

    app.register_blueprint(metrics_bp)
    return m


@metrics_bp.get("/metrics")
def metrics() -> Response:
    from hub.api_common import requires

    @requires("user")
    def _scrape() -> Response:
        return Response(hub_metrics().render(), mimetype=CONTENT_TYPE)

    return _scrape()
