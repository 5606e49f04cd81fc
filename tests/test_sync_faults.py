"""Exactly once, whatever the network does: a fault-injecting proxy between device and hub, and
`kill -9` of the sync process mid-batch. Runs against a SQLite and a PostgreSQL hub."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from faultproxy import FaultProxy
from hubkit import Hub, Server, check_images, fill_store, hub_db, pg_server  # noqa: F401 - fixtures

from device.store import Store
from device.sync import HubClient, HubError, Outbox, Syncer

FAULTS = {
    "drop": 0.05,
    "reset": 0.05,
    "delay": 0.08,
    "http500": 0.05,
    "http500_after": 0.05,
    "reset_after": 0.05,
}


def test_random_faults_every_record_arrives_exactly_once(tmp_path, hub_db):  # noqa: F811
    n = 60
    hub = Hub(hub_db)
    store = Store(tmp_path / "dev", reserve_bytes=0)
    ids = fill_store(store, n)
    server = Server(hub.app)
    proxy = FaultProxy(server.port, seed=5, delay_s=(0.01, 0.1), **FAULTS)
    outbox = Outbox(store)
    failures = attempts = 0
    try:
        while outbox.counts()["pending"] and attempts < 400:
            attempts += 1
            client = HubClient(proxy.url, hub.device_token, timeout_s=5)
            try:
                Syncer(outbox, client, batch_size=8).run()
            except HubError:
                failures += 1
            finally:
                client.close()
    finally:
        proxy.close()
        server.close()
    assert outbox.counts() == {"pending": 0, "sending": 0, "synced": n, "rejected": 0}
    got = hub.result_ids()
    assert len(got) == n and sorted(got) == sorted(ids)  # nothing lost, nothing twice
    check_images(hub, store)
    assert failures > 0
    for fate in FAULTS:
        assert proxy.stats[fate] > 0, f"the proxy never injected {fate}: {dict(proxy.stats)}"


def test_kill_9_mid_batch_still_exactly_n(tmp_path, hub_db):  # noqa: F811
    n = 40
    hub = Hub(hub_db)
    store = Store(tmp_path / "dev", reserve_bytes=0)
    ids = fill_store(store, n)
    store.close()
    server = Server(hub.app)
    proxy = FaultProxy(server.port, seed=3, delay=1.0, delay_s=(0.01, 0.06))  # slow link: kills land mid-run
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[device]\ndata_dir = "{tmp_path / "dev"}"\n[store]\nreserve_mb = 0\n'
        f'[sync]\nhub_url = "{proxy.url}"\nbatch_size = 5\ntimeout_s = 10\n'
    )
    env = {**os.environ, "SMEARSCOPE_SYNC_TOKEN": hub.device_token}
    cmd = [sys.executable, "-m", "device.cli", "sync", "--once", "--config", str(cfg)]
    rng = random.Random(7)
    kills = 0
    seen_sending = 0
    try:
        for _ in range(12):
            before = hub.stats()["results"]
            if before == n:
                break
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while proc.poll() is None and hub.stats()["results"] == before and time.monotonic() < deadline:
                time.sleep(0.02)  # wait until this run has delivered something: now it is mid-stream
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(30)
            check = Store(tmp_path / "dev", reserve_bytes=0)
            seen_sending += Outbox(check).counts()["sending"]
            check.close()
            if kills >= 5:
                break
        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        proxy.close()
        server.close()
    assert kills >= 3
    assert final.returncode == 0, final.stderr[-2000:]
    got = hub.result_ids()
    assert len(got) == n and sorted(got) == sorted(ids)
    store = Store(tmp_path / "dev", reserve_bytes=0)
    assert Outbox(store).counts() == {"pending": 0, "sending": 0, "synced": n, "rejected": 0}
    check_images(hub, store)
    assert seen_sending > 0  # some kills did leave a batch in flight, and it was recovered
