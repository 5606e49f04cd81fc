"""The daemon's frame → tiles → field path: settling, the scale check against the active profile,
"no white cells in view", and a calibrated frame classified once into tiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
from make_tiny_bundle import sign_test
from test_field_classifier import RedCells
from test_pipeline import make_config, services_factory, wait_for  # noqa: F401 - fixture
from test_tiling import smear

from device.optics.scalecheck import MISMATCH
from device.pipeline.settle import MOVING, SAME, SETTLED, SettleTracker


@dataclass
class Profile:
    name: str
    um_per_px: float


def test_settle_tracker_waits_for_a_still_field_and_keeps_it():
    t = SettleTracker(settle_frames=2, threshold=3.0)
    a, b = np.zeros((48, 64), np.float32), np.full((48, 64), 40.0, np.float32)
    assert t.observe(a) == MOVING  # first frame: no history yet
    assert t.observe(a) == MOVING  # still 1 of 2
    assert t.observe(a + 1) == SETTLED  # still 2 of 2 (a 1-level flicker is still)
    t.mark(a)
    assert t.observe(a + 2) == SAME  # unchanged field: keep its result
    assert t.observe(b) == MOVING  # the stage moved
    assert t.observe(b) == MOVING
    assert t.observe(b) == SETTLED
    zero = SettleTracker(settle_frames=0, threshold=3.0)
    assert zero.observe(a) == SETTLED and zero.observe(b) == SETTLED  # replay: every frame a field


def frames_dir(tmp_path, wbc: bool = True):
    d = tmp_path / "field"
    d.mkdir()
    img = smear(320, 240, 0.5, [(0.3, 0.4), (0.7, 0.6)] if wbc else [])
    cv2.imwrite(str(d / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return d


def calibrated(s, profile_um: float, red_cells_um: float, width: int = 320):
    s.pipeline.profile = lambda: Profile("HQ 40x", profile_um)
    s.pipeline.fields.estimator = RedCells(red_cells_um, width)
    s.pipeline.fields.spec = dataclasses.replace(s.pipeline.fields.spec, um_per_px=0.25)


def test_magnification_change_is_refused_with_the_reason(tmp_path, tiny_bundle, services_factory):  # noqa: F811
    # one static field: it alone decides "objective changed?" here (tests/test_live_calm.py: 3 fields)
    cfg = make_config(tmp_path, tiny_bundle, frames_dir(tmp_path), quality={"scale_mismatch_fields": 1})
    s = services_factory(cfg)
    calibrated(s, 0.5, 0.8)  # a lower-power objective than the profile's
    s.start()
    assert wait_for(lambda: (s.live.latest_result() or (0, {}))[1].get("frame_seq", 0) > 5)
    live = s.live.latest_result()[1]
    assert live["rejected"] and MISMATCH in live["display"]
    st = s.status()
    assert st["frames_classified"] == 0 and st["scale"]["state"] == "mismatch"
    assert st["scale"]["profile"] == "HQ 40x"


def test_calibrated_static_field_is_tiled_and_classified_once(tmp_path, tiny_bundle, services_factory):  # noqa: F811
    s = services_factory(make_config(tmp_path, tiny_bundle, frames_dir(tmp_path)))
    calibrated(s, 0.5, 0.5)
    s.start()
    assert wait_for(lambda: s.telemetry.counts.get("republished", 0) >= 5)
    live = s.live.latest_result()[1]
    assert live["um_per_px"] == 0.5 and live["profile"] == "HQ 40x" and live["scale_check"]["ok"]
    assert live["tiles"]["classified"] >= 1 and live["tiles"]["factor"] == 2.0
    assert any(b["state"] == "classified" for b in live["outlines"])
    assert live["state"] in ("classified", "uncertain") and "Field rule" in live["rule"]
    assert s.status()["frames_classified"] == 1
    assert wait_for(lambda: s.store.counts()["records_total"] == 1)
    rec = s.store.list_results(limit=1)[0]
    assert rec["quality"]["tiles"]["classified"] == live["tiles"]["classified"]
    heat = s.live.latest_heatmap()
    assert heat is not None and heat[1][:2] == b"\xff\xd8"


def test_a_field_without_white_cells_is_not_called_benign(tmp_path, tiny_bundle, services_factory):  # noqa: F811
    s = services_factory(make_config(tmp_path, tiny_bundle, frames_dir(tmp_path, wbc=False)))
    calibrated(s, 0.5, 0.5)
    s.start()
    assert wait_for(lambda: s.telemetry.counts.get("republished", 0) >= 3)
    live = s.live.latest_result()[1]
    assert live["display"] == "no white cells in view" and live["label"] is None
    assert s.status()["frames_classified"] == 0 and s.store.counts()["records_total"] == 0


def test_a_static_field_can_be_captured_long_after_it_was_classified(
    tmp_path,
    tiny_bundle,
    services_factory,  # noqa: F811
    monkeypatch,
):
    import time

    import device.services

    monkeypatch.setattr(device.services, "MAX_CAPTURE_AGE_S", 0.3)
    s = services_factory(make_config(tmp_path, tiny_bundle, frames_dir(tmp_path), store={"every_s": 3600.0}))
    calibrated(s, 0.5, 0.5)
    s.start()
    assert wait_for(lambda: s.telemetry.counts.get("republished", 0) >= 3)
    time.sleep(0.6)  # classified once, longer ago than the capture age limit, but still in view
    sample = s.store.open_sample("LAB-1", user="ann")
    rec = s.capture_field(sample["id"], "ann")
    assert rec["sample_id"] == sample["id"] and s.status()["frames_classified"] == 1


def test_upload_with_a_scale_is_tiled_and_auto_refuses_when_red_cells_cannot_tell(
    tmp_path,
    tiny_bundle,
    services_factory,  # noqa: F811
):
    import json

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["input"]["um_per_px"] = 0.25
    (tiny_bundle / "manifest.json").write_text(json.dumps(m))
    sign_test(tiny_bundle)
    s = services_factory(make_config(tmp_path, tiny_bundle, frames_dir(tmp_path)))
    assert s.scale_info()["models_um_per_px"] == 0.25 and s.scale_info()["profile"] is None
    rgb = smear(160, 120, 0.5, [(0.3, 0.4), (0.7, 0.6)])
    s._uploader().estimator = RedCells(0.5, 160)
    rec = s.classify_upload(rgb, filename="a.png", um_per_px=0.5)
    assert rec["field"]["tiles"]["factor"] == 2.0 and rec["field"]["scale_check"]["ok"]
    assert rec["quality"]["tiles"]["classified"] >= 1
    s._uploader().estimator = RedCells(None, 160)
    rec = s.classify_upload(rgb, filename="b.png", um_per_px="auto")
    assert rec["abstained"] and rec["field"]["state"] == "refused"
    assert rec["reason"].startswith("not classified: scale unknown")
    assert s.store.get_result(rec["id"])["abstained"]


def test_a_settling_fields_scale_check_is_made_before_it_settles(tmp_path, tiny_bundle, services_factory):  # noqa: F811
    """With a camera's settling (2 still frames), the red-cell check runs on the last frame before the
    field settles and the classification takes it over (the check does not share the cores with the
    interpreters); a mismatch found that way is refused without inferring a tile."""
    frames = frames_dir(tmp_path)
    cfg = make_config(tmp_path, tiny_bundle, frames, classifier={"settle_frames": 2})
    s = services_factory(cfg)
    calibrated(s, 0.5, 0.5)
    s.start()
    assert wait_for(lambda: s.telemetry.counts.get("republished", 0) >= 3)
    assert s.status()["frames_classified"] == 1
    assert s.telemetry.counts.get("scale_checked_ahead") == 1
    live = s.live.latest_result()[1]
    assert live["scale_check"]["ok"] and live["scale_check"]["ran"]
    assert s.pipeline.scale_status["state"] == "ok"
    s.stop()

    cfg = make_config(
        tmp_path, tiny_bundle, frames, classifier={"settle_frames": 2}, quality={"scale_mismatch_fields": 1}
    )
    s = services_factory(cfg)
    calibrated(s, 0.5, 0.8)  # another objective than the profile's
    s.start()
    assert wait_for(lambda: (s.live.latest_result() or (0, {}))[1].get("frame_seq", 0) > 6)
    live = s.live.latest_result()[1]
    assert live["rejected"] and MISMATCH in live["display"]
    assert s.telemetry.counts.get("scale_checked_ahead", 0) >= 1
    assert s.status()["frames_classified"] == 0
    assert sum(m.invoke_ns for m in s.pipeline.fields.ensemble.models) == 0  # no tile was inferred
