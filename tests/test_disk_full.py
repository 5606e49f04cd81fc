"""A full disk is a state, not an error (issue 13, item 3), and a kill between the image and its record
leaves nothing behind for long (item 10)."""

from __future__ import annotations

import io
import os
import sqlite3
import time

import pytest

from device.store import DiskFullError, Store
from device.web import auth
from tests.webkit import encode, login, make_app, smear, token_of


def _fill_database(store: Store) -> None:
    """Make SQLite's own writes fail with SQLITE_FULL ("database or disk is full") on this thread."""
    n = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count={n}")


def _big_record(i: int) -> dict:
    return {"source": "camera", "label": "Pre", "probabilities": {"Pre": 1.0}, "comment": f"{i}" * 3000}


def test_write_surfaces_disk_full_not_cannot_rollback(tmp_path):
    store = Store(tmp_path / "d", reserve_bytes=0)
    _fill_database(store)
    with pytest.raises(DiskFullError, match="storage full"):
        for i in range(100):
            store.add_result(_big_record(i))
    assert store.disk_full
    assert not store.conn.in_transaction  # rolled back cleanly; the connection still works
    assert store.conn.execute("SELECT count(*) FROM results").fetchone()[0] >= 0


def test_api_key_works_and_writes_answer_507_when_the_database_is_full(tmp_path):
    app, services = make_app(tmp_path)
    key = auth.new_api_key(services.store.conn, "tech")
    client = app.test_client()
    _fill_database(services.store)
    for i in range(100):  # use up the last free pages
        try:
            services.store.add_result(_big_record(i))
        except DiskFullError:
            break
    for size in (500, 50, 0):  # and the last free bytes in them
        with pytest.raises(sqlite3.OperationalError):
            for i in range(100_000):
                services.store.open_sample(f"f{i}", "n" * size)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/status", headers=headers).status_code == 200
    assert client.get("/api/v1/results", headers=headers).status_code == 200
    resp = client.post("/api/v1/samples", json={"slide_id": "S1"}, headers=headers)
    assert resp.status_code == 507 and "storage full" in resp.get_json()["error"]


def test_upload_refused_with_507_and_nothing_stored_when_disk_full(tmp_path):
    app, services = make_app(tmp_path)
    store = services.store
    free = [10 * 2**20]
    store.reserve_bytes = 50 * 2**20
    store.free_bytes = lambda: free[0]
    client = app.test_client()
    login(client)
    data = {"file": (io.BytesIO(encode(smear(1))), "a.png"), "csrf_token": token_of(client)}
    resp = client.post("/api/v1/classify", data=data, content_type="multipart/form-data")
    assert resp.status_code == 507, resp.get_json()
    assert "storage full" in resp.get_json()["error"]
    assert store.list_results(limit=10) == []  # nothing acknowledged, nothing half-stored
    # /healthz and the status page say so
    assert client.get("/healthz").get_json() == {"ok": True, "storage": "full"}
    assert "Storage full" in client.get("/status").get_data(as_text=True)
    # space comes back: the state clears by itself and the same upload is stored
    free[0] = store.resume_bytes() + 10 * 2**20
    assert client.get("/healthz").get_json()["storage"] == "ok"
    data = {"file": (io.BytesIO(encode(smear(1))), "a.png"), "csrf_token": token_of(client)}
    resp = client.post("/api/v1/classify", data=data, content_type="multipart/form-data")
    assert resp.status_code == 200
    assert resp.get_json()["results"][0]["image_sha256"]


def test_recovery_hysteresis_and_reserve_capped_by_disk_size(tmp_path):
    free = [0]
    store = Store(tmp_path / "d", reserve_bytes=100 * 2**20, free_bytes=lambda: free[0])
    store.disk_total = lambda: 10**12  # a big disk: the reserve is the configured 100 MB
    free[0] = 99 * 2**20
    with pytest.raises(DiskFullError):
        store.write_image(b"x" * 100)
    free[0] = 101 * 2**20  # just above the reserve: inside the hysteresis band, still full
    assert store.refresh_disk_state() is True
    free[0] = store.resume_bytes()
    assert store.refresh_disk_state() is False
    assert any("resumed" in e["message"] for e in store.recent_events())
    store.disk_total = lambda: 500 * 2**20  # a 500 MB disk: the reserve is at most a tenth of it
    assert store.effective_reserve() == 50 * 2**20
    free[0] = 60 * 2**20
    store.write_image(b"y" * 100)


def _old(path, seconds: float = 7200) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_kill_between_image_and_record_leaves_no_orphans(tmp_path):
    data = tmp_path / "d"
    store = Store(data, reserve_bytes=0)
    # the new order: the file is written, then the process dies before the record's transaction
    sha, size = store.write_image(b"\xff\xd8 orphan file \xff\xd9")
    assert store.conn.execute("SELECT count(*) FROM images").fetchone()[0] == 0  # no row yet
    # the old order (file + row committed before the record), as left by an older version
    old_sha = store.put_image(b"\xff\xd8 orphan row \xff\xd9")
    # and a complete record, which must survive
    kept, kept_size = store.write_image(b"\xff\xd8 kept \xff\xd9")
    store.add_result(
        {"source": "upload", "label": "Pre", "probabilities": {"Pre": 1.0}, "image_sha256": kept},
        images=[(kept, kept_size)],
    )
    store.conn.execute("UPDATE images SET created_at = '2000-01-01T00:00:00.000Z'")
    for s in (sha, old_sha, kept):
        _old(store.image_path(s))
    store.close()
    reopened = Store(data, reserve_bytes=0)  # the daemon's next start sweeps
    assert not reopened.image_path(sha).exists()
    assert not reopened.image_path(old_sha).exists()
    assert [r[0] for r in reopened.conn.execute("SELECT sha256 FROM images")] == [kept]
    assert reopened.image_path(kept).is_file()


def test_a_record_refused_inside_its_transaction_leaves_no_image_row(tmp_path):
    store = Store(tmp_path / "d", reserve_bytes=0)
    sha, size = store.write_image(b"\xff\xd8 x \xff\xd9")
    with pytest.raises(Exception, match="no sample"):
        store.add_result(
            {"source": "upload", "label": "Pre", "sample_id": "nope", "image_sha256": sha},
            images=[(sha, size)],
        )
    assert store.conn.execute("SELECT count(*) FROM images").fetchone()[0] == 0


def test_young_orphans_are_left_alone(tmp_path):
    store = Store(tmp_path / "d", reserve_bytes=0)
    sha, _ = store.write_image(b"\xff\xd8 in flight \xff\xd9")
    assert store.sweep_orphans(files=True) == 0  # a write may be under way
    assert store.image_path(sha).is_file()


def test_real_upload_with_full_disk_stores_nothing_and_live_goes_on(tmp_path, tiny_bundle, sample_images):
    import cv2

    from device.services import Services
    from tests.test_pipeline import make_config, wait_for

    cfg = make_config(tmp_path, tiny_bundle, sample_images[0].parent, store={"reserve_mb": 100})
    s = Services(cfg, sync=False)
    try:
        s.store.free_bytes = lambda: 10 * 2**20  # below the reserve
        s.start()
        rgb = cv2.cvtColor(cv2.imread(str(sample_images[0])), cv2.COLOR_BGR2RGB)
        with pytest.raises(DiskFullError):
            s.classify_upload(rgb, filename="a.jpg")
        assert s.store.list_results(source="upload", limit=10) == []  # never a record without its image
        before = s.status()["frames_classified"]
        assert wait_for(lambda: s.status()["frames_classified"] > before + 5)  # live results go on
        assert s.live.latest_result() is not None
        assert all(w["alive"] for w in s.status()["workers"])
    finally:
        s.stop()


def test_store_worker_counts_results_lost_to_a_full_database(tmp_path, tiny_bundle, sample_images):
    from device.services import Services
    from tests.test_pipeline import make_config, wait_for

    cfg = make_config(tmp_path, tiny_bundle, sample_images[0].parent)
    s = Services(cfg, sync=False)

    def full(*_a, **_k):
        raise DiskFullError("storage full: not stored: the database cannot grow")

    try:
        s.store.add_result = full  # SQLite itself is full: every record write fails
        s.start()
        assert wait_for(lambda: s.status()["store_dropped"] >= 2)  # counted as dropped, not a crash
        before = s.status()["frames_classified"]
        assert wait_for(lambda: s.status()["frames_classified"] > before + 5)  # live results go on
        assert "storage full" in s.status()["last_error"]
        assert "worker store" not in s.status()["last_error"]  # a state handled, not a worker crash
    finally:
        s.stop()
