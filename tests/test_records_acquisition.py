"""Every record keeps the µm/px it was classified at and the calibration profile's name: store
migration, defaults from the active profile, reviews, CSV export, and the hub."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from hubkit import Hub, hub_db, pg_server  # noqa: F401 - fixtures

from device.store import Store, StoreError
from device.store.db import _statements
from device.store.migrations import M001_CORE
from device.web.export import CSV_COLUMNS, csv_rows
from hub.app import HubSettings

PROBS = {"Benign": 0.1, "Pre": 0.9}


def rec(**kw):
    return {"source": "camera", "label": "Pre", "confidence": 0.9, "probabilities": PROBS, **kw}


def test_a_store_from_before_gains_the_columns(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "smearscope.db")
    for stmt in _statements(M001_CORE):
        conn.execute(stmt)
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO results (id, device_id, captured_at, source, label) "
        "VALUES ('old', 'd', 't', 'camera', 'Pre')"
    )
    conn.commit()
    conn.close()
    store = Store(data, reserve_bytes=0)
    old = store.get_result("old")
    assert old["um_per_px"] is None and old["profile"] is None  # unknown, never made up
    new = store.add_result(rec(um_per_px=0.0725, profile="HQ cam, 100x oil"))
    assert (new["um_per_px"], new["profile"]) == (0.0725, "HQ cam, 100x oil")
    store.close()


def test_records_default_to_the_active_profile_and_reviews_copy_it(tmp_path):
    store = Store(tmp_path / "data", reserve_bytes=0)
    assert store.add_result(rec())["um_per_px"] is None  # no profiles at all
    store.acquisition_defaults = lambda: {"um_per_px": 0.181, "profile": "HQ cam, 40x"}
    r = store.add_result(rec())
    assert (r["um_per_px"], r["profile"]) == (0.181, "HQ cam, 40x")
    upload = store.add_result(rec(source="upload", um_per_px=0.1, profile=None))  # said explicitly
    assert (upload["um_per_px"], upload["profile"]) == (0.1, None)
    store.acquisition_defaults = lambda: {"um_per_px": 0.07, "profile": "other"}  # switched since
    review = store.add_review(r["id"], "Benign", "", "ana")
    assert (review["um_per_px"], review["profile"]) == (0.181, "HQ cam, 40x")
    with pytest.raises(StoreError, match="um_per_px"):
        store.add_result(rec(um_per_px=-1))
    store.close()


def test_csv_export_has_the_columns():
    r = {
        "id": "x", "seq": 1, "captured_at": "t", "sample_id": None, "source": "camera",
        "kind": "classification", "review_of": None, "label": "Pre", "confidence": 0.9, "abstained": False,
        "reason": None, "quality": {}, "models": [], "image_sha256": None, "filename": None,
        "reviewer": None, "comment": None,
        "probabilities": PROBS, "um_per_px": 0.0725, "profile": "HQ cam, 100x oil",
    }  # fmt: skip
    lines = list(csv_rows([r], ["Benign", "Pre"], {}))
    head, row = lines[0].strip().split(","), lines[1]  # the header first
    assert head[CSV_COLUMNS.index("um_per_px")] == "um_per_px"
    assert "0.0725" in row and "HQ cam" in row


def _record(**kw):
    base = {
        "id": str(uuid.uuid4()), "seq": 1, "device_id": "d", "sample_id": None,
        "captured_at": "2026-11-22T01:02:03.123Z", "monotonic_ns": 1, "boot_id": "b", "source": "camera",
        "kind": "classification", "review_of": None, "models": [], "probabilities": PROBS, "label": "Pre",
        "confidence": 0.9, "abstained": False, "reason": None, "quality": {}, "image_sha256": None,
        "heatmap_sha256": None, "filename": None, "reviewer": None, "comment": None,
    }  # fmt: skip
    return {**base, **kw}


def test_the_hub_keeps_scale_and_profile(hub_db):  # noqa: F811
    from sqlalchemy import select

    from hub.models import Result

    hub = Hub(hub_db, HubSettings(max_body_mb=1, max_batch=50))
    good = _record(um_per_px=0.0725, profile="HQ cam, 100x oil")
    legacy = _record(seq=2)  # a device from before: no keys at all
    bad = _record(seq=3, um_per_px="big")
    r = hub.client().post("/api/v1/results", json={"records": [good, legacy, bad]}, headers=hub.dev())
    answers = r.get_json()["results"]
    assert [a["status"] for a in answers] == ["accepted", "accepted", "rejected"]
    assert "um_per_px" in answers[2]["reason"]
    with hub.sessions() as s:
        rows = {x.id: (x.um_per_px, x.profile) for x in s.scalars(select(Result))}
    assert rows[good["id"]] == (0.0725, "HQ cam, 100x oil") and rows[legacy["id"]] == (None, None)
    c = hub.client()
    c.post("/login", data={"token": hub.user_token})
    csv_text = c.get("/export/results.csv").get_data(as_text=True)
    assert '0.0725,"HQ cam, 100x oil"' in csv_text


def test_sync_carries_scale_and_profile_to_the_hub(tmp_path):
    from hubkit import Server, fill_store
    from sqlalchemy import select

    from device.sync import HubClient, Outbox, Syncer
    from hub.models import Result

    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store = Store(tmp_path / "dev", reserve_bytes=0)
    store.acquisition_defaults = lambda: {"um_per_px": 0.181, "profile": "HQ cam, 40x"}
    fill_store(store, 3)
    server = Server(hub.app)
    try:
        Syncer(Outbox(store), HubClient(server.url, hub.device_token, timeout_s=5), batch_size=10).run()
    finally:
        server.close()
    with hub.sessions() as s:
        got = {(r.um_per_px, r.profile) for r in s.scalars(select(Result))}
    assert got == {(0.181, "HQ cam, 40x")}
    store.close()
