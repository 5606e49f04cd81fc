"""Updates flowing down (issue 12 item 4): the hub publishes signed bundle sets for all stations or a
group; a station downloads resumably, verifies against its own trusted keys, installs with the atomic
switch (rolling the whole set back when one part fails) and reports what it runs. SQLite and PostgreSQL
hubs both."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from hubkit import Hub, Server, hub_db, pg_server  # noqa: F401 - fixtures
from sqlalchemy import select
from updatekit import NAME, CutDownloads, Station, broken_model, clinic_key, publish, variant

from device.models.bundle import sha256_file
from device.sync import HubClient, HubError, HubUnreachable
from hub import tokens
from hub.fleet import updates as fleet
from hub.fleet.tables import BundleBlob, PublishedBundle


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, Path]:
    return clinic_key(tmp_path)


def _files_bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def test_publish_download_install_report(tmp_path: Path, tiny_bundle: Path, key, hub_db) -> None:  # noqa: F811
    hub = Hub(hub_db)
    server = Server(hub.app)
    station = Station(tmp_path / "st", tiny_bundle, key[1])
    client = HubClient(server.url, hub.device_token, timeout_s=10)
    try:
        assert station.updater.check(client)["state"] == "none"
        v2 = variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.5)
        publish(hub, [v2], key[1], set_name="recalibrated")
        before = os.readlink(station.models / NAME)
        r = station.updater.check(client)
        assert r["state"] == "installed", r
        assert station.temperature() == 1.5
        assert station.updater.bytes_downloaded == _files_bytes(v2)  # every file once, nothing more
        assert (station.models / "DEFAULT").read_text().split() == [NAME]
        assert os.readlink(station.models / NAME) != before  # a new version; the old one is kept
        assert before.split("/")[-1] in os.listdir(station.models / ".versions" / NAME)
        assert station.updater.check(client)["state"] == "up_to_date"
        with hub.sessions() as s:
            (row,) = fleet.fleet_overview(s)
        assert row["up_to_date"] is True and row["update_state"] == "up_to_date"
        assert row["installed"][0]["sha256"] == json.loads((v2 / "manifest.json").read_text())["sha256"]
        assert any("installed" in m for m in station.events())
        # the dashboard page and the readers' API show it
        c = hub.client()
        fleet_json = c.get("/api/v1/fleet", headers=hub.usr()).get_json()
        assert fleet_json["devices"][0]["current_set"]["name"] == "recalibrated"
        assert c.get("/api/v1/fleet", headers=hub.dev()).status_code == 401  # readers only
    finally:
        client.close()
        server.close()


def test_two_groups_get_different_sets(tmp_path: Path, tiny_bundle: Path, key, hub_db) -> None:  # noqa: F811
    hub = Hub(hub_db)
    with hub.sessions() as s:
        token_b = tokens.add_device(s, "scope-2")
        fleet.set_group(s, "scope-1", "north")
        fleet.set_group(s, "scope-2", "south")
    north = variant(tiny_bundle, tmp_path / "north", key[0], temperature=1.2)
    south = variant(tiny_bundle, tmp_path / "south", key[0], temperature=1.8)
    publish(hub, [north], key[1], group="north")
    publish(hub, [south], key[1], group="south")
    server = Server(hub.app)
    a = Station(tmp_path / "a", tiny_bundle, key[1])
    b = Station(tmp_path / "b", tiny_bundle, key[1])
    ca = HubClient(server.url, hub.device_token)
    cb = HubClient(server.url, token_b)
    try:
        assert a.updater.check(ca)["state"] == "installed"
        assert b.updater.check(cb)["state"] == "installed"
        assert (a.temperature(), b.temperature()) == (1.2, 1.8)
        # a set published later for every station replaces both groups' sets
        everyone = variant(tiny_bundle, tmp_path / "all", key[0], temperature=1.4)
        publish(hub, [everyone], key[1])
        assert a.updater.check(ca)["state"] == "installed"
        assert b.updater.check(cb)["state"] == "installed"
        assert a.temperature() == b.temperature() == 1.4
    finally:
        ca.close()
        cb.close()
        server.close()


def test_truncated_download_resumes_with_a_range_request(
    tmp_path: Path,
    tiny_bundle: Path,
    key,
    hub_db,  # noqa: F811
) -> None:
    hub = Hub(hub_db)
    app = CutDownloads(hub.app)
    server = Server(app)
    station = Station(tmp_path / "st", tiny_bundle, key[1])
    v2 = variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.6)
    publish(hub, [v2], key[1])
    model = (v2 / "model.tflite").read_bytes()
    sha = sha256_file(v2 / "model.tflite")
    half = len(model) // 2
    blobs = Path(station.config.device.data_dir) / "staging" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{sha}.part").write_bytes(model[:half])  # what a cut download left behind
    client = HubClient(server.url, hub.device_token)
    try:
        assert station.updater.check(client)["state"] == "installed"
    finally:
        client.close()
        server.close()
    assert f"bytes={half}-" in app.ranges
    assert station.updater.bytes_downloaded == _files_bytes(v2) - half
    assert station.temperature() == 1.6


def test_hub_going_away_mid_download_then_resume(tmp_path: Path, tiny_bundle: Path, key, hub_db) -> None:  # noqa: F811
    hub = Hub(hub_db)
    app = CutDownloads(hub.app)
    server = Server(app)
    proxy = FaultProxy(server.port)
    station = Station(tmp_path / "st", tiny_bundle, key[1])
    v2 = variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.3)
    publish(hub, [v2], key[1])
    client = HubClient(proxy.url, hub.device_token, timeout_s=5)
    try:
        app.cut_after = 40_000  # the first file response stops after 40 kB
        with pytest.raises(HubUnreachable, match="cut"):
            station.updater.check(client)
        parts = list((Path(station.config.device.data_dir) / "staging" / "blobs").glob("*.part"))
        assert len(parts) == 1 and 0 < parts[0].stat().st_size <= 40_000
        got = parts[0].stat().st_size
        proxy.down = True  # the hub is unreachable for a while: the station keeps its models
        with pytest.raises(HubError):
            station.updater.check(client)
        assert station.temperature() == 1.0
        proxy.down = False
        assert station.updater.check(client)["state"] == "installed"
        assert f"bytes={got}-" in app.ranges
        assert station.temperature() == 1.3
    finally:
        client.close()
        proxy.close()
        server.close()


def test_tampered_bundle_on_the_hub_is_refused(tmp_path: Path, tiny_bundle: Path, key, hub_db) -> None:  # noqa: F811
    """Someone with the hub's database swaps the model (and its listed hash): the station's own
    signature check refuses it, reports it, and keeps its models."""
    hub = Hub(hub_db)
    server = Server(hub.app)
    station = Station(tmp_path / "st", tiny_bundle, key[1])
    v2 = variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.7)
    result = publish(hub, [v2], key[1])
    forged = bytearray((v2 / "model.tflite").read_bytes())
    forged[1000] ^= 0xFF
    import hashlib
    from datetime import UTC, datetime

    forged_sha = hashlib.sha256(bytes(forged)).hexdigest()
    with hub.sessions() as s:
        s.add(
            BundleBlob(sha256=forged_sha, size=len(forged), data=bytes(forged), created_at=datetime.now(UTC))
        )
        b = s.scalar(select(PublishedBundle))
        files = json.loads(b.files_json)
        for f in files:
            if f["path"] == "model.tflite":
                f["sha256"] = forged_sha
        b.files_json = json.dumps(files)
        s.commit()
    client = HubClient(server.url, hub.device_token)
    before = os.readlink(station.models / NAME)
    try:
        r = station.updater.check(client)
        assert r["state"] == "refused" and "model.tflite changed after signing" in r["reason"]
        assert os.readlink(station.models / NAME) == before and station.temperature() == 1.0
        assert any("refused" in m for m in station.events())
        with hub.sessions() as s:
            (row,) = fleet.fleet_overview(s)
        assert row["update_state"] == "refused" and "model.tflite" in row["update_detail"]
        assert row["current_set"]["id"] == result["set_id"] and row["up_to_date"] is False
        # the refusal is remembered: the next poll does not download the set again
        n = station.updater.bytes_downloaded
        assert station.updater.check(client)["state"] == "refused"
        assert station.updater.bytes_downloaded == n
    finally:
        client.close()
        server.close()


def test_hub_serving_wrong_bytes_is_refused(tmp_path: Path, tiny_bundle: Path, key, hub_db) -> None:  # noqa: F811
    hub = Hub(hub_db)
    server = Server(hub.app)
    station = Station(tmp_path / "st", tiny_bundle, key[1])
    v2 = variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.7)
    publish(hub, [v2], key[1])
    sha = sha256_file(v2 / "model.tflite")
    with hub.sessions() as s:
        blob = s.get(BundleBlob, sha)
        data = bytearray(blob.data)
        data[10] ^= 0x01
        blob.data = bytes(data)
        s.commit()
    client = HubClient(server.url, hub.device_token)
    try:
        r = station.updater.check(client)
    finally:
        client.close()
        server.close()
    assert r["state"] == "refused" and "do not match" in r["reason"]
    assert station.temperature() == 1.0


def test_a_bad_update_rolls_the_whole_set_back(tmp_path: Path, tiny_bundle: Path, key, hub_db) -> None:  # noqa: F811
    """Set = [a good new version of the running bundle, a second bundle that cannot load]: the first
    is switched, the second fails, so the first goes back too; the station runs what it ran."""
    hub = Hub(hub_db)
    server = Server(hub.app)
    reloads: list[int] = []
    station = Station(tmp_path / "st", tiny_bundle, key[1], on_installed=lambda: reloads.append(1))
    good = variant(tiny_bundle, tmp_path / "good", key[0], temperature=1.9)
    bad = broken_model(tiny_bundle, tmp_path / "bad", key[0], "second-model")
    publish(hub, [good, bad], key[1])
    before = os.readlink(station.models / NAME)
    client = HubClient(server.url, hub.device_token)
    try:
        r = station.updater.check(client)
        assert r["state"] == "failed" and "previous models restored" in r["reason"], r
        assert os.readlink(station.models / NAME) == before and station.temperature() == 1.0
        assert not (station.models / "second-model").exists()
        assert (station.models / "DEFAULT").read_text().split() == [NAME]
        assert reloads  # the daemon was told to reload the restored models
        with hub.sessions() as s:
            (row,) = fleet.fleet_overview(s)
        assert row["update_state"] == "failed"
    finally:
        client.close()
        server.close()


def test_a_failing_reload_rolls_back(tmp_path: Path, tiny_bundle: Path, key) -> None:
    from device.errors import BundleError

    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    server = Server(hub.app)
    calls: list[int] = []

    def reload() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise BundleError("the new ensemble does not load in the daemon")

    station = Station(tmp_path / "st", tiny_bundle, key[1], on_installed=reload)
    before = os.readlink(station.models / NAME)
    publish(hub, [variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.1)], key[1])
    client = HubClient(server.url, hub.device_token)
    try:
        r = station.updater.check(client)
    finally:
        client.close()
        server.close()
    assert r["state"] == "failed" and "does not load in the daemon" in r["reason"]
    assert os.readlink(station.models / NAME) == before and len(calls) == 2


def test_manual_policy_waits_for_an_admin(tmp_path: Path, tiny_bundle: Path, key) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    server = Server(hub.app)
    station = Station(tmp_path / "st", tiny_bundle, key[1], policy="manual")
    publish(hub, [variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.25)], key[1])
    client = HubClient(server.url, hub.device_token)
    try:
        assert station.updater.check(client)["state"] == "staged"
        assert station.temperature() == 1.0
        assert station.updater.status()["staged"]["bundles"][0]["name"] == NAME
        assert station.updater.check(client)["state"] == "staged"  # no second download
        assert station.updater.accept(client)["state"] == "installed"
        assert station.temperature() == 1.25 and station.updater.status()["staged"] is None
    finally:
        client.close()
        server.close()


def test_an_unknown_key_is_refused_by_the_hub_and_by_the_station(
    tmp_path: Path, tiny_bundle: Path, key
) -> None:
    from hub.fleet.bundle_sig import SignatureError

    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    other = clinic_key(tmp_path / "other")
    v2 = variant(tiny_bundle, tmp_path / "v2", other[0], temperature=1.5)
    with pytest.raises(SignatureError, match="trusts no signing key"), hub.sessions() as s:
        fleet.publish(s, [v2])
    with pytest.raises(SignatureError, match="not one of the hub's trusted keys"):
        publish(hub, [v2], key[1])
    # a hub that trusts it (another district's), a station that does not
    publish(hub, [v2], other[1])
    server = Server(hub.app)
    station = Station(tmp_path / "st", tiny_bundle, key[1])
    client = HubClient(server.url, hub.device_token)
    try:
        r = station.updater.check(client)
        assert r["state"] == "refused" and "not in [models] trusted_keys" in r["reason"]
        assert station.temperature() == 1.0
        assert station.updater.check(client).get("cached") is True  # not downloaded again
        # the station's admin decides to trust that key: the refused set gets another chance
        station.config.models.trusted_keys.append(str(other[1]))
        assert station.updater.check(client)["state"] == "installed"
        assert station.temperature() == 1.5
    finally:
        client.close()
        server.close()


def test_file_route_ranges_and_auth(tmp_path: Path, tiny_bundle: Path, key) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    v2 = variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.5)
    publish(hub, [v2], key[1])
    data = (v2 / "model.tflite").read_bytes()
    sha = sha256_file(v2 / "model.tflite")
    c = hub.client()
    url = f"/api/v1/models/files/{sha}"
    assert c.get(url).status_code == 401
    full = c.get(url, headers=hub.dev())
    assert full.status_code == 200 and full.data == data and full.headers["Accept-Ranges"] == "bytes"
    part = c.get(url, headers={**hub.dev(), "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = c.get(url, headers={**hub.dev(), "Range": f"bytes={len(data) - 5}-"})
    assert tail.status_code == 206 and tail.data == data[-5:]
    assert c.get(url, headers={**hub.dev(), "Range": f"bytes={len(data)}-"}).status_code == 416
    assert c.get(f"/api/v1/models/files/{'0' * 64}", headers=hub.dev()).status_code == 404
    cur = c.get("/api/v1/models/current", headers=hub.dev()).get_json()["set"]
    paths = {f["path"] for f in cur["bundles"][0]["files"]}
    assert {"model.tflite", "manifest.json", "MODEL.md", "signature.json"} <= paths
    bad = c.post("/api/v1/models/installed", headers=hub.dev(), json={"models": "nope"})
    assert bad.status_code == 422


def test_hub_cli_keys_groups_publish(tmp_path: Path, tiny_bundle: Path, key, capsys) -> None:
    from hub.cli import main

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    v2 = variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.5)
    assert main(["--db", url, "models", "publish", str(v2)]) == 1
    assert "trusts no signing key" in capsys.readouterr().err
    assert main(["--db", url, "keys", "add", str(key[1])]) == 0
    assert main(["--db", url, "devices", "add", "scope-9", "--group", "east"]) == 0
    assert main(["--db", url, "models", "publish", str(v2), "--group", "east", "--set-name", "v2"]) == 0
    assert "current for group east" in capsys.readouterr().out
    (v2 / "MODEL.md").write_text("changed after signing\n")
    assert main(["--db", url, "models", "publish", str(v2)]) == 1
    assert "MODEL.md changed after signing" in capsys.readouterr().err
    assert main(["--db", url, "devices", "set-group", "scope-9", "--none"]) == 0
    assert main(["--db", url, "models", "list"]) == 0
    out = capsys.readouterr().out
    assert "set #1 v2 for east" in out and "scope-9 [all]" in out


def test_dashboard_models_page(tmp_path: Path, tiny_bundle: Path, key) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    publish(hub, [variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.5)], key[1], set_name="spring")
    c = hub.client()
    c.post("/login", data={"token": hub.user_token})
    html = c.get("/models").get_data(as_text=True)
    assert "scope-1" in html and "spring" in html and "not a diagnosis" in html


def test_only_changed_bundles_are_downloaded(tmp_path: Path, tiny_bundle: Path, key) -> None:
    """A set = [the bundle the station already runs, a new one]: only the new one crosses the network."""
    from make_tiny_bundle import TEST_PUB

    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    server = Server(hub.app)
    station = Station(tmp_path / "st", tiny_bundle, key[1])
    second = variant(tiny_bundle, tmp_path / "second", key[0], name="second-model")
    with hub.sessions() as s:
        fleet.add_key(s, TEST_PUB.read_text())
    publish(hub, [tiny_bundle, second], key[1])
    client = HubClient(server.url, hub.device_token)
    try:
        assert station.updater.check(client)["state"] == "installed"
    finally:
        client.close()
        server.close()
    assert station.updater.bytes_downloaded == _files_bytes(second)
    assert (station.models / "DEFAULT").read_text().split() == [NAME, "second-model"]
