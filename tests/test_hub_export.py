"""`smearscope-hub export-dataset` and the admins' dashboard zip: reviewed fields out of the hub as a
training folder, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hubkit import Hub, hub_db, jpeg, pg_server  # noqa: F401 - fixtures
from test_hub_api import record

from hub import tokens
from hub.cli import main as hub_main
from hub.export.dataset import ExportError, ExportFilter, select_entries, write_export


class Fleet:
    """A hub with two devices, images and records covering every export rule."""

    def __init__(self, url: str):
        self.url = url
        self.hub = Hub(url)
        with self.hub.sessions() as s:
            self.token2 = tokens.add_device(s, "scope-2")
        self.rng = np.random.default_rng(0)
        self.sample = str(uuid.uuid4())
        c = self.hub.client()
        self.img = {k: jpeg(self.rng) for k in ("fixed", "agree", "unsure", "other", "loose", "evil", "late")}
        self.sha = {k: hashlib.sha256(v).hexdigest() for k, v in self.img.items()}
        for k, data in self.img.items():
            headers = self._h2() if k == "other" else self.hub.dev()
            assert c.put(f"/api/v1/images/{self.sha[k]}", data=data, headers=headers).status_code == 201
        s = self.sample
        t = "2026-11-10T09:00:00.000Z"
        self.fixed = record(seq=1, sample_id=s, label="Pre", image_sha256=self.sha["fixed"], captured_at=t)
        self.agree = record(
            seq=2, sample_id=s, label="Pro", image_sha256=self.sha["agree"], captured_at=t, um_per_px=0.25
        )
        self.unsure = record(
            seq=3, sample_id=s, label="Early", abstained=True, confidence=0.4, image_sha256=self.sha["unsure"]
        )
        self.loose = record(seq=4, sample_id=None, label="Benign", image_sha256=self.sha["loose"])
        self.evil = record(seq=5, sample_id=s, label="../../etc", image_sha256=self.sha["evil"])
        self.late = record(
            seq=6, sample_id=s, label="Pre", image_sha256=self.sha["late"], captured_at="2026-12-01T00:00:00Z"
        )
        rv = self._review
        # Two reviews of `fixed`: the later one (higher seq) wins even though it is sent first.
        reviews = [
            rv(self.fixed, 21, "Benign", '=HYPERLINK("x")', "2026-11-10T10:05:00Z"),
            rv(self.fixed, 20, "Early", "tech-a", "2026-11-10T10:00:00Z"),
            rv(self.agree, 22, "Pro", "tech-b", "2026-11-10T10:01:00Z"),
            rv(self.loose, 23, "Benign", "tech-a", "2026-11-10T10:02:00Z"),
            rv(self.evil, 24, "../../etc", "tech-a", "2026-11-10T10:03:00Z"),
            rv(self.late, 25, "Pro", "tech-a", "2026-12-01T01:00:00Z"),
        ]
        recs = [self.fixed, self.agree, self.unsure, self.loose, self.evil, self.late, *reviews]
        r = c.post("/api/v1/results", json={"records": recs}, headers=self.hub.dev())
        assert r.get_json()["counts"]["accepted"] == len(recs), r.get_json()
        self.other = record(
            seq=1, sample_id=str(uuid.uuid4()), label="Benign", image_sha256=self.sha["other"]
        )
        other_rv = rv(self.other, 2, "Benign", "tech-c", "2026-11-11T10:00:00Z")
        r = c.post("/api/v1/results", json={"records": [self.other, other_rv]}, headers=self._h2())
        assert r.get_json()["counts"]["accepted"] == 2

    def _h2(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token2}"}

    @staticmethod
    def _review(orig: dict, seq: int, label: str, reviewer: str, at: str) -> dict:
        return record(
            seq=seq,
            sample_id=orig["sample_id"],
            kind="review",
            source="review",
            review_of=orig["id"],
            label=label,
            confidence=1.0,
            image_sha256=orig["image_sha256"],
            reviewer=reviewer,
            captured_at=at,
        )

    def export(self, out: Path, *extra: str) -> dict:
        assert hub_main(["--db", self.url, "export-dataset", "--out", str(out), *extra]) == 0
        return json.loads((out / "manifest.json").read_text())


@pytest.fixture
def fleet(hub_db):  # noqa: F811
    return Fleet(hub_db)


def _by_record(doc: dict) -> dict[str, dict]:
    return {e["record_id"]: e for e in doc["images"]}


def test_export_writes_reviewed_images_by_label_with_a_manifest(fleet, tmp_path, capsys):
    out = tmp_path / "export"
    doc = fleet.export(out)
    assert doc["format"] == "smearscope-dataset" and "not a diagnosis" in doc["disclaimer"]
    got = _by_record(doc)
    # Reviewed only: the unsure record (no review) is left out; the unsafe label never becomes a folder.
    assert set(got) == {
        fleet.fixed["id"],
        fleet.agree["id"],
        fleet.loose["id"],
        fleet.late["id"],
        fleet.other["id"],
    }
    assert doc["counts"]["skipped"] == {"label not usable as a folder name": 1, "not reviewed": 1}
    assert not (tmp_path / "etc").exists() and not any(p.name == ".." for p in out.rglob("*"))
    fixed = got[fleet.fixed["id"]]
    assert fixed["label"] == "Benign" and fixed["reviewed_label"] == "Benign"  # the latest review wins
    assert (
        fixed["model_label"] == "Pre" and fixed["model_confidence"] == 0.97 and not fixed["model_abstained"]
    )
    assert (
        fixed["reviewed_at"] == "2026-11-10T10:05:00Z" and fixed["captured_at"] == "2026-11-10T09:00:00.000Z"
    )
    assert fixed["device"] == "scope-1" and fixed["group"] == fleet.sample == fixed["sample_id"]
    assert fixed["path"] == f"Benign/{fleet.fixed['id']}.jpg" and fixed["um_per_px"] is None
    agree = got[fleet.agree["id"]]
    assert agree["label"] == "Pro" == agree["model_label"] and agree["reviewer"] == "tech-b"
    assert agree["um_per_px"] == 0.25
    assert got[fleet.loose["id"]]["group"] == fleet.loose["id"]  # outside a sample: its own group
    assert got[fleet.other["id"]]["device"] == "scope-2"
    for e in doc["images"]:
        data = (out / e["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["image_sha256"] and e["reviewed"] is True
    assert sorted(p.name for p in out.iterdir()) == ["Benign", "Pro", "manifest.csv", "manifest.json"]
    assert doc["counts"]["disagreements"] == 2 and doc["counts"]["per_label"] == {"Benign": 3, "Pro": 2}
    rows = list(csv.DictReader(io.StringIO((out / "manifest.csv").read_text())))
    assert {r["record_id"] for r in rows} == set(got)
    row = next(r for r in rows if r["record_id"] == fleet.fixed["id"])
    assert row["reviewer"] == '\'=HYPERLINK("x")'  # a spreadsheet will not run it
    assert row["reviewed"] == "true" and row["um_per_px"] == ""
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["images"] == 5


def test_export_filters(fleet, tmp_path):
    d = fleet.export(tmp_path / "a", "--device", "scope-2")
    assert set(_by_record(d)) == {fleet.other["id"]} and d["filters"]["devices"] == ["scope-2"]
    d = fleet.export(tmp_path / "b", "--disagreements-only")
    assert set(_by_record(d)) == {fleet.fixed["id"], fleet.late["id"]}
    d = fleet.export(tmp_path / "c", "--since", "2026-11-30")  # by the latest review's time
    assert set(_by_record(d)) == {fleet.late["id"]}
    d = fleet.export(tmp_path / "d", "--since", "2026-11-10T10:04:00Z", "--device", "scope-1")
    assert set(_by_record(d)) == {fleet.fixed["id"], fleet.late["id"]}
    d = fleet.export(tmp_path / "e", "--include-unreviewed", "--device", "scope-1")
    unsure = _by_record(d)[fleet.unsure["id"]]
    assert unsure["reviewed"] is False and unsure["label"] == "Early" and unsure["reviewed_label"] is None
    assert unsure["path"].startswith("Early/") and d["counts"]["unreviewed"] == 1
    assert (
        hub_main(["--db", fleet.url, "export-dataset", "--out", str(tmp_path / "f"), "--device", "nope"]) == 1
    )
    assert (
        hub_main(["--db", fleet.url, "export-dataset", "--out", str(tmp_path / "f"), "--since", "soon"]) == 1
    )
    assert not (tmp_path / "f").exists()


def test_reruns_are_idempotent_and_replace_only_an_earlier_export(fleet, tmp_path):
    tmp_path = tmp_path / "out"
    out = tmp_path / "export"
    fleet.export(out)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fleet.export(out)
    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert again == first
    fleet.export(out, "--device", "scope-2")  # narrower: files of the old export are gone
    assert len([p for p in out.rglob("*.jpg")]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temp folders left behind
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"x")
    assert hub_main(["--db", fleet.url, "export-dataset", "--out", str(mine)]) == 1
    assert (mine / "holiday.jpg").read_bytes() == b"x"


def test_a_failed_export_leaves_the_earlier_one_whole(fleet, tmp_path):
    tmp_path = tmp_path / "out"
    out = tmp_path / "export"
    before = fleet.export(out)
    with fleet.hub.sessions() as s:
        sel = select_entries(s, ExportFilter(include_unreviewed=True))

        def broken(sha: str) -> bytes:
            raise ExportError("disk went away")

        with pytest.raises(ExportError):
            write_export(sel, ExportFilter(include_unreviewed=True), out, broken)
    assert json.loads((out / "manifest.json").read_text()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_dashboard_zip_is_for_admins_and_matches_the_cli_export(fleet, tmp_path):
    hub = fleet.hub
    c = hub.client()
    c.post("/login", data={"token": hub.user_token})
    assert "Training data export" not in c.get("/").get_data(as_text=True)
    assert c.get("/export/dataset").status_code == 403
    assert c.get("/export/dataset.zip").status_code == 403
    assert hub_main(["--db", fleet.url, "users", "admin", "reader"]) == 0
    assert "Training data export" in c.get("/").get_data(as_text=True)
    page = c.get("/export/dataset?device=scope-1&disagreements_only=1")
    assert page.status_code == 200 and "2 images" in page.get_data(as_text=True)
    assert "not a diagnosis" in page.get_data(as_text=True)
    assert c.get("/export/dataset?since=soon").status_code == 400
    r = c.get("/export/dataset.zip?device=scope-1")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    assert zf.testzip() is None
    root = zf.namelist()[0].split("/")[0]
    zdoc = json.loads(zf.read(f"{root}/manifest.json"))
    cli = fleet.export(tmp_path / "cli", "--device", "scope-1")
    assert zdoc == cli
    for e in cli["images"]:
        assert zf.read(f"{root}/{e['path']}") == (tmp_path / "cli" / e["path"]).read_bytes()
    assert hub_main(["--db", fleet.url, "users", "admin", "reader", "--revoke"]) == 0
    assert c.get("/export/dataset.zip").status_code == 403
    c.post("/logout")
    assert c.get("/export/dataset.zip").status_code == 302  # not logged in: to the login page


def test_users_add_admin(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    assert hub_main(["--db", url, "users", "add", "boss", "--admin"]) == 0
    assert hub_main(["--db", url, "users", "add", "reader"]) == 0
    assert hub_main(["--db", url, "users", "admin", "ghost"]) == 1
    from sqlalchemy import select

    from hub import db
    from hub.models import User

    with db.session_factory(db.make_engine(url))() as s:
        assert dict(s.execute(select(User.name, User.admin)).all()) == {"boss": True, "reader": False}


def test_another_devices_review_does_not_count(fleet, tmp_path):
    """Rows a hostile device stored before the hub enforced ownership must not label training data."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from hub.models import Device, Result

    with fleet.hub.sessions() as s:
        b = s.scalar(select(Device.id).where(Device.name == "scope-2"))
        for seq, orig in ((98, fleet.unsure), (99, fleet.fixed)):
            s.add(
                Result(
                    id=str(uuid.uuid4()), device_id=b, seq=seq, sample_id=orig["sample_id"],
                    captured_at="2026-11-20T00:00:00Z", received_at=datetime.now(UTC), source="review",
                    kind="review", review_of=orig["id"], label="Pro", confidence=1.0, abstained=False,
                    image_sha256=orig["image_sha256"], record_json="{}",
                )
            )  # fmt: skip
        s.commit()
    got = _by_record(fleet.export(tmp_path / "x"))
    assert fleet.unsure["id"] not in got  # still unreviewed
    assert got[fleet.fixed["id"]]["label"] == "Benign"  # its own device's latest review
