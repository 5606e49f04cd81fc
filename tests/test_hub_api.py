"""Hub API on SQLite and PostgreSQL: auth, images by hash, per-record batch answers, limits, gzip."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import uuid

import pytest
from hubkit import Hub, hub_db, pg_server  # noqa: F401 - fixtures

from hub.app import HubSettings

IMG = b"\xff\xd8\xff\xe0 a tiny jpeg-ish body"
SHA = hashlib.sha256(IMG).hexdigest()


def record(**kw):
    rec = {
        "id": str(uuid.uuid4()),
        "seq": 1,
        "device_id": "dev",
        "sample_id": str(uuid.uuid4()),
        "captured_at": "2026-11-22T01:02:03.123Z",
        "monotonic_ns": 123,
        "boot_id": "boot",
        "source": "camera",
        "kind": "classification",
        "review_of": None,
        "models": [{"name": "m", "sha256": "0" * 64}],
        "probabilities": {"Benign": 0.03, "Pre": 0.97},
        "label": "Pre",
        "confidence": 0.97,
        "abstained": False,
        "reason": None,
        "quality": {"ok": True},
        "image_sha256": None,
        "heatmap_sha256": None,
        "filename": None,
        "reviewer": None,
        "comment": None,
    }
    rec.update(kw)
    return rec


@pytest.fixture
def hub(hub_db):  # noqa: F811
    return Hub(hub_db, HubSettings(max_body_mb=1, max_batch=50))


def post(hub, records, **kw):
    return hub.client().post("/api/v1/results", json={"records": records, **kw}, headers=hub.dev())


def test_tokens_are_required_and_scoped(hub):
    c = hub.client()
    assert c.post("/api/v1/results", json={"records": []}).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    r = c.post("/api/v1/results", json={"records": []}, headers=bad)
    assert r.status_code == 401 and "bad token" in r.get_json()["reason"]
    assert c.post("/api/v1/results", json={"records": []}, headers=hub.usr()).status_code == 401
    assert c.get("/api/v1/stats", headers=hub.dev()).status_code == 401
    assert c.get("/api/v1/stats", headers=hub.usr()).get_json() == {"results": 0, "images": 0, "devices": 1}
    assert c.get("/api/v1/ping", headers=hub.dev()).get_json()["principal"] == "device:scope-1"


def test_image_put_is_verified_and_idempotent(hub):
    c = hub.client()
    assert c.head(f"/api/v1/images/{SHA}", headers=hub.dev()).status_code == 404
    r = c.put(f"/api/v1/images/{'a' * 64}", data=IMG, headers=hub.dev())
    assert r.status_code == 422 and "sha256" in r.get_json()["reason"]
    assert c.put(f"/api/v1/images/{SHA}", data=IMG, headers=hub.dev()).status_code == 201
    assert c.put(f"/api/v1/images/{SHA}", data=IMG, headers=hub.dev()).status_code == 200
    assert c.head(f"/api/v1/images/{SHA}", headers=hub.dev()).status_code == 200
    r = c.post("/api/v1/images/have", json={"sha256": [SHA, "b" * 64]}, headers=hub.dev())
    assert r.get_json() == {"have": [SHA], "missing": ["b" * 64]}
    assert c.get(f"/api/v1/images/{SHA}", headers=hub.dev()).status_code == 403
    assert c.get(f"/api/v1/images/{SHA}", headers=hub.usr()).data == IMG
    assert hub.stats()["images"] == 1


def test_batch_answers_per_record(hub):
    c = hub.client()
    c.put(f"/api/v1/images/{SHA}", data=IMG, headers=hub.dev())
    good = record(image_sha256=SHA)
    recs = [good, record(label=""), record(image_sha256="c" * 64), record(seq=2)]
    r = post(hub, recs, sent_at="2026-11-22T01:05:00Z")
    assert r.status_code == 200
    out = r.get_json()["results"]
    assert [a["status"] for a in out] == ["accepted", "rejected", "deferred", "accepted"]
    assert "label" in out[1]["reason"]
    assert "c" * 64 in out[2]["reason"]
    # a resend (the answer was lost) is a duplicate, never a second row
    r = post(hub, [good, recs[3]])
    assert [a["status"] for a in r.get_json()["results"]] == ["duplicate", "duplicate"]
    assert hub.stats()["results"] == 2
    got = c.get(f"/api/v1/results/{good['id']}", headers=hub.usr()).get_json()
    assert got["label"] == "Pre" and got["hub"]["device"] == "scope-1" and got["hub"]["received_at"]
    listed = c.get("/api/v1/results?device=scope-1", headers=hub.usr()).get_json()["results"]
    assert {x["id"] for x in listed} == {good["id"], recs[3]["id"]}


def test_malformed_is_422_with_reason(hub):
    r = post(hub, [record(confidence=7)])
    assert r.status_code == 422
    assert "confidence" in r.get_json()["reason"]
    r = hub.client().post("/api/v1/results", data=b"{not json", headers=hub.dev())
    assert r.status_code == 422 and "JSON" in r.get_json()["reason"]
    r = hub.client().post("/api/v1/results", json={"recs": []}, headers=hub.dev())
    assert r.status_code == 422
    for bad in (record(id="nope"), record(source="fax"), record(captured_at="yesterday"), record(seq=-1)):
        assert post(hub, [bad]).status_code == 422
    assert hub.stats()["results"] == 0


def test_oversized_bodies_are_413(hub):
    c = hub.client()
    big = b"x" * (1024 * 1024 + 10)
    assert c.post("/api/v1/results", data=big, headers=hub.dev()).status_code == 413
    bomb = gzip.compress(b" " * (3 * 1024 * 1024))  # small on the wire, too big unpacked
    r = c.post("/api/v1/results", data=bomb, headers={**hub.dev(), "Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert post(hub, [record() for _ in range(51)]).status_code == 413


def test_gzip_bodies_are_accepted(hub):
    body = gzip.compress(json.dumps({"records": [record()]}).encode())
    r = hub.client().post(
        "/api/v1/results",
        data=body,
        headers={**hub.dev(), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.get_json()["counts"]["accepted"] == 1


def test_clock_skew_is_flagged_and_receive_time_kept(hub):
    ok = post(hub, [record()], sent_at=_now_iso()).get_json()
    assert abs(ok["clock_skew_s"]) < 60
    r = post(hub, [rec := record()], sent_at="1970-01-01T00:10:00Z").get_json()  # device with no RTC
    assert r["clock_skew_s"] < -1e9
    got = hub.client().get(f"/api/v1/results/{rec['id']}", headers=hub.usr()).get_json()
    assert got["hub"]["skew_flag"] is True and got["captured_at"] == rec["captured_at"]
    future = post(hub, [rec2 := record(captured_at="2099-01-01T00:00:00Z")], sent_at=_now_iso()).get_json()
    assert future["counts"]["accepted"] == 1
    assert hub.client().get(f"/api/v1/results/{rec2['id']}", headers=hub.usr()).get_json()["hub"]["skew_flag"]


def test_review_needs_review_of_and_another_devices_uuid_is_rejected(hub):
    assert post(hub, [record(kind="review", source="review")]).status_code == 422
    rec = record()
    assert post(hub, [rec]).status_code == 200
    with hub.sessions() as s:
        from hub import tokens

        other = tokens.add_device(s, "scope-2")
    r = hub.client().post(
        "/api/v1/results", json={"records": [rec]}, headers={"Authorization": f"Bearer {other}"}
    )
    assert r.status_code == 422 and "another device" in r.get_json()["results"][0]["reason"]


def test_concurrent_resends_store_each_record_once(hub):
    """Two instances receiving the same batch at once (a client retry racing the first try)."""
    recs = [record(seq=i) for i in range(40)]
    answers = []

    def send():
        answers.append(post(hub, recs).get_json()["results"])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hub.stats()["results"] == 40
    for i in range(40):
        statuses = sorted(a[i]["status"] for a in answers)
        assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 3


def _now_iso():
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


def sample(**kw):
    s = {
        "id": str(uuid.uuid4()),
        "slide_id": "LAB-2026-0042",
        "notes": "",
        "status": "open",
        "started_at": "2026-11-22T01:00:00.000Z",
        "finished_at": None,
        "created_by": "tech",
        "summary": None,
    }
    s.update(kw)
    return s


def test_samples_are_upserted_and_never_reopened(hub):
    c = hub.client()
    s = sample()

    def send(*items):
        return c.post("/api/v1/samples", json={"samples": list(items)}, headers=hub.dev())

    assert send(s).get_json()["results"][0]["status"] == "stored"
    done = {
        **s,
        "status": "finished",
        "finished_at": "2026-11-22T02:00:00Z",
        "summary": {"call": "suspicious"},
    }
    assert send(done).status_code == 200
    assert send(s).status_code == 200  # a stale "open" arriving late must not reopen it
    from hub.models import Sample

    with hub.sessions() as db:
        row = db.get(Sample, s["id"])
        assert row.status == "finished" and json.loads(row.summary_json) == {"call": "suspicious"}
    r = send(sample(slide_id=""))
    assert r.status_code == 422 and "slide_id" in r.get_json()["results"][0]["reason"]
    assert c.post("/api/v1/samples", json={"samples": [s]}, headers=hub.usr()).status_code == 401
