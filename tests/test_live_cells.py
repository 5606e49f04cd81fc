"""The live page's cell keys: `cells`, `frame_size`, `field_line` and `slide` pass the live result's
whitelist field by field (a malformed cell is dropped whole, a missing colour gets the palette's), and
the page gets the field line, legend and running slide count in the reader's language."""

from __future__ import annotations

import json

import pytest
from openapikit import check, load
from webkit import login, make_app, smear

from device.web import live_cells
from device.web.live import live_payload, sse_events

LYMPH = {
    "kind": "white",
    "state": "not_blast",
    "label": "lymphocyte",
    "display": "Lymphocyte",
    "colour": "#56B4E9",
}
CELLS = [
    {"index": 0, "box": [10, 12, 40, 44], **LYMPH},
    {"index": 1, "box": [50, 12, 80, 44], **LYMPH},
    {"index": 2, "box": [90, 20, 130, 60], "kind": "white", "state": "blast", "label": "blast",
     "display": "Blast", "colour": "#D55E00"},
    {"index": 3, "box": [5, 70, 35, 95], "kind": "white", "state": "unclassified", "label": None,
     "display": "unclassified", "colour": "#E69F00"},
]  # fmt: skip
SLIDE = {
    "counted": 42,
    "target": 100,
    "blasts": 3,
    "blast_pct": 7.142857,
    "call": "count_more",
    "call_text": "count more cells: 42 of 100 (3 blasts, 7.1%, 95% CI 1.5%–19.5%: not clearly above 2%)",
    "unclassified": 0,
    "sample_id": "s-1",
}
RESULT = {
    "label": "blast",
    "abstained": True,
    "reason": "1 of 4 white cells unclassified",
    "captured_at": "2026-12-07T06:18:58.000Z",
    "quality": {"ok": True, "reasons": []},
    "state": "counted",
    "display": "4 white cells: 1 blast, 2 lymphocytes, 1 unclassified",
    "cells": CELLS,
    "frame_size": [160, 120],
    "field_line": "4 white cells: 1 blast, 2 lymphocytes, 1 unclassified",
    "slide": SLIDE,
    "rgb": "not for the page",
}


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)[0]


def _in(app, lang="en"):
    return app.test_request_context("/", headers={"Accept-Language": lang})


def test_cell_keys_pass_the_whitelist_with_their_types(app):
    with _in(app):
        got = live_payload(RESULT)
    assert got["cells"] == CELLS
    assert got["frame_size"] == [160, 120]
    assert got["field_line"] == RESULT["field_line"]
    assert got["slide"] == SLIDE
    assert "rgb" not in got
    json.dumps(got)  # what the SSE stream sends


def test_malformed_cells_are_dropped_whole_and_missing_colours_filled():
    bad = [
        {**CELLS[0], "box": [10, 12, 5, 44]},  # x1 < x0
        {**CELLS[0], "box": [1, 2, 3]},
        {**CELLS[0], "state": "maybe"},
        {**CELLS[0], "index": True},
        {**CELLS[0], "label": 7},
        {**CELLS[0], "box": [0, 0, float("nan"), 4]},
        {**CELLS[0], "kind": "dust"},
        "not a cell",
    ]
    fill = [
        {**CELLS[2], "colour": "red; background:url(x)"},
        {**CELLS[3], "colour": None},
        {**CELLS[0], "colour": "#12345"},
        {**CELLS[3], "kind": "platelet", "colour": None},
    ]
    got = live_cells.cell_keys({"cells": bad + fill}, ["blast", "lymphocyte"])["cells"]
    assert [c["colour"] for c in got] == [
        live_cells.BLAST_COLOUR,
        live_cells.UNCLASSIFIED_COLOUR,
        live_cells.TYPE_COLOURS[1],
        live_cells.NOT_COUNTED_COLOUR,
    ]
    many = live_cells.cell_keys({"cells": [CELLS[0]] * (live_cells.MAX_CELLS + 5)})["cells"]
    assert len(many) == live_cells.MAX_CELLS


def test_malformed_frame_size_and_slide_are_left_out():
    got = live_cells.cell_keys(
        {"cells": [], "frame_size": [0, 10], "slide": {**SLIDE, "blasts": 50}, "field_line": 3}
    )
    assert got == {"cells": []}
    assert live_cells.slide_of({**SLIDE, "blast_pct": 140}) is None
    assert live_cells.slide_of({**SLIDE, "unclassified": -1}) is None
    assert live_cells.slide_of({k: v for k, v in SLIDE.items() if k != "unclassified"}).unclassified == 0
    assert live_cells.slide_of({**SLIDE, "blast_pct": None}).blast_pct is None


def test_words_in_english(app):
    with _in(app):
        cv = live_payload(RESULT)["view"]["cells"]
    assert cv["field_line"] == RESULT["field_line"]  # the pipeline's own line
    assert cv["slide"]["line"] == "42 of 100 white cells counted; 3 blasts (7.1%)"
    assert cv["slide"]["decided"] is False and cv["slide"]["call_words"] == ""
    assert cv["slide"]["details"] == SLIDE["call_text"]
    assert [(e["state"], e["text"]) for e in cv["legend"]] == [
        ("not_blast", "Lymphocyte"),
        ("blast", "Blast"),
        ("unclassified", "unclassified — review"),
    ]
    platelet = {**CELLS[3], "index": 4, "kind": "platelet", "display": "platelet", "colour": "#C7C7C7"}
    with _in(app):
        cv = live_payload({**RESULT, "cells": [*CELLS, platelet], "slide": {**SLIDE, "unclassified": 2}})
    assert cv["view"]["cells"]["legend"][-1]["text"] == "platelet — not counted"
    assert (
        cv["view"]["cells"]["slide"]["line"]
        == "42 of 100 white cells counted; 3 blasts (7.1%); 2 unclassified"
    )
    with _in(app):
        sus = live_payload({**RESULT, "slide": {**SLIDE, "call": "suspicious"}})["view"]["cells"]["slide"]
    assert sus["decided"] and sus["call_words"] == "Suspicious — refer to a hematologist"


def test_words_in_french(app):
    no_blasts = {**SLIDE, "counted": 100, "blasts": 0, "blast_pct": 0.0, "call": "no_blasts_seen"}
    with _in(app, "fr"):
        cv = live_payload({**RESULT, "slide": no_blasts})["view"]["cells"]
    assert cv["field_line"] == "4 globules blancs : 1 blaste, 2 × Lymphocyte, 1 non classé"
    platelet = {**CELLS[3], "index": 4, "kind": "platelet", "display": "platelet"}
    with _in(app, "fr"):
        line = live_payload({**RESULT, "cells": [*CELLS, platelet]})["view"]["cells"]["field_line"]
    assert line.endswith("1 non classé (non comptés : 1 × platelet)") and line.startswith("4 globules")
    assert cv["slide"]["line"].startswith("100 sur 100 globules blancs comptés ; 0 blaste (0,0")
    assert cv["slide"]["call_words"] == "Aucun blaste vu dans 100 globules blancs"
    assert cv["legend"][2]["text"] == "non classé — à revoir"


def test_a_field_result_keeps_its_view_unchanged(app):
    with _in(app):
        view = live_payload({"label": "Pre", "abstained": False, "captured_at": None})["view"]
    assert "cells" not in view


def test_the_event_stream_carries_the_cell_keys(app, tmp_path):
    svc = app.extensions["smearscope"].services
    svc.push_frame(smear())
    result = {**RESULT, "captured_at": None}
    svc.live.publish_result(result, smear(), None)
    with _in(app):
        events = sse_events(svc.live, -1, max_s=0.01, keepalive_s=0.01)
        next(events)  # retry
        data = json.loads(next(events).split("data: ", 1)[1])
    assert len(data["cells"]) == 4 and data["slide"]["counted"] == 42
    assert data["view"]["cells"]["slide"]["line"].startswith("42 of 100")


def test_a_field_not_screened_is_a_refusal_not_a_doubt(app):
    refused = {
        "state": "refused",
        "label": "unclassified",
        "abstained": True,
        "reason": "scale unknown: the red cells cannot tell the magnification (2 confident)",
        "display": "not screened: scale unknown: the red cells cannot tell the magnification",
        "cells": [],
        "field_line": "",
    }
    with _in(app):
        view = live_payload(refused)["view"]
    assert view["has_call"] is False
    assert view["advice"]["refused"] and view["advice"]["kind"] == "scale_unknown"
    with _in(app, "fr"):
        assert live_payload(refused)["view"]["cells"]["field_line"] == ""  # no "0 white cells"


def test_the_api_answer_with_cells_matches_the_document(app):
    svc = app.extensions["smearscope"].services
    svc.live.publish_result({**RESULT, "captured_at": "2026-12-07T06:18:58.000Z"}, smear(), None)
    client = app.test_client()
    login(client)
    r = client.get("/api/v1/live")
    assert r.status_code == 200 and len(r.get_json()["result"]["cells"]) == len(CELLS)
    check(load("openapi.yaml"), "/api/v1/live", "GET", r)


def test_the_call_box_says_when_the_field_models_called_the_unread_cells(app):
    unread = [{**c, "state": "unclassified", "label": None} for c in CELLS]
    called = {"state": "malignant", "decided": True, "display": "Pre-B ALL (malignant)", "label": "Pre"}
    with _in(app):
        box = live_payload({**RESULT, "cells": unread, "second_reading": called})["view"]["cells"]["call"]
    assert box["kind"] == "malignant" and "field models" in box["title"]
    cleared = {**called, "state": "not_malignant", "display": "Benign"}
    with _in(app):
        box = live_payload({**RESULT, "cells": unread, "second_reading": cleared})["view"]["cells"]["call"]
    assert box["kind"] == "uncertain" and "read it as benign" in box["sub"]
    with _in(app):  # a reading that called nothing, or a malformed one, changes nothing
        for second in ({**called, "decided": False}, {"state": "sure", "decided": True}, "malignant"):
            box = live_payload({**RESULT, "cells": unread, "second_reading": second})["view"]["cells"]["call"]
            assert box["kind"] == "uncertain" and "benign" not in box["sub"]
    assert live_cells.second_of({"state": "malignant", "decided": "yes"}) is None
