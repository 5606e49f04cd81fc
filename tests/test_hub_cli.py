"""`smearscope-hub`: devices/users add print a token once and store only its hash; serve runs the hub."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from hubkit import hub_db, pg_server  # noqa: F401 - fixtures
from sqlalchemy import create_engine, text

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
        stdout=subprocess.PIPE,
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
    raise AssertionError(f"hub did not start: {proc.stdout.read().decode()[-2000:]}")


def _get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_serve(hub_db, capsys):  # noqa: F811
    """SQLite: one waitress process; PostgreSQL: two gunicorn workers sharing the database."""
    workers = "1" if hub_db.startswith("sqlite") else "2"
    assert main(["users", "add", "reader", "--db", hub_db]) == 0
    token = capsys.readouterr().out.strip()
    proc, url = _serve(hub_db, "--workers", workers)
    try:
        for _ in range(6):  # spread over the workers
            assert _get(url + "/api/v1/stats", token) == {"results": 0, "images": 0, "devices": 0}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
