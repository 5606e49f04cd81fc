"""The outbox's state machine on the device store (no network)."""

from __future__ import annotations

import random

import pytest
from hubkit import fill_store

from device.store import Store
from device.sync import Outbox
from device.sync.worker import backoff_delay


def _store(tmp_path, n=5):
    store = Store(tmp_path / "dev", reserve_bytes=0)
    ids = fill_store(store, n)
    return store, Outbox(store), ids


def test_claim_release_settle(tmp_path):
    store, ob, ids = _store(tmp_path)
    assert ob.counts() == {"pending": 5, "sending": 0, "synced": 0, "rejected": 0}
    batch = ob.claim(3)
    assert [r["id"] for r in batch] == ids[:3] and [r["seq"] for r in batch] == [1, 2, 3]
    assert ob.counts()["sending"] == 3
    assert [r["id"] for r in ob.claim(10, after_seq=3)] == ids[3:]
    ob.release(ids[3:], error="network down")
    counts = ob.settle(
        [(ids[0], "accepted", None), (ids[1], "duplicate", None), (ids[2], "rejected", "label: bad")]
    )
    assert counts == {"accepted": 1, "duplicate": 1, "rejected": 1, "deferred": 0}
    assert ob.counts() == {"pending": 2, "sending": 0, "synced": 2, "rejected": 1}
    assert ob.rejected()[0]["reason"] == "label: bad"
    row = store.conn.execute("SELECT sync_error, synced_at FROM results WHERE id = ?", (ids[0],)).fetchone()
    assert row["synced_at"] and row["sync_error"] is None
    assert store.conn.execute("SELECT count(*) FROM results").fetchone()[0] == 5  # nothing deleted
    assert any("quarantined" in e["message"] for e in store.recent_events())
    assert store.counts()["unsynced"] == 2


def test_crash_leftovers_go_back_to_pending(tmp_path):
    store, ob, ids = _store(tmp_path)
    ob.claim(4)
    store.close()
    store2 = Store(tmp_path / "dev", reserve_bytes=0)  # "after the crash"
    ob2 = Outbox(store2)
    assert ob2.recover() == 4
    assert ob2.counts()["pending"] == 5
    ob2.quarantine([ids[0]], "bad")
    assert ob2.retry_rejected() == 1 and ob2.counts()["pending"] == 5


def test_unsynced_images(tmp_path):
    store, ob, _ = _store(tmp_path, 3)
    batch = ob.claim(3)
    shas = ob.unsynced_images(batch)
    assert shas == [r["image_sha256"] for r in batch]
    ob.mark_images_synced(shas[:2])
    assert ob.unsynced_images(batch) == shas[2:]
    ob.forget_images(shas[:1])
    assert ob.unsynced_images(batch) == [shas[0], shas[2]]


def test_backoff_grows_with_jitter_and_is_capped():
    rng = random.Random(1)
    for failures, step in ((1, 2), (2, 4), (3, 8), (10, 60)):
        delays = [backoff_delay(failures, 2.0, 60.0, rng) for _ in range(50)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1


def test_one_push_pass_at_a_time(tmp_path):
    from device.sync import HubClient, SyncBusy, Syncer

    store, ob, _ = _store(tmp_path, 1)
    ob.claim(1)  # a live pass is sending this row
    with ob.exclusive():
        with pytest.raises(SyncBusy):
            Syncer(Outbox(store), HubClient("http://127.0.0.1:9", "t")).run(wait_s=0.2)
        assert ob.counts()["sending"] == 1  # the second pass did not take the row back
