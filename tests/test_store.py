"""Store: images by hash, records (Contract 3 JSON), filters + keyset pages, reviews, samples and the
slide call, events, retention (synced only) and the disk reserve."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from device.store import DiskFullError, Store, StoreError
from device.store.migrations import MIGRATIONS

PROBS = {"Benign": 0.05, "Early": 0.05, "Pre": 0.85, "Pro": 0.05}
CONTRACT_KEYS = {
    "id", "seq", "device_id", "sample_id", "captured_at", "monotonic_ns", "boot_id", "source", "kind",
    "review_of", "models", "probabilities", "label", "confidence", "abstained", "reason", "quality",
    "image_sha256", "heatmap_sha256", "filename", "reviewer", "comment", "um_per_px", "profile", "cells",
}  # fmt: skip


def rec(**kw):
    base = {"source": "camera", "label": "Pre", "confidence": 0.85, "probabilities": PROBS}
    base.update(kw)
    return base


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data", reserve_bytes=0)
    yield s
    s.close()


def test_schema_wal_and_device_id(tmp_path, store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    device_id = store.device_id
    store.close()
    assert Store(tmp_path / "data").device_id == device_id  # kept across restarts
    assert Store(tmp_path / "other", device_id="scope-7").device_id == "scope-7"


def test_put_image_by_hash(store):
    data = b"\xff\xd8 not really a jpeg"
    sha = store.put_image(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.image_path(sha).read_bytes() == data
    assert store.image_path(sha).parent.name == sha[:2]
    assert store.put_image(data) == sha  # idempotent
    assert store.images_bytes() == len(data)
    with pytest.raises(StoreError):
        store.image_path("../../etc/passwd")


def test_add_result_fills_contract_fields(store):
    r = store.add_result(rec(quality={"ok": True}, models=[{"name": "m", "sha256": "ab"}]))
    assert set(r) == CONTRACT_KEYS
    assert r["seq"] == 1 and len(r["id"]) == 36 and r["device_id"] == store.device_id
    assert r["captured_at"].endswith("Z") and r["boot_id"] and r["monotonic_ns"] > 0
    assert r["kind"] == "classification" and r["abstained"] is False and r["probabilities"] == PROBS
    assert store.get_result(r["id"]) == r
    assert store.get_result("nope") is None
    with pytest.raises(StoreError):
        store.add_result(rec(source="telepathy"))
    with pytest.raises(StoreError):
        store.add_result(rec(sample_id="no-such-sample"))


def test_filters_and_keyset_pagination(store):
    for i in range(30):
        store.add_result(rec(label="Pre" if i % 3 else "Benign", abstained=i % 5 == 0))
    page1 = store.list_results(limit=10)
    assert [r["seq"] for r in page1] == list(range(30, 20, -1))
    page2 = store.list_results(limit=10, before_seq=page1[-1]["seq"])
    assert [r["seq"] for r in page2] == list(range(20, 10, -1))
    assert all(r["label"] == "Benign" for r in store.list_results(label="Benign", limit=100))
    assert len(store.list_results(label="Benign", limit=100)) == 10
    assert len(store.list_results(abstained=True, limit=100)) == 6
    first = store.list_results(limit=100)[-1]
    assert store.list_results(since=first["captured_at"], limit=100)[-1]["seq"] == 1
    assert store.list_results(until=first["captured_at"], limit=100) == []


def test_review_is_a_new_record(store):
    r = store.add_result(rec())
    agree = store.add_review(r["id"], None, user="ann")
    assert agree["kind"] == "review" and agree["source"] == "review" and agree["review_of"] == r["id"]
    assert agree["label"] == "Pre" and agree["reviewer"] == "ann"
    fix = store.add_review(r["id"], "Benign", "cell is a hematogone", user="bob")
    assert fix["label"] == "Benign" and fix["comment"] == "cell is a hematogone"
    assert store.get_result(r["id"])["label"] == "Pre"  # the original is never changed
    assert [x["id"] for x in store.reviews_of(r["id"])] == [agree["id"], fix["id"]]
    assert [x["id"] for x in store.list_results(reviewed=True)] == [r["id"]]
    assert store.list_results(reviewed=False) == []
    with pytest.raises(StoreError, match="unknown label"):
        store.add_review(r["id"], "Banana")
    with pytest.raises(StoreError):
        store.add_review(fix["id"], None)


def test_sample_summary_rule(store):
    store.set_labels({"Benign": False, "Early": True, "Pre": True, "Pro": True})
    s = store.open_sample("LAB-42", "left arm", "ann")
    assert s["status"] == "open" and s["slide_id"] == "LAB-42"
    for _ in range(2):
        store.add_result(rec(sample_id=s["id"], label="Pre"))
    assert store.sample_summary(s["id"])["call"] == "insufficient"
    # uncertain fields are counted but never decide
    for _ in range(5):
        store.add_result(rec(sample_id=s["id"], label="Pre", abstained=True))
    summ = store.sample_summary(s["id"])
    assert summ["fields"] == 7 and summ["uncertain_fields"] == 5 and summ["call"] == "insufficient"
    third = store.add_result(rec(sample_id=s["id"], label="Benign"))
    store.add_review(third["id"], "Pro", user="ann")  # a reviewed field counts by its reviewed label
    summ = store.sample_summary(s["id"])
    assert summ["call"] == "suspicious" and summ["malignant_fields"] == 3
    assert summ["label_fractions"] == {"Pre": round(2 / 3, 4), "Pro": round(1 / 3, 4)}
    assert "never decide" in summ["rule"] and "not a diagnosis" in summ["disclaimer"]
    done = store.finish_sample(s["id"])
    assert done["status"] == "finished" and done["summary"]["call"] == "suspicious"
    assert store.list_samples(status="finished")[0]["id"] == s["id"]
    with pytest.raises(StoreError):
        store.open_sample("  ")


def test_no_malignant_call_needs_enough_fields(store):
    store.set_labels({"Benign": False, "Pre": True})
    s = store.open_sample("LAB-1")
    for _ in range(10):
        store.add_result(rec(sample_id=s["id"], label="Benign"))
    assert store.sample_summary(s["id"])["call"] == "no_malignant_seen"


def test_events_and_counts(store):
    store.add_event("warning", "camera", "lost")
    store.add_event("error", "store", "disk")
    ev = store.recent_events(5)
    assert [e["message"] for e in ev] == ["disk", "lost"]
    store.add_result(rec())
    assert store.counts() == {"records_total": 1, "unsynced": 1}


def test_retention_deletes_oldest_synced_only(tmp_path):
    s = Store(tmp_path / "d", reserve_bytes=0, budget_bytes=2500)
    shas = [s.put_image(bytes([i]) * 1000) for i in range(2)]
    s.conn.execute("UPDATE images SET synced = 1 WHERE sha256 = ?", (shas[0],))
    s.put_image(b"\x09" * 1000)  # over budget: the synced one goes
    assert not s.image_path(shas[0]).exists() and s.image_path(shas[1]).exists()
    s.put_image(b"\x0a" * 1000)  # over budget again, but nothing synced is left: unsynced are kept
    assert s.image_path(shas[1]).exists()
    row = s.conn.execute("SELECT deleted_at FROM images WHERE sha256 = ?", (shas[0],)).fetchone()
    assert row[0] is not None


def test_disk_reserve_refuses_images_and_alerts(tmp_path):
    free = [10 * 2**20]
    s = Store(tmp_path / "d", reserve_bytes=50 * 2**20, free_bytes=lambda: free[0])
    with pytest.raises(DiskFullError, match="reserve"):
        s.put_image(b"x" * 100)
    assert s.disk_full
    assert any(e["level"] == "error" and "image writes stopped" in e["message"] for e in s.recent_events())
    assert not any(s.images_dir.rglob("*.jpg"))
    s.add_result(rec())  # rows still go in
    free[0] = 100 * 2**20
    s.put_image(b"y" * 100)
    assert not s.disk_full


def test_threads_get_their_own_connection(store):
    import threading

    errors = []

    def work():
        try:
            for _ in range(20):
                store.add_result(rec())
        except sqlite3.Error as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and store.counts()["records_total"] == 80


def test_stale_temps_removed_on_open(tmp_path):
    import os

    s = Store(tmp_path / "d")
    s.close()
    tmp = tmp_path / "d" / "images" / "ab" / ".tmp-xyz"
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"half")
    Store(tmp_path / "d").close()  # another process: a fresh temp may be a write in progress
    assert tmp.exists()
    os.utime(tmp, (0, 0))  # an old one is stale
    s = Store(tmp_path / "d")
    assert not tmp.exists()
    assert "temp file" in s.recent_events(1)[0]["message"]
    tmp.write_bytes(b"half")
    Store(tmp_path / "d", temps_older_than_s=0)  # the daemon owns the directory: all temps are stale
    assert not tmp.exists()


def test_unusable_data_dir_is_explained(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot use the data directory"):
        Store(blocker / "data")


def test_newer_schema_is_refused(tmp_path):
    s = Store(tmp_path / "d")
    s.conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    s.close()
    with pytest.raises(StoreError, match="newer than this smearscope"):
        Store(tmp_path / "d")
