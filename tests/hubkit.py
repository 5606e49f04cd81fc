"""Shared pieces of the hub and sync tests: database fixtures (SQLite and a throwaway PostgreSQL),
a real hub server on loopback, and a device store with N records and their images."""

from __future__ import annotations

import atexit
import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from hub import tokens
from hub.app import HubSettings, create_app

PG_ENV = "SMEARSCOPE_TEST_PG_URL"


_cluster: Any = None
_cluster_error: str | None = None


def _shared_cluster() -> Any:
    """One throwaway cluster per test process, however many modules import the fixture."""
    global _cluster, _cluster_error
    if _cluster is None and _cluster_error is None:
        from hub.pgcluster import PostgresUnavailable, TempPostgres

        try:
            _cluster = TempPostgres().start()
            atexit.register(_cluster.stop)
        except PostgresUnavailable as exc:
            _cluster_error = str(exc)
    if _cluster_error is not None:
        pytest.skip(f"PostgreSQL unavailable: {_cluster_error}")
    return _cluster


@pytest.fixture(scope="session")
def pg_server(request):
    """A PostgreSQL server: $SMEARSCOPE_TEST_PG_URL, else a throwaway cluster (initdb + pg_ctl).

    The cluster is stopped and deleted when the session ends, inside the test run: an xdist worker's
    atexit hooks get 10 s before the controller kills the worker, too short for stopping the server and
    deleting its folder on a loaded machine (the atexit hook stays, for a run stopped early)."""
    if os.environ.get(PG_ENV):
        return None
    cluster = _shared_cluster()
    request.addfinalizer(cluster.stop)
    return cluster


def _fresh_pg_database(pg: Any) -> str:
    if pg is not None:
        return pg.create_database()
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(os.environ[PG_ENV])
    name = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_db(request, tmp_path: Path) -> str:
    """A fresh, empty hub database URL: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return _fresh_pg_database(request.getfixturevalue("pg_server"))


class Hub:
    """A hub app with one device and one user registered."""

    def __init__(self, url: str, settings: HubSettings | None = None):
        self.app = create_app(url, settings=settings)
        sessions = self.app.extensions["hub"]["sessions"]
        with sessions() as s:
            self.device_token = tokens.add_device(s, "scope-1")
            self.user_token = tokens.add_user(s, "reader")
        self.sessions = sessions

    def client(self):  # noqa: ANN201
        return self.app.test_client()

    def dev(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.device_token}"}

    def usr(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user_token}"}

    def stats(self) -> dict[str, int]:
        return self.client().get("/api/v1/stats", headers=self.usr()).get_json()

    def result_ids(self) -> list[str]:
        from sqlalchemy import select

        from hub.models import Result

        with self.sessions() as s:
            return list(s.scalars(select(Result.id)))

    def images(self) -> dict[str, bytes]:
        from sqlalchemy import select

        from hub.models import Image

        with self.sessions() as s:
            return {sha: bytes(data) for sha, data in s.execute(select(Image.sha256, Image.data))}


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class Server:
    """A real HTTP server on 127.0.0.1 (werkzeug, threaded: one connection per request)."""

    def __init__(self, app, port: int = 0, ssl_context: Any = None):  # noqa: ANN001
        self.httpd = make_server(
            "127.0.0.1", port, app, threaded=True, ssl_context=ssl_context, request_handler=_QuietHandler
        )
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def jpeg(rng: np.random.Generator, size: int = 32) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def fill_store(store, n: int, *, seed: int = 0, abstain_every: int = 0, size: int = 32) -> list[str]:  # noqa: ANN001
    """N classification records in one sample, each with its own JPEG. Returns the record ids."""
    rng = np.random.default_rng(seed)
    sample = store.open_sample(f"slide-{seed}")
    ids = []
    for i in range(n):
        sha = store.put_image(jpeg(rng, size))
        abstained = bool(abstain_every and i % abstain_every == 0)
        rec = store.add_result(
            {
                "sample_id": sample["id"],
                "source": "camera",
                "models": [{"name": "tiny", "sha256": "0" * 64}],
                "probabilities": {"Benign": 0.1, "Pre": 0.9},
                "label": "Pre",
                "confidence": 0.9 if not abstained else 0.45,
                "abstained": abstained,
                "reason": "low confidence" if abstained else None,
                "quality": {"ok": True, "focus": 100.0, "reasons": []},
                "image_sha256": sha,
            }
        )
        ids.append(rec["id"])
    return ids


def check_images(hub: Hub, store) -> None:  # noqa: ANN001
    """Every image (and heatmap) the synced records name is on the hub, with bytes matching its hash."""
    images = hub.images()
    for sha, data in images.items():
        assert hashlib.sha256(data).hexdigest() == sha
    rows = store.conn.execute("SELECT image_sha256, heatmap_sha256 FROM results WHERE sync_state = 'synced'")
    wanted = {sha for row in rows for sha in row if sha}
    assert wanted <= set(images)
