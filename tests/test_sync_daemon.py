"""`smearscope run` with [sync] enabled pushes what it classifies to a hub while it runs; whatever is
left when it stops goes with `smearscope sync --once`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hubkit import Hub, Server, check_images
from make_tiny_bundle import SIGNED_TINY  # noqa: E402

from device.store import Store
from hub.pgcluster import free_port

TINY = SIGNED_TINY


@pytest.mark.skipif(not (TINY / "manifest.json").is_file(), reason="tests/data/tiny-bundle missing")
def test_daemon_syncs_while_classifying(tmp_path, monkeypatch, capsys):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    server = Server(hub.app)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[device]\ndata_dir = "{tmp_path / "dev"}"\n'
        f'[classifier]\nmodels = ["{TINY}"]\nthreads = 1\n'
        "[store]\nevery_s = 0.3\nreserve_mb = 0\n"
        f'[sync]\nenabled = true\nhub_url = "{server.url}"\ninterval_s = 0.5\nbatch_size = 3\n'
    )
    env = {**os.environ, "SMEARSCOPE_SYNC_TOKEN": hub.device_token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "run", "--config", str(cfg), "--port", str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 90
        while hub.stats()["results"] < 4 and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert hub.stats()["results"] >= 4, "the daemon's sync worker pushed nothing"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    from device.cli import main

    monkeypatch.setenv("SMEARSCOPE_SYNC_TOKEN", hub.device_token)
    try:
        assert main(["sync", "--once", "--config", str(cfg)]) == 0
    finally:
        server.close()
    assert json.loads(capsys.readouterr().out)["pending"] == 0
    store = Store(tmp_path / "dev", reserve_bytes=0)
    ids = [r[0] for r in store.conn.execute("SELECT id FROM results")]
    assert sorted(hub.result_ids()) == sorted(ids)
    check_images(hub, store)
