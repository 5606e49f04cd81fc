"""The station with a cell ensemble: the live result carries the contract's keys (cells outlined in
frame pixels, frame size, field line, the open sample's count); a captured field is not captured twice."""

from __future__ import annotations

import cv2
import pytest
from make_tiny_bundle import make_cell_bundle
from test_pipeline import make_config, services_factory, wait_for  # noqa: F401 - fixture
from test_screening import WHITES, frame, px

from device.errors import SmearscopeError


def still(tmp_path, img) -> object:
    d = tmp_path / "frames"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return d


def cells_result(s):
    got = s.live.latest_result()
    return got[1] if got and "cells" in got[1] else None


def test_live_result_of_a_cell_ensemble_has_the_contract_keys(tmp_path, services_factory):  # noqa: F811
    bundle = make_cell_bundle(tmp_path / "cells")
    img = frame()
    cfg = make_config(
        tmp_path, bundle, still(tmp_path, img), quality={"enabled": False}, store={"every_s": 3600.0}
    )
    s = services_factory(cfg)
    assert s.pipeline.screen is not None
    s.start()
    assert wait_for(lambda: cells_result(s) is not None)
    live = cells_result(s)
    assert live["state"] == "counted" and live["frame_size"] == [img.shape[1], img.shape[0]]
    assert live["field_line"].startswith("4 white cells: ")
    assert live["scale_source"] == "auto"  # no calibration profile: the red cells tell the scale
    boxes = [c["box"] for c in live["cells"] if c["kind"] == "white"]
    for x, y in WHITES:
        assert sum(b[0] <= px(x) < b[2] and b[1] <= px(y) < b[3] for b in boxes) == 1
    for c in live["cells"]:
        assert set(c) >= {"index", "box", "state", "label", "display", "colour"}
    assert "slide" not in live  # no sample open
    sample = s.store.open_sample("LAB-1", user="ann")
    assert wait_for(lambda: (cells_result(s) or {}).get("slide") is not None)
    slide = cells_result(s)["slide"]
    assert slide["sample_id"] == sample["id"] and slide["target"] == 100
    assert slide["counted"] + slide["unclassified"] == 4  # this field's cells, none stored yet
    assert set(slide) >= {"counted", "target", "blasts", "blast_pct", "call", "call_text"}


def test_a_captured_field_is_not_captured_again(tmp_path, tiny_bundle, sample_images, services_factory):  # noqa: F811
    cfg = make_config(
        tmp_path,
        tiny_bundle,
        sample_images[0].parent,
        store={"every_s": 3600.0},
        classifier={"settle_frames": 2},
        camera={
            "path": str(still(tmp_path, cv2.cvtColor(cv2.imread(str(sample_images[1])), cv2.COLOR_BGR2RGB)))
        },
    )
    s = services_factory(cfg)
    s.start()
    assert wait_for(lambda: s.pipeline.last_classified is not None)
    sample = s.store.open_sample("LAB-2", user="ann")
    rec = s.capture_field(sample["id"], "ann")
    with pytest.raises(SmearscopeError, match="already captured"):
        s.capture_field(sample["id"], "ann")
    assert s.store.sample_summary(sample["id"])["fields"] == 1
    other = s.store.open_sample("LAB-3", user="ann")
    assert s.capture_field(other["id"], "ann")["id"] != rec["id"]  # another sample may take it


def test_camera_and_uploads_store_cells_through_one_writer(tmp_path, services_factory):  # noqa: F811
    bundle = make_cell_bundle(tmp_path / "cells")
    img = frame()
    cfg = make_config(
        tmp_path, bundle, still(tmp_path, img), quality={"enabled": False}, store={"every_s": 3600.0}
    )
    s = services_factory(cfg)
    s.start()
    assert wait_for(lambda: s.pipeline.last_classified is not None)
    sample = s.store.open_sample("LAB-4", user="ann")
    rec = s.capture_field(sample["id"], "ann")
    assert rec["kind"] == "cells" and rec["source"] == "camera" and rec["sample_id"] == sample["id"]
    whites = [c for c in rec["cells"] if c["kind"] == "white"]
    assert len(whites) == 4 and s.store.image_path(rec["image_sha256"]).is_file()
    assert rec["quality"]["differential"]["counted"] + rec["quality"]["differential"]["unclassified"] == 4
    assert len(s.store.sample_cells(sample["id"])) == len(rec["cells"])
    with pytest.raises(SmearscopeError, match="already captured"):
        s.capture_field(sample["id"], "ann")
    slide = s.live.latest_result()[1]["slide"]
    assert slide["counted"] + slide["unclassified"] == 4  # the stored field, not counted twice

    up = s.classify_upload(img, filename="f.png", sample_id=sample["id"], user="ann", um_per_px="auto")
    assert up["kind"] == "cells" and up["source"] == "upload" and up["filename"] == "f.png"
    assert [c["box"] for c in up["cells"]] == [c["box"] for c in rec["cells"]]  # one path, one answer
    assert up["field"]["state"] == "counted" and up["field"]["field_line"].startswith("4 white cells")
    assert len(s.store.sample_cells(sample["id"])) == 2 * len(rec["cells"])

    refused = s.classify_upload(img, filename="r.png", user="ann", um_per_px=0.5)
    assert refused["abstained"] and refused["cells"] == [] and refused["field"]["state"] == "refused"
    assert "scale differs" in refused["reason"]
    empty = s.classify_upload(frame(whites=[]), filename="e.png", user="ann", um_per_px=0.25)
    assert empty["abstained"] and empty["field"]["state"] == "no_cells"
    assert empty["reason"] == "no white cells in view"


def test_a_still_field_is_screened_once_and_its_result_republished(tmp_path, services_factory):  # noqa: F811
    bundle = make_cell_bundle(tmp_path / "cells")
    cfg = make_config(
        tmp_path,
        bundle,
        still(tmp_path, frame()),
        quality={"enabled": False},
        store={"every_s": 3600.0},
        classifier={"settle_frames": 2},
    )
    s = services_factory(cfg)
    s.start()
    assert wait_for(lambda: s.telemetry.counts.get("republished", 0) >= 5)
    assert s.pipeline.field == 1  # detection and inference ran once for the still field
    live = s.live.latest_result()[1]
    assert live["republished"] and live["field_line"].startswith("4 white cells")


def test_the_check_made_while_the_field_settled_is_not_made_again():
    from device.optics.scalecheck import ScaleCheck
    from device.screening.prepare import prepare_frame
    from device.screening.stages import ScreenSettings

    def no_estimate(*a, **kw):
        raise AssertionError("the red cells were measured again")

    ahead = ScaleCheck(True, True, 0.25, 0.26, 1.04, "scale check ok")
    p = prepare_frame(frame(), 0.25, ScreenSettings(), source="profile:x", estimator=no_estimate, check=ahead)
    assert p.refused is None and p.scale_check is ahead and p.scale_source == "profile:x"
    mismatch = ScaleCheck(True, False, 0.25, 0.5, 2.0, "magnification differs")
    p = prepare_frame(frame(), 0.25, ScreenSettings(), estimator=no_estimate, check=mismatch)
    assert p.refused == "magnification differs" and p.refusal_category == "scale_mismatch"


def test_upload_page_shows_the_field_line_the_differential_and_each_cell(tmp_path, services_factory):  # noqa: F811
    import html
    import io

    from webkit import PASSWORD, encode, login, token_of

    from device.web import auth, create_app

    bundle = make_cell_bundle(tmp_path / "cells")
    cfg = make_config(tmp_path, bundle, still(tmp_path, frame()), quality={"enabled": False})
    s = services_factory(cfg)
    app = create_app(cfg, s)
    app.config["TESTING"] = True
    auth.add_user(s.store.conn, "tech", "technician", PASSWORD)
    client = app.test_client()
    assert login(client).status_code == 302
    data = {
        "file": [(io.BytesIO(encode(frame())), "f.png")],
        "csrf_token": token_of(client),
        "um_per_px": "auto",
    }
    page = html.unescape(
        client.post("/upload", data=data, content_type="multipart/form-data").get_data(as_text=True)
    )
    assert '<p class="field-line">4 white cells: ' in page
    assert "Differential" in page and "Each cell (4)" in page
    assert page.count('<span class="swatch"') == 4
