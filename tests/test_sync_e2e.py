"""Device → hub over real loopback servers (SQLite and PostgreSQL hubs): offline then back, quarantine,
deferred images, batch splitting, a pinned CA over HTTPS, an HTTP proxy, the background worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from faultproxy import FaultProxy
from hubkit import Hub, Server, check_images, fill_store, hub_db, pg_server  # noqa: F401 - fixtures

from device.commands.sync import register  # noqa: F401 - the command must import
from device.config import load_config
from device.store import Store
from device.sync import HubClient, HubRefused, HubUnreachable, Outbox, Syncer, SyncWorker
from hub.app import HubSettings
from hub.pgcluster import free_port


def _store(tmp_path, n, **kw):
    store = Store(tmp_path / "dev", reserve_bytes=0)
    return store, fill_store(store, n, **kw)


def test_offline_then_back_every_record_arrives_once(tmp_path, hub_db):  # noqa: F811
    hub = Hub(hub_db)
    store, ids = _store(tmp_path, 40)
    port = free_port()
    client = HubClient(f"http://127.0.0.1:{port}", hub.device_token, timeout_s=5)
    syncer = Syncer(Outbox(store), client, batch_size=15)
    with pytest.raises(HubUnreachable):
        syncer.run()
    assert Outbox(store).counts() == {"pending": 40, "sending": 0, "synced": 0, "rejected": 0}
    server = Server(hub.app, port=port)
    try:
        summary = syncer.run()
        assert summary.sent == 40 and summary.images_sent == 40 and summary.batches == 3
        assert summary.to_dict()["pending"] == 0
        assert sorted(hub.result_ids()) == sorted(ids)
        check_images(hub, store)
        again = syncer.run()
        assert again.sent == 0 and again.images_sent == 0
    finally:
        server.close()
    assert hub.stats() == {"results": 40, "images": 40, "devices": 1}


def test_sync_once_cli_quarantines_a_rejected_record(tmp_path, monkeypatch, capsys):
    from device.cli import main

    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store, ids = _store(tmp_path, 6)
    store.conn.execute("UPDATE results SET captured_at = 'last tuesday' WHERE seq = 3")
    bad = store.conn.execute("SELECT id FROM results WHERE seq = 3").fetchone()[0]
    store.close()
    server = Server(hub.app)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[device]\ndata_dir = "{tmp_path / "dev"}"\n[store]\nreserve_mb = 0\n[sync]\nbatch_size = 2\n'
    )
    monkeypatch.setenv("SMEARSCOPE_SYNC_TOKEN", hub.device_token)
    try:
        code = main(["sync", "--once", "--config", str(cfg), "--hub-url", server.url])
    finally:
        server.close()
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["sent"] == 5 and out["pending"] == 0 and out["rejected"] == 1
    assert out["rejected_recent"][0]["id"] == bad and "captured_at" in out["rejected_recent"][0]["reason"]
    assert sorted(hub.result_ids()) == sorted(set(ids) - {bad})


def test_sync_once_exit_status_when_hub_unreachable(tmp_path, monkeypatch, capsys):
    from device.cli import main

    _store(tmp_path, 2)[0].close()
    monkeypatch.setenv("SMEARSCOPE_SYNC_TOKEN", "x")
    code = main(
        [
            "sync",
            "--once",
            "--data-dir",
            str(tmp_path / "dev"),
            "--hub-url",
            f"http://127.0.0.1:{free_port()}",
            "--retries",
            "0",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["pending"] == 2 and out["sent"] == 0 and "unreachable" in out["error"]


def test_hub_lacking_an_image_defers_and_the_image_is_resent(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store, ids = _store(tmp_path, 4)
    store.conn.execute("UPDATE images SET synced = 1")  # the device believes the hub has them
    server = Server(hub.app)
    try:
        syncer = Syncer(Outbox(store), HubClient(server.url, hub.device_token), batch_size=10)
        first = syncer.run()
        assert first.deferred == 4 and first.sent == 0 and first.to_dict()["pending"] == 4
        second = syncer.run()
        assert second.sent == 4 and second.images_sent == 4
    finally:
        server.close()
    check_images(hub, store)


def test_batches_too_big_for_the_hub_are_split(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", HubSettings(max_batch=4))
    store, ids = _store(tmp_path, 13)
    server = Server(hub.app)
    try:
        summary = Syncer(Outbox(store), HubClient(server.url, hub.device_token), batch_size=13).run()
    finally:
        server.close()
    assert summary.sent == 13 and sorted(hub.result_ids()) == sorted(ids)


def test_missing_image_file_quarantines_only_its_record(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store, ids = _store(tmp_path, 3)
    lost = store.get_result(ids[1])["image_sha256"]
    store.image_path(lost).unlink()
    server = Server(hub.app)
    try:
        summary = Syncer(Outbox(store), HubClient(server.url, hub.device_token)).run()
    finally:
        server.close()
    assert summary.sent == 2 and summary.rejected_now == 1
    assert "cannot be read" in Outbox(store).rejected()[0]["reason"]


def test_works_through_an_http_proxy(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store, ids = _store(tmp_path, 3)
    server = Server(hub.app)
    proxy = FaultProxy(server.port)  # forwards untouched; the hub's name below does not even resolve
    try:
        client = HubClient("http://hub.invalid:8090", hub.device_token, proxy=proxy.url)
        summary = Syncer(Outbox(store), client).run()
    finally:
        proxy.close()
        server.close()
    assert summary.sent == 3 and proxy.stats["pass"] >= 3


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_https_with_a_pinned_clinic_ca(tmp_path):
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "hub.key", "hub.csr", "hub.pem"))
    ext = tmp_path / "ext.cnf"
    # What Python 3.13's strict verification (VERIFY_X509_STRICT) asks of a real CA and its certificates.
    ext.write_text(
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n"
    )
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, timeout=60)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=Clinic test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store, ids = _store(tmp_path, 2)
    server = Server(hub.app, ssl_context=(str(cert), str(key)))
    url = f"https://127.0.0.1:{server.port}"
    try:
        with pytest.raises(HubRefused, match="TLS"):
            Syncer(Outbox(store), HubClient(url, hub.device_token)).run()  # system CAs do not know it
        assert Outbox(store).counts()["pending"] == 2
        summary = Syncer(Outbox(store), HubClient(url, hub.device_token, ca_file=str(ca))).run()
    finally:
        server.close()
    assert summary.sent == 2


def test_worker_backs_off_then_drains_when_the_hub_returns(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store, ids = _store(tmp_path, 12)
    port = free_port()
    config = load_config(
        overrides={
            "sync": {
                "enabled": True,
                "hub_url": f"http://127.0.0.1:{port}",
                "token": hub.device_token,
                "interval_s": 0.2,
                "max_backoff_s": 0.5,
                "batch_size": 5,
                "timeout_s": 5,
            }
        },
        system_config=None,
    )
    worker = SyncWorker(config, store)
    worker.start()
    server = None
    try:
        _wait(lambda: worker.status()["state"] == "backoff")
        st = worker.status()
        assert st["last_error"] and st["pending"] == 12 and st["backoff"] > 0 and st["last_success"] is None
        server = Server(hub.app, port=port)
        worker.wake()
        _wait(lambda: worker.status()["pending"] == 0 and worker.status()["last_success"] is not None)
        st = worker.status()
        assert st["synced"] == 12 and st["last_success"] and st["rejected"] == 0
        # a new result is pushed on the next wake
        fill_store(store, 1, seed=9)
        worker.wake()
        _wait(lambda: worker.status()["pending"] == 0 and worker.status()["synced"] == 13)
    finally:
        worker.stop()
        if server:
            server.close()
    assert worker.status()["state"] == "stopped"
    assert len(hub.result_ids()) == 13


def test_disabled_worker_does_nothing(tmp_path):
    store, _ = _store(tmp_path, 1)
    worker = SyncWorker(load_config(system_config=None), store)
    worker.start()
    worker.stop()
    assert worker.status()["state"] == "disabled" and worker.status()["pending"] == 1


def _wait(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_a_bad_token_keeps_everything_pending(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store, _ = _store(tmp_path, 2)
    server = Server(hub.app)
    try:
        with pytest.raises(HubRefused, match="refused the token") as exc:
            Syncer(Outbox(store), HubClient(server.url, "stolen-or-typo")).run()
    finally:
        server.close()
    assert exc.value.status == 401
    assert Outbox(store).counts() == {"pending": 2, "sending": 0, "synced": 0, "rejected": 0}


def test_samples_reach_the_hub_with_slide_id_and_the_devices_call(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store, ids = _store(tmp_path, 4)
    sid = store.get_result(ids[0])["sample_id"]
    server = Server(hub.app)
    try:
        syncer = Syncer(Outbox(store), HubClient(server.url, hub.device_token), batch_size=2)
        assert syncer.run().samples_sent >= 1
        store.finish_sample(sid)  # finished after its records were synced: goes with the next pass
        fill_store(store, 1, seed=4)
        assert syncer.run().samples_sent >= 1
    finally:
        server.close()
    c = hub.client()
    c.post("/login", data={"token": hub.user_token})
    page = c.get("/samples").get_data(as_text=True)
    assert "slide-0" in page and "(finished)" in page
    assert "insufficient" in page  # the device's own slide call, frozen when it was finished
