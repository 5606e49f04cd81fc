"""`smearscope-hub`: devices/users add print a token once and store only its hash; serve runs the hub."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from hubkit import fill_store, hub_db, pg_server  # noqa: F401 - fixtures
from sqlalchemy import create_engine, text

from device.store import Store
from device.sync import HubClient, Outbox, Syncer
from hub.cli import main
from hub.db import normalize_url
from hub.pgcluster import free_port


def test_add_prints_token_once_and_stores_hash(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    assert main(["devices", "add", "scope-1", "--db", db]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40
    assert main(["users", "add", "alice", "--db", db]) == 0
    user_token = capsys.readouterr().out.strip()
    assert main(["devices", "add", "scope-1", "--db", db]) == 1
    assert "already exists" in capsys.readouterr().err
    engine = create_engine(normalize_url(db))
    with engine.connect() as conn:
        dump = "\n".join(
            str(row) for t in ("devices", "users") for row in conn.execute(text(f"SELECT * FROM {t}"))
        )
    assert token not in dump and user_token not in dump
    assert main(["devices", "list", "--db", db]) == 0
    assert "scope-1" in capsys.readouterr().out


def test_revoke_and_rotate(tmp_path, capsys):
    from hub.app import create_app

    db = f"sqlite:///{tmp_path / 'hub.db'}"
    assert main(["devices", "add", "scope-1", "--db", db]) == 0
    old = capsys.readouterr().out.strip()
    app = create_app(db)
    ping = lambda tok: app.test_client().get("/api/v1/ping", headers={"Authorization": f"Bearer {tok}"})  # noqa: E731
    assert ping(old).status_code == 200
    assert main(["devices", "revoke", "scope-1", "--db", db]) == 0
    assert ping(old).status_code == 401
    assert main(["devices", "token", "scope-1", "--db", db]) == 0
    new = capsys.readouterr().out.strip()
    assert ping(new).status_code == 200 and ping(old).status_code == 401
    assert main(["users", "revoke", "nobody", "--db", db]) == 1


def _serve(db: str, *extra: str):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "serve",
            "--db",
            db,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        env=env,
        stdout=(log := tempfile.TemporaryFile()),  # noqa: SIM115 - lives as long as the server
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    log.seek(0)
    raise AssertionError(f"hub did not start: {log.read().decode()[-2000:]}")


def _get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_serve(hub_db, capsys, tmp_path):  # noqa: F811
    """SQLite: one waitress process; PostgreSQL: two gunicorn workers sharing the database (stateless)."""
    workers = "1" if hub_db.startswith("sqlite") else "2"
    assert main(["users", "add", "reader", "--db", hub_db]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["devices", "add", "scope-1", "--db", hub_db]) == 0
    device_token = capsys.readouterr().out.strip()
    store = Store(tmp_path / "dev", reserve_bytes=0)
    fill_store(store, 25)
    proc, url = _serve(hub_db, "--workers", workers)
    try:
        assert _get(url + "/api/v1/stats", token) == {"results": 0, "images": 0, "devices": 1}
        summary = Syncer(Outbox(store), HubClient(url, device_token), batch_size=4).run()
        assert summary.sent == 25 and summary.images_sent == 25
        for _ in range(4):  # whichever worker answers sees the same database
            assert _get(url + "/api/v1/stats", token) == {"results": 25, "images": 25, "devices": 1}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
