"""A calm live call: a still field keeps its result (noise, one bad frame), and "objective changed?" is
said only after several fields in a row disagree with the calibration (device/optics/scalecheck.py
`ScaleVerdicts`, device/pipeline/pipeline.py)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
from test_pipeline import make_config, services_factory, wait_for  # noqa: F401 - fixture
from test_pipeline_tiles import Profile, calibrated
from test_tiling import smear

from device.config import load_config
from device.optics.scalecheck import MISMATCH, ScaleCheck, ScaleVerdicts
from device.pipeline.pipeline import settle_frames
from device.pipeline.settle import SAME, SETTLED, SettleTracker


def _check(ratio: float | None, tolerance: float = 0.2) -> ScaleCheck:
    if ratio is None:  # the estimator could not tell
        return ScaleCheck(False, True, 0.155, None, None, "scale check could not tell")
    ok = abs(ratio - 1) <= tolerance
    return ScaleCheck(True, ok, 0.155, 0.155 * ratio, ratio, "ok" if ok else MISMATCH)


def test_one_disagreeing_field_is_doubt_not_objective_changed():
    v = ScaleVerdicts(mismatch_fields=3, ok_fields=2)
    assert v.observe(_check(1.02)) == "ok"
    assert v.observe(_check(0.76)) == "doubt" and not v.confirmed  # 0.118 µm/px for a 0.155 camera
    assert "uncertain for this field" in v.field_message(_check(0.76)) and MISMATCH not in v.field_message(
        _check(0.76)
    )
    assert v.observe(_check(0.98)) == "ok"
    # the estimator's spread on one objective: every 4th field beyond ±20%, never 3 in a row
    for ratio in [1.0, 0.76, 1.1, 1.33, 0.95, 0.78, 1.0, 1.0, 1.25, 1.3, 0.9] * 10:
        assert v.observe(_check(ratio)) != "mismatch"


def test_objective_change_is_said_on_the_third_field_and_cleared_after_two_agree():
    v = ScaleVerdicts(mismatch_fields=3, ok_fields=2)
    v.observe(_check(1.0))
    states = [v.observe(_check(2.0)) for _ in range(4)]  # a 2x lower-power objective
    assert states == ["doubt", "doubt", "mismatch", "mismatch"]
    assert v.observe(_check(None)) == "mismatch"  # a field the estimator cannot judge counts neither way
    assert v.observe(_check(1.0)) == "mismatch"  # one agreeing field does not clear it ...
    assert v.observe(_check(2.0)) == "mismatch"
    assert v.observe(_check(1.0)) == "mismatch" and v.observe(_check(1.0)) == "ok"  # ... two in a row do
    assert ScaleVerdicts(mismatch_fields=1).observe(_check(2.0)) == "mismatch"


def test_a_still_noisy_field_stays_the_same_field():
    rng = np.random.default_rng(7)
    field = rng.uniform(60, 200, (48, 64)).astype(np.float32)
    t = SettleTracker(settle_frames=2, threshold=3.0)
    states = [t.observe(field + rng.normal(0, 2.5, field.shape).astype(np.float32)) for _ in range(3)]
    assert states[-1] == SETTLED
    t.mark(field)
    for _ in range(300):
        assert t.observe(field + rng.normal(0, 2.5, field.shape).astype(np.float32)) == SAME


def test_auto_settling_waits_for_the_virtual_stage():
    def cfg(**camera):
        return load_config(system_config=None, env={}, overrides={"camera": camera})

    assert settle_frames(cfg()) == 0  # a replay of unrelated stills: each frame a field
    assert settle_frames(cfg(virtual=True)) == 2  # the virtual microscope pans like a real stage
    assert settle_frames(cfg(source="opencv")) == 2
    assert (
        settle_frames(load_config(system_config=None, env={}, overrides={"classifier": {"settle_frames": 5}}))
        == 5
    )


def _record(s) -> list[dict]:
    """Every result the pipeline publishes, in order."""
    seen: list[dict] = []
    lock = threading.Lock()
    publish = s.live.publish_result

    def recording(result, rgb=None, cam=None):
        with lock:
            seen.append({**result, "_scale_state": s.pipeline.scale_status.get("state")})
        return publish(result, rgb, cam)

    s.live.publish_result = recording
    return seen


def _call(r: dict) -> tuple:
    return (r.get("state"), r.get("label"), r.get("display"))


def test_a_still_field_keeps_its_call_through_a_bad_frame(tmp_path, tiny_bundle, services_factory):  # noqa: F811
    d = tmp_path / "still"
    d.mkdir()
    img = smear(320, 240, 0.5, [(0.3, 0.4), (0.7, 0.6)])
    for i in range(12):
        frame = np.full_like(img, 255) if i == 6 else img  # one washed-out frame (a lamp flash)
        cv2.imwrite(str(d / f"{i:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    cfg = make_config(tmp_path, tiny_bundle, d, classifier={"settle_frames": 2})
    s = services_factory(cfg, pace=False)
    calibrated(s, 0.5, 0.5)
    seen = _record(s)
    s.start()
    assert wait_for(lambda: s.telemetry.counts.get("held", 0) >= 3)  # the bad frame held 3 times
    s.stop()
    first = next(i for i, r in enumerate(seen) if r.get("new_field"))
    calls = {_call(r) for r in seen[first:]}
    assert len(calls) == 1, calls  # never "rejected" or "moving", never another call
    assert s.status()["frames_classified"] == 1
    assert sum(1 for r in seen[first:] if r.get("held")) >= 3 and s.status()["frames_captured"] >= 30


def test_a_noisy_still_field_on_the_virtual_microscope_is_classified_once(
    tmp_path,
    tiny_bundle,
    services_factory,  # noqa: F811
):
    cam = {"virtual": True, "width": 320, "height": 240, "pan": False, "noise": 2.5, "path": ""}
    s = services_factory(make_config(tmp_path, tiny_bundle, tmp_path, camera=cam), pace=False)
    calibrated(s, 0.5, 0.5)
    seen = _record(s)
    s.start()
    assert wait_for(lambda: s.telemetry.counts.get("captured", 0) >= 60)
    s.stop()
    first = next(i for i, r in enumerate(seen) if r.get("new_field"))
    assert len({_call(r) for r in seen[first:]}) == 1
    assert s.status()["frames_classified"] == 1


def test_a_real_objective_change_is_flagged_on_the_third_field(tmp_path, tiny_bundle, services_factory):  # noqa: F811
    cam = {
        "virtual": True,
        "width": 320,
        "height": 240,
        "dwell_s": 1.0,
        "move_s": 0.4,
        "fps": 5.0,
        "path": "",
    }
    s = services_factory(make_config(tmp_path, tiny_bundle, tmp_path, camera=cam), pace=False)
    calibrated(s, 0.5, 1.0)  # the red cells say twice the profile's µm/px on every field
    seen = _record(s)
    s.start()
    assert wait_for(
        lambda: sum(1 for r in seen if r.get("state") == "scale" and MISMATCH in r["display"]) >= 2
    )
    # the technician switches to the profile of the objective in use: judged afresh from its first field
    n = len(seen)
    s.pipeline.profile = lambda: Profile("HQ 10x", 1.0)
    assert wait_for(lambda: any(r.get("new_field") for r in seen[n:]))
    s.stop()
    after = next(r for r in seen[n:] if r.get("new_field"))
    assert after["profile"] == "HQ 10x" and after["_scale_state"] == "ok" and after["scale_check"]["ok"]
    before = seen[:n]
    fields = [r for r in before if r.get("state") == "scale" and not r.get("republished")]  # first results
    assert [f["scale_doubt"] for f in fields[:3]] == [True, True, False]
    assert all(
        MISMATCH not in f["display"] and "uncertain for this field" in f["display"] for f in fields[:2]
    )
    assert MISMATCH in fields[2]["display"] and fields[2]["_scale_state"] == "mismatch"
    assert [f["_scale_state"] for f in fields[:2]] == ["doubt", "doubt"]
    assert all(r.get("label") is None for r in before)  # nothing is called at the wrong scale meanwhile
