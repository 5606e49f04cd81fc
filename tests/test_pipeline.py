"""Pipeline: slots, watchdog, and the workers end to end with the tiny bundle."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from make_tiny_bundle import sign_test

from device.config import load_config
from device.errors import SmearscopeError
from device.pipeline.slot import LatestSlot, Published
from device.pipeline.worker import Watchdog, Worker
from device.services import Services


def wait_for(cond, timeout: float = 15.0) -> bool:
    """Poll `cond` until true or `timeout` (a bound against hanging, not a speed assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def make_config(tmp_path, bundle, frames_dir, **sections):
    over = {
        "classifier": {"models": [str(bundle)], "threads": 1},
        "camera": {"path": str(frames_dir), "fps": 40.0, "reopen_initial_s": 0.05, "reopen_max_s": 0.2},
        "store": {"every_s": 0.0, "on_label_change": False, "reserve_mb": 0},
    }
    for k, v in sections.items():
        over.setdefault(k, {}).update(v)
    return load_config(data_dir=tmp_path / "data", overrides=over, system_config=None, env={})


@pytest.fixture
def services_factory(tmp_path):
    made = []

    def make(config, **kw):
        s = Services(config, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_latest_slot_keeps_newest_and_counts_drops():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1)
    assert not slot.put(2)  # 1 was stale: dropped
    assert slot.dropped == 1
    assert slot.take(0.01) == 2
    assert slot.take(0.01) is None
    assert slot.wait_empty(0.01)


def test_published_wait_returns_newer_only():
    pub: Published[str] = Published()
    assert pub.latest() is None and pub.wait(0, 0.01) is None
    seq = pub.publish("a")
    assert pub.wait(0, 0.01) == (seq, "a")
    assert pub.wait(seq, 0.01) is None
    threading.Timer(0.05, pub.publish, args=("b",)).start()
    assert pub.wait(seq, 5.0) == (seq + 1, "b")


def test_watchdog_restarts_a_stuck_worker():
    release = threading.Event()
    calls = []

    def step():
        calls.append(threading.get_ident())
        if len(calls) == 1:
            release.wait(5)  # stuck (far longer than stall_s)
        else:
            time.sleep(0.01)

    w = Worker("demo", step, stall_s=0.1)
    why = []
    dog = Watchdog([w], on_restart=lambda wk, reason: why.append(reason))
    w.start()
    assert wait_for(lambda: w.stalled_for() > 0.2, 5)
    assert dog.check() is False
    assert why and "demo stuck" in why[0] and w.restarts == 1
    assert wait_for(lambda: len(calls) > 2, 5)  # the new thread runs
    release.set()
    w.stop()
    w.join(2)


def test_pipeline_end_to_end(tmp_path, tiny_bundle, sample_images, services_factory):
    cfg = make_config(tmp_path, tiny_bundle, sample_images[0].parent)
    s = services_factory(cfg)
    s.start()
    assert wait_for(lambda: s.store.counts()["records_total"] >= 3)
    st = s.status()
    for key in (
        "camera", "frames_captured", "frames_rejected", "frames_classified", "frames_dropped", "fps",
        "inference_ms_p50", "inference_ms_p95", "models", "disk_free_bytes", "records_total", "unsynced",
        "last_error",
    ):  # fmt: skip
        assert key in st, key
    assert st["camera"]["state"] == "running" and st["frames_classified"] > 0
    rec = s.store.list_results(limit=1)[0]
    assert rec["source"] == "camera" and rec["models"][0]["name"] == "tiny-mobilenetv2-int8"
    assert s.store.image_path(rec["image_sha256"]).is_file()
    assert rec["heatmap_sha256"] and s.store.image_path(rec["heatmap_sha256"]).is_file()
    assert set(rec["probabilities"]) == {"Benign", "Early", "Pre", "Pro"}
    seq, live = s.live.latest_result()
    assert live["label"] in rec["probabilities"] and "quality" in live and live["has_heatmap"]
    fseq, jpeg = s.live.latest_frame()
    assert jpeg[:2] == b"\xff\xd8"
    assert s.live.wait_frame(fseq, 5)[0] > fseq
    assert s.live.latest_heatmap()[1][:2] == b"\xff\xd8"
    from prometheus_client import generate_latest

    assert b"smearscope_frames_classified_total" in generate_latest(s.registry)


def test_capture_field_and_upload(tmp_path, tiny_bundle, sample_images, services_factory):
    cfg = make_config(tmp_path, tiny_bundle, sample_images[0].parent, store={"every_s": 3600.0})
    s = services_factory(cfg)
    s.start()
    assert wait_for(lambda: s.pipeline.last_classified is not None)
    sample = s.store.open_sample("LAB-9", user="ann")
    rec = s.capture_field(sample["id"], "ann")
    assert rec["sample_id"] == sample["id"] and s.store.image_path(rec["image_sha256"]).is_file()
    assert s.store.sample_summary(sample["id"])["fields"] == 1
    rgb = cv2.cvtColor(cv2.imread(str(sample_images[2])), cv2.COLOR_BGR2RGB)
    up = s.classify_upload(rgb, filename="pre.jpg", sample_id=sample["id"], user="ann")
    assert up["source"] == "upload" and up["filename"] == "pre.jpg" and up["label"] in up["probabilities"]
    s.store.finish_sample(sample["id"])
    with pytest.raises(SmearscopeError, match="finished"):
        s.capture_field(sample["id"], "ann")


def test_rejected_frames_are_not_classified(tmp_path, tiny_bundle, services_factory):
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(3):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((96, 96, 3), 200 + i, np.uint8))
    s = services_factory(make_config(tmp_path, tiny_bundle, blank))
    s.start()
    assert wait_for(lambda: s.status()["frames_rejected"] >= 5)
    st = s.status()
    assert st["frames_classified"] == 0 and st["records_total"] == 0
    live = s.live.latest_result()[1]
    assert live["rejected"] and "blank field" in live["display"]
    with pytest.raises(SmearscopeError, match="quality"):
        s.capture_field(None, "ann")


def test_slow_store_never_slows_classification(tmp_path, tiny_bundle, sample_images, services_factory):
    cfg = make_config(tmp_path, tiny_bundle, sample_images[0].parent, store={"queue_size": 1})
    s = services_factory(cfg)
    real_write = s.store.write_image  # what the storage worker writes each record's image with

    def slow_write(data: bytes) -> tuple[str, int]:
        time.sleep(0.5)
        return real_write(data)

    s.store.write_image = slow_write
    s.start()
    # A bound against hanging: on a loaded 2-core machine the first classifications can take seconds.
    assert wait_for(lambda: s.status()["store_dropped"] >= 5, 60)
    st = s.status()
    assert st["frames_classified"] > st["records_stored"] + 5


def test_watchdog_restarts_a_stuck_classifier_and_says_why(
    tmp_path, tiny_bundle, sample_images, services_factory
):
    s = services_factory(make_config(tmp_path, tiny_bundle, sample_images[0].parent))
    classify = s.ensemble.classify_tiles
    stuck = threading.Event()

    def sometimes_stuck(*a, **kw):
        if not stuck.is_set():
            stuck.set()
            time.sleep(2.5)  # longer than the stall limit below
        return classify(*a, **kw)

    s.ensemble.classify_tiles = sometimes_stuck
    s.pipeline.workers[2].stall_s = 0.5
    s.start()
    assert wait_for(lambda: s.pipeline.workers[2].restarts >= 1)
    assert wait_for(lambda: s.status()["frames_classified"] >= 5)  # the new thread classifies
    events = [e["message"] for e in s.store.recent_events(20)]
    assert any("worker classify stuck" in m and "restarted" in m for m in events)
    assert "watchdog" in s.status()["last_error"]


def test_store_policy_only_on_label_change(tmp_path, tiny_bundle, sample_images, services_factory):
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.jpg").write_bytes(sample_images[2].read_bytes())  # the same field, over and over
    cfg = make_config(tmp_path, tiny_bundle, one, store={"every_s": 0.0, "on_label_change": True})
    s = services_factory(cfg)
    s.start()
    assert wait_for(lambda: s.telemetry.counts.get("republished", 0) >= 20)
    # an unchanged field is classified once; its result is re-published with every new frame
    assert s.status()["frames_classified"] == 1
    assert s.store.counts()["records_total"] == 1  # stored once, when the label first appeared
    seq, live = s.live.latest_result()
    assert live["republished"] and not live["new_field"] and live["field"] == 1
    assert live["frame_seq"] > 20


def test_unfamiliar_input_stays_uncertain_in_the_live_view(
    tmp_path, tiny_bundle, sample_images, services_factory
):
    """Re-publishing a still field never turns an out-of-distribution abstention into a confident label."""
    import json

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    manifest.setdefault("calibration", {})["colour_check"] = {
        "mean": [0.0] * 6,
        "inv_cov": np.eye(6).tolist(),
        "threshold": 0.001,  # every real picture is "far" from this: always unfamiliar
    }
    (tiny_bundle / "manifest.json").write_text(json.dumps(manifest))
    sign_test(tiny_bundle)
    cfg = make_config(tmp_path, tiny_bundle, sample_images[0].parent, classifier={"abstain_threshold": 0.01})
    s = services_factory(cfg)
    s.start()
    assert wait_for(lambda: (s.live.latest_result() or (0, {}))[1].get("frame_seq", 0) > 3)
    _, live = s.live.latest_result()
    assert live["abstained"] is True
    assert live["reason"].startswith("input unlike the training images")
    assert live["display"] != live["label"]


def test_thumbnail_of_a_large_frame_matches_one_area_shrink():
    from device.pipeline.settle import THUMB, thumbnail

    rng = np.random.default_rng(5)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), (0, 0), 6)
    one_step = cv2.cvtColor(cv2.resize(frame, THUMB, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    t = thumbnail(frame)
    assert t.shape == (THUMB[1], THUMB[0]) and t.dtype == np.float32
    assert np.abs(t - one_step.astype(np.float32)).max() <= 1.0
    small = frame[:100, :120]  # no halving below 8x the thumbnail
    assert thumbnail(small).shape == (THUMB[1], THUMB[0])
