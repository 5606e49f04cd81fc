"""Run the hub under gunicorn (several worker processes on one PostgreSQL) without a config file."""

from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication

from hub.app import HubSettings, create_app
from hub.metrics import MULTIPROC_ENV, remove_multiprocess_dir, use_multiprocess_dir, worker_exited
from hub.slowclient import BodyDeadline


class _HubApplication(BaseApplication):
    def __init__(self, url: str, settings: HubSettings, options: dict) -> None:
        self.url, self.settings, self.options = url, settings, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):  # noqa: ANN201 - each worker builds its own app and connection pool after fork
        app = create_app(self.url, settings=self.settings, migrate=False)
        # gthread reads bodies in the worker thread: a stalled upload must not hold it for good
        return BodyDeadline(app, self.settings.body_timeout_s)


def run_gunicorn(
    url: str, settings: HubSettings, *, host: str, port: int, workers: int, threads: int
) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": None,
        "child_exit": worker_exited,
    }
    # every worker counts into files here; a scrape of any worker sums them (hub/metrics.py)
    given = os.environ.get(MULTIPROC_ENV)
    folder = use_multiprocess_dir()
    try:
        _HubApplication(url, settings, options).run()
    finally:
        if not given:
            remove_multiprocess_dir(folder)
