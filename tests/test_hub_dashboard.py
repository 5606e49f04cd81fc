"""The hub dashboard: token login, devices, samples with slide calls, review queue, CSV export."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid

from hubkit import Hub
from test_hub_api import IMG, SHA, record

DISCLAIMER = "screening aid for trained staff, not a diagnosis"


def _hub(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    c = hub.client()
    c.put(f"/api/v1/images/{SHA}", data=IMG, headers=hub.dev())
    sample = str(uuid.uuid4())
    recs = [record(seq=i, sample_id=sample, label="Pre", image_sha256=SHA) for i in range(3)]
    unsure = record(
        seq=3, sample_id=sample, label="Early", abstained=True, confidence=0.4, reason="low confidence"
    )
    reviewed = record(
        seq=4, sample_id=sample, label="Benign", abstained=True, confidence=0.5, image_sha256=SHA
    )
    review = record(
        seq=5, sample_id=sample, kind="review", source="review", review_of=reviewed["id"], label="Pre"
    )
    r = c.post("/api/v1/results", json={"records": [*recs, unsure, reviewed, review]}, headers=hub.dev())
    assert r.get_json()["counts"]["accepted"] == 6
    return hub, c, sample, unsure, reviewed


def test_login_required_and_token_login(tmp_path):
    hub, c, *_ = _hub(tmp_path)
    assert c.get("/").status_code == 302
    r = c.post("/login", data={"token": "wrong"})
    assert r.status_code == 401 and b"not a registered" in r.data
    assert c.post("/login", data={"token": hub.device_token}).status_code == 401  # a device is not a user
    assert c.post("/login", data={"token": hub.user_token}).status_code == 302
    page = c.get("/").get_data(as_text=True)
    assert "scope-1" in page and DISCLAIMER in page.lower() and "6 results" in page
    assert c.get("/static/hub.css").status_code == 200
    c.post("/logout")
    assert c.get("/").status_code == 302


def test_samples_review_queue_and_csv(tmp_path):
    hub, c, sample, unsure, reviewed = _hub(tmp_path)
    c.post("/login", data={"token": hub.user_token})
    samples = c.get("/samples").get_data(as_text=True)
    assert sample[:8] in samples and "<strong>Pre</strong>" in samples and DISCLAIMER in samples.lower()
    queue = c.get("/review").get_data(as_text=True)
    assert "Early" in queue and "low confidence" in queue  # abstained, not reviewed
    assert "Benign" not in queue  # abstained but reviewed: no longer awaiting review
    img = c.get(f"/images/{SHA}.jpg")
    assert img.status_code == 200 and hashlib.sha256(img.data).hexdigest() == SHA
    r = c.get("/export/results.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == 6 and {row["device"] for row in rows} == {"scope-1"}
    assert [row["seq"] for row in rows] == [str(i) for i in range(6)]
    assert next(row for row in rows if row["id"] == unsure["id"])["abstained"] == "1"
    assert {row["um_per_px"] for row in rows} == {""} and {row["profile"] for row in rows} == {""}  # unknown
