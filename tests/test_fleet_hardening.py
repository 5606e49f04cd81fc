"""A hub cannot roll stations back or make them fetch what the signature does not name: older sets wait
for the station admin's explicit downgrade accept; the hub's file list is checked against signature.json
before any large file is downloaded; publishing refuses older bundles and bent manifests."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hubkit import Hub, Server
from sqlalchemy import select
from updatekit import NAME, Station, clinic_key, publish, quiet, variant

from device.errors import SmearscopeError
from device.models import modelstore
from device.models.signing import SignaturePolicy, load_trusted_keys
from device.sync import HubClient
from hub.fleet import updates as fleet
from hub.fleet.bundle_sig import SignatureError
from hub.fleet.tables import BundleBlob, PublishedBundle

OLD, NEW = "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, Path]:
    return clinic_key(tmp_path)


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    return Hub(f"sqlite:///{tmp_path / 'hub.db'}")


def test_an_older_set_from_the_hub_waits_for_an_explicit_downgrade(
    tmp_path: Path, tiny_bundle: Path, key, hub: Hub
) -> None:
    server = Server(hub.app)
    station = Station(tmp_path / "st", tiny_bundle, key[1], policy="auto")
    newer = variant(tiny_bundle, tmp_path / "new", key[0], version=NEW, temperature=1.2)
    trust = SignaturePolicy(load_trusted_keys([str(key[1])]))
    modelstore.install(newer, station.models, log=quiet, policy=trust)
    older = variant(tiny_bundle, tmp_path / "old", key[0], version=OLD, temperature=1.1)
    publish(hub, [older], key[1])  # the hub has no newer set: it publishes
    client = HubClient(server.url, hub.device_token, timeout_s=10)
    try:
        r = station.updater.check(client)
        assert r["state"] == "downgrade" and OLD in r["reason"], r
        assert station.temperature() == 1.2  # auto policy, and still not installed
        assert station.updater.check(client)["state"] == "downgrade"  # held, not re-downloaded
        with hub.sessions() as s:
            (row,) = fleet.fleet_overview(s)
        assert row["update_state"] == "downgrade"
        with pytest.raises(SmearscopeError, match="accept it as a downgrade"):
            station.updater.accept(client)
        assert station.temperature() == 1.2
        assert station.updater.accept(client, allow_downgrade=True)["state"] == "installed"
        assert station.temperature() == 1.1
    finally:
        client.close()
        server.close()


def test_files_the_signature_does_not_name_are_never_downloaded(
    tmp_path: Path, tiny_bundle: Path, key, hub: Hub
) -> None:
    """A tampered hub lists a big extra file (or a bigger model) next to a genuine signature: the
    station reads signature.json first and refuses before fetching any of it."""
    server = Server(hub.app)
    station = Station(tmp_path / "st", tiny_bundle, key[1])
    v2 = variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.3)
    publish(hub, [v2], key[1])
    big = os.urandom(3 << 20)
    import hashlib

    big_sha = hashlib.sha256(big).hexdigest()
    with hub.sessions() as s:
        s.add(BundleBlob(sha256=big_sha, size=len(big), data=big, created_at=datetime.now(UTC)))
        row = s.scalar(select(PublishedBundle))
        files = json.loads(row.files_json)
        sig_size = next(f["size"] for f in files if f["path"] == "signature.json")
        row.files_json = json.dumps([*files, {"path": "payload.bin", "sha256": big_sha, "size": len(big)}])
        s.commit()
    client = HubClient(server.url, hub.device_token, timeout_s=10)
    try:
        r = station.updater.check(client)
    finally:
        client.close()
        server.close()
    assert r["state"] == "refused" and "payload.bin was added after signing" in r["reason"], r
    assert station.updater.bytes_downloaded == sig_size  # the signature alone
    assert station.temperature() == 1.0


def test_publish_refuses_an_older_bundle_unless_asked(
    tmp_path: Path, tiny_bundle: Path, key, hub: Hub, capsys
):
    newer = variant(tiny_bundle, tmp_path / "new", key[0], version=NEW, temperature=1.2)
    older = variant(tiny_bundle, tmp_path / "old", key[0], version=OLD, temperature=1.1)
    publish(hub, [newer], key[1], group="north")
    with hub.sessions() as s, pytest.raises(fleet.DowngradeRefused, match="older than"):
        fleet.publish(s, [older], group="north")
    with hub.sessions() as s:  # for every station it would replace north's set too
        with pytest.raises(fleet.DowngradeRefused, match="north"):
            fleet.publish(s, [older])
        fleet.publish(s, [older], group="south")  # nothing newer there
        r = fleet.publish(s, [older], group="north", allow_downgrade=True)
    assert r["downgrade"] and NEW in r["downgrade"][0]
    from hub.cli import main as hub_main

    db = ["--db", f"sqlite:///{tmp_path / 'hub.db'}"]
    assert hub_main(["models", "publish", str(newer), "--group", "north", *db]) == 0
    assert hub_main(["models", "publish", str(older), "--group", "north", *db]) == 1
    assert "--allow-downgrade" in capsys.readouterr().err
    assert hub_main(["models", "publish", str(older), "--group", "north", "--allow-downgrade", *db]) == 0
    assert "downgrade" in capsys.readouterr().out


@pytest.mark.parametrize("model_file", ["/etc/passwd", "../model.tflite", "report/x.png"])
def test_publish_refuses_a_model_file_outside_the_bundle(
    tmp_path: Path, tiny_bundle: Path, key, hub: Hub, monkeypatch, model_file: str
) -> None:
    from types import SimpleNamespace

    with monkeypatch.context() as m:  # signing parses the manifest, which the device refuses
        m.setattr("device.models.bundle.read_manifest", lambda _d: SimpleNamespace(name=NAME))
        bent = variant(tiny_bundle, tmp_path / "bent", key[0], model_file=model_file)
    with pytest.raises(SignatureError, match="model_file"):
        publish(hub, [bent], key[1])


def test_publish_refuses_a_symlink_in_the_bundle(tmp_path: Path, tiny_bundle: Path, key, hub: Hub) -> None:
    signed = variant(tiny_bundle, tmp_path / "b", key[0])
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the stations")
    (signed / "MODEL.md").unlink()
    os.symlink(secret, signed / "MODEL.md")
    with pytest.raises(SignatureError, match="symbolic link"):
        publish(hub, [signed], key[1])
