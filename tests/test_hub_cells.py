"""The hub's per-cell results: checked, stored once per record (SQLite and PostgreSQL), a station's
later cell review copied on a resend without duplicating anything, shown on the dashboard, exported as
CSV rows; the shape is the station's (common/cell_fields.py = device CellRecord.to_dict keys)."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid

import cv2
import numpy as np
import pytest
from hubkit import Hub, hub_db, pg_server  # noqa: F401 - fixtures
from sqlalchemy import func, select
from test_hub_api import record as field_record

from common import cell_fields
from hub.app import HubSettings
from hub.cells.store import MAX_CELLS
from hub.models import Cell, Result


def record(**kw):
    """A 'cells' record (a field counted cell by cell) unless `kind` says otherwise."""
    return field_record(**{"kind": "cells", "label": "NO_BLASTS_SEEN", **kw})


def cell(index: int, **kw):
    c = {
        "index": index,
        "box": [10 + 40 * index, 20, 40 + 40 * index, 50],
        "x": 25.0 + 40 * index,
        "y": 35.0,
        "kind": "white",
        "state": "not_blast",
        "label": "lymphocyte",
        "p_blast": 0.02,
        "probabilities": {"blast_pre": 0.02, "lymphocyte": 0.98},
        "reason": None,
        "reviewed_label": None,
        "reviewer": None,
        "reviewed_at": None,
    }
    c.update(kw)
    return c


@pytest.fixture
def hub(hub_db):  # noqa: F811
    return Hub(hub_db, HubSettings(max_body_mb=2, max_batch=50))


def post(hub, records):
    return hub.client().post("/api/v1/results", json={"records": records}, headers=hub.dev())


def stored_cells(hub, rid: str) -> list[Cell]:
    with hub.sessions() as s:
        return list(s.scalars(select(Cell).where(Cell.result_id == rid).order_by(Cell.cell_index)))


def test_the_cell_keys_are_the_stations():
    from device.cells.record import NOT_A_CELL, STATES, CellRecord

    c = CellRecord(
        index=0, box=(1, 2, 3, 4), x=2.0, y=3.0, kind="white", state="blast", label=None, p_blast=0.9
    )
    assert tuple(c.to_dict()) == cell_fields.KEYS
    assert STATES == cell_fields.STATES and NOT_A_CELL == cell_fields.NOT_A_CELL


def test_cells_are_stored_once_and_read_back_in_the_stations_shape(hub):
    rec = record(cells=[cell(0), cell(1, state="blast", label=None, p_blast=0.95)])
    r = post(hub, [rec])
    assert r.status_code == 200 and r.get_json()["results"][0]["status"] == "accepted"
    assert [c.cell_index for c in stored_cells(hub, rec["id"])] == [0, 1]
    got = hub.client().get(f"/api/v1/results/{rec['id']}", headers=hub.usr()).get_json()
    assert got["cells"] == rec["cells"]  # every key, as sent
    listed = hub.client().get("/api/v1/results", headers=hub.usr()).get_json()["results"]
    assert listed[0]["cells"] == rec["cells"]
    # a plain resend (lost answer) stores nothing twice
    again = post(hub, [rec]).get_json()["results"][0]
    assert again == {"id": rec["id"], "status": "duplicate"}
    assert len(stored_cells(hub, rec["id"])) == 2 and hub.result_ids() == [rec["id"]]


def test_a_cell_review_on_the_station_reaches_the_hub_on_resend(hub):
    rec = record(cells=[cell(0), cell(1)])
    assert post(hub, [rec]).get_json()["results"][0]["status"] == "accepted"
    reviewed = dict(
        rec,
        cells=[
            cell(0),
            cell(1, reviewed_label="blast_pre", reviewer="ana", reviewed_at="2026-11-22T02:00:00Z"),
        ],
    )
    answer = post(hub, [reviewed]).get_json()["results"][0]
    assert answer == {"id": rec["id"], "status": "duplicate", "cells_reviewed": 1}
    cells = stored_cells(hub, rec["id"])
    assert [(c.reviewed_label, c.reviewer) for c in cells] == [(None, None), ("blast_pre", "ana")]
    assert cells[1].reviewed_at == "2026-11-22T02:00:00.000Z" and cells[1].state == "not_blast"
    # an older review or a resend without the review never replaces the newer one
    older = dict(
        rec, cells=[cell(1, reviewed_label="lymphocyte", reviewer="bo", reviewed_at="2026-11-22T01:00:00Z")]
    )
    assert "cells_reviewed" not in post(hub, [older]).get_json()["results"][0]
    assert post(hub, [rec]).get_json()["results"][0]["status"] == "duplicate"
    assert stored_cells(hub, rec["id"])[1].reviewed_label == "blast_pre"
    newer = dict(
        rec,
        cells=[cell(1, reviewed_label="not_a_cell", reviewer="cy", reviewed_at="2026-11-22T03:00:00+00:00")],
    )
    assert post(hub, [newer]).get_json()["results"][0]["cells_reviewed"] == 1
    assert stored_cells(hub, rec["id"])[1].reviewed_label == "not_a_cell"
    with hub.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 1
        assert s.scalar(select(func.count()).select_from(Cell)) == 2


def test_another_devices_resend_cannot_review_its_cells(hub):
    from hub import tokens

    with hub.sessions() as s:
        other = tokens.add_device(s, "scope-2")
    rec = record(cells=[cell(0)])
    post(hub, [rec])
    forged = dict(
        rec, cells=[cell(0, reviewed_label="blast_pre", reviewer="x", reviewed_at="2026-12-01T00:00:00Z")]
    )
    r = hub.client().post(
        "/api/v1/results", json={"records": [forged]}, headers={"Authorization": f"Bearer {other}"}
    )
    assert r.get_json()["results"][0]["status"] == "rejected"
    assert stored_cells(hub, rec["id"])[0].reviewed_label is None


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        ("x", "cells: must be a list"),
        ([cell(0), cell(0)], "index 0 appears twice"),
        ([{**cell(0), "index": -1}], "cells[0].index"),
        ([{**cell(0), "index": True}], "cells[0].index"),
        ([cell(0, box=[1, 2, 3])], "cells[0].box"),
        ([cell(0, box=[30, 2, 10, 40])], "x0 < x1"),
        ([cell(0, box=[0, 0, 10, 10**6])], "cells[0].box"),
        ([cell(0, x=-1.0)], "cells[0].x"),
        ([cell(0, state="maybe")], "cells[0].state"),
        ([cell(0, kind="rbc")], "cells[0].kind"),
        ([cell(0, p_blast=1.5)], "cells[0].p_blast"),
        ([cell(0, probabilities={"a": 2})], "cells[0].probabilities.a"),
        ([cell(0, probabilities=[0.1])], "cells[0].probabilities"),
        ([cell(0, probabilities={f"l{i}": 0.0 for i in range(65)})], "at most 64"),
        ([cell(0, label="a\u202eb")], "cells[0].label"),
        ([cell(0, reviewed_label="blast_pre", reviewed_at=None)], "cells[0].reviewed_at"),
        ([cell(0, reviewed_label="")], "cells[0].reviewed_label"),
        ([cell(i) for i in range(MAX_CELLS + 1)], f"at most {MAX_CELLS} cells"),
        ({"kind": "classification", "cells": [cell(0)]}, "only a 'cells' record has cells"),
    ],
)
def test_bad_cells_reject_the_record_and_store_nothing(tmp_path, cells, reason):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", HubSettings(max_body_mb=2))
    rec = record(**cells) if isinstance(cells, dict) else record(cells=cells)
    r = post(hub, [rec])
    answer = r.get_json()["results"][0]
    assert r.status_code == 422 and answer["status"] == "rejected" and reason in answer["reason"]
    assert hub.result_ids() == [] and stored_cells(hub, rec["id"]) == []


def test_records_without_cells_still_work(hub):
    plain, empty = field_record(), field_record(cells=[])
    assert post(hub, [plain, empty]).get_json()["counts"]["accepted"] == 2
    got = hub.client().get(f"/api/v1/results/{plain['id']}", headers=hub.usr()).get_json()
    assert got["cells"] == []


def frame_jpeg() -> bytes:
    """A 160 x 120 frame whose colour says where a pixel is (green ramp along x, red along y)."""
    img = np.zeros((120, 160, 3), np.uint8)
    img[:, :, 1] = np.arange(160, dtype=np.uint8)[None, :]
    img[:, :, 2] = np.arange(120, dtype=np.uint8)[:, None] * 2
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def _hub_with_cells(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", HubSettings(max_body_mb=2))
    jpg = frame_jpeg()
    sha = hashlib.sha256(jpg).hexdigest()
    c = hub.client()
    assert c.put(f"/api/v1/images/{sha}", data=jpg, headers=hub.dev()).status_code == 201
    sample = str(uuid.uuid4())
    rec = record(
        sample_id=sample,
        image_sha256=sha,
        um_per_px=0.25,
        cells=[
            cell(0, box=[10, 20, 40, 50]),
            cell(1, box=[60, 20, 90, 50], state="blast", label=None, p_blast=0.96),
            cell(
                2,
                box=[100, 20, 130, 50],
                reviewed_label="not_a_cell",
                reviewer="ana",
                reviewed_at="2026-11-22T02:00:00Z",
            ),
            cell(3, box=[120, 80, 150, 110], state="unclassified", label=None, p_blast=0.5, reason="unsure"),
        ],
    )
    assert post(hub, [rec]).get_json()["counts"]["accepted"] == 1
    c.post("/login", data={"token": hub.user_token})
    return hub, c, rec, sample


def test_dashboard_lists_cells_with_thumbnails_and_the_count(tmp_path):
    hub, c, rec, sample = _hub_with_cells(tmp_path)
    page = c.get(f"/records/{rec['id']}").get_data(as_text=True)
    assert "lymphocyte" in page and "not_a_cell" in page and "ana" in page and "unsure" in page
    assert f"/cells/{rec['id']}/1.jpg" in page
    assert (
        "3 white cells" in page and "1 blasts" in page and "50.0 % blasts" in page and "1 not a cell" in page
    )
    thumb = c.get(f"/cells/{rec['id']}/1.jpg")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR).shape == (96, 96, 3)
    assert c.get(f"/cells/{rec['id']}/9.jpg").status_code == 404
    assert c.get("/records/not-a-uuid").status_code == 404
    samples = c.get("/samples").get_data(as_text=True)
    assert "1 blasts / 2 classified (50.0 %); N = 3, 1 unclassified" in samples
    # a cell-counted field is not voted on as a field: its call label never becomes the hub's slide call
    assert (
        "counted by cells: see the cell count" in samples and "<strong>NO_BLASTS_SEEN</strong>" not in samples
    )
    sample_page = c.get(f"/samples/{sample}").get_data(as_text=True)
    assert "3 white cells" in sample_page and rec["id"][:8] in sample_page
    c.post("/logout")
    assert c.get(f"/records/{rec['id']}").status_code == 302


def test_a_cells_record_awaits_review_until_its_blast_and_unclassified_cells_are_reviewed(tmp_path):
    from hub.cells.store import AWAITING_REVIEW_RULE

    hub, c, rec, _ = _hub_with_cells(tmp_path)  # one blast and one unclassified cell unreviewed
    calm = record(cells=[cell(0), cell(1, kind="platelet", state="blast", label=None)])  # nothing to review
    assert post(hub, [calm]).get_json()["counts"]["accepted"] == 1
    page = c.get("/review").get_data(as_text=True)
    assert f"/records/{rec['id']}" in page and "2 blast or unclassified cell(s) to review" in page
    assert f"/records/{calm['id']}" not in page and AWAITING_REVIEW_RULE in page
    at = "2026-11-22T03:00:00Z"
    half = dict(
        rec,
        cells=[cell(1, state="blast", label=None, reviewed_label="blast_pre", reviewer="bo", reviewed_at=at)],
    )
    assert post(hub, [half]).get_json()["results"][0]["cells_reviewed"] == 1
    assert "1 blast or unclassified cell(s) to review" in c.get("/review").get_data(as_text=True)
    done = dict(
        rec,
        cells=[
            cell(
                3,
                state="unclassified",
                label=None,
                reviewed_label="lymphocyte",
                reviewer="bo",
                reviewed_at=at,
            )
        ],
    )
    assert post(hub, [done]).get_json()["results"][0]["cells_reviewed"] == 1
    assert f"/records/{rec['id']}" not in c.get("/review").get_data(as_text=True)


def test_cells_csv_has_one_row_per_cell_with_formulas_defused(tmp_path):
    hub, c, rec, _ = _hub_with_cells(tmp_path)
    evil = record(
        seq=2, cells=[cell(0, reviewed_label="=cmd()", reviewer="@x", reviewed_at="2026-11-22T02:00:00Z")]
    )
    assert post(hub, [evil]).get_json()["counts"]["accepted"] == 1
    r = c.get("/export/cells.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == 5
    assert [(row["record_id"], row["index"]) for row in rows[:4]] == [(rec["id"], str(i)) for i in range(4)]
    assert (
        rows[1]["state"] == "blast"
        and rows[2]["reviewed_label"] == "not_a_cell"
        and rows[0]["um_per_px"] == "0.25"
    )
    assert rows[4]["reviewed_label"] == "'=cmd()" and rows[4]["reviewer"] == "'@x"


def test_cells_in_requests_and_answers_match_the_openapi_document(tmp_path):
    from openapikit import check, check_request, load

    spec = load("hub-openapi.yaml")
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    c = hub.client()
    rec = record(cells=[cell(0), cell(1, state="unclassified", label=None, p_blast=0.5, reason="unsure")])
    check_request(spec, "/api/v1/results", "POST", {"records": [rec]})
    check(spec, "/api/v1/results", "POST", post(hub, [rec]))
    seen = {"reviewed_label": "blast_pre", "reviewer": "ana", "reviewed_at": "2026-11-22T02:00:00Z"}
    reviewed = dict(rec, cells=[cell(0, **seen)])
    check_request(spec, "/api/v1/results", "POST", {"records": [reviewed]})
    assert check(spec, "/api/v1/results", "POST", post(hub, [reviewed]))["results"][0]["cells_reviewed"] == 1
    got = c.get(f"/api/v1/results/{rec['id']}", headers=hub.usr())
    assert check(spec, "/api/v1/results/{rid}", "GET", got)["cells"][0]["reviewed_label"] == "blast_pre"
    check(spec, "/api/v1/results", "GET", c.get("/api/v1/results", headers=hub.usr()))


def test_migration_0007_adds_and_drops_the_cells_table(hub_db):  # noqa: F811
    from alembic import command
    from sqlalchemy import inspect as sa_inspect

    from hub import db

    engine = db.make_engine(hub_db)
    cfg = db.alembic_config(hub_db)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006_acquisition")
    assert "cells" not in sa_inspect(engine).get_table_names()
    db.upgrade(engine)
    insp = sa_inspect(engine)
    assert insp.get_pk_constraint("cells")["constrained_columns"] == ["result_id", "cell_index"]
    assert {c["name"] for c in insp.get_columns("cells")} >= {
        "reviewed_label",
        "reviewer",
        "reviewed_at",
        "x0",
    }
    assert [fk["referred_table"] for fk in insp.get_foreign_keys("cells")] == ["results"]
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006_acquisition")
    assert "cells" not in sa_inspect(engine).get_table_names()
    engine.dispose()
