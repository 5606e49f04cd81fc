"""The daemon's services with a calibration profile: the camera gets the profile's software white
gain before anything else, records carry its scale and name, the status says which is in force."""

from __future__ import annotations

import cv2
import numpy as np
from test_pipeline import make_config, services_factory, wait_for  # noqa: F401 - fixture

from device.camera.profiles import Profile, ProfileStore
from device.colour import apply_gains


def test_active_profile_reaches_frames_records_and_status(
    tmp_path,
    tiny_bundle,
    sample_images,
    services_factory,  # noqa: F811
):
    cfg = make_config(tmp_path, tiny_bundle, sample_images[0].parent, store={"every_s": 3600.0})
    ProfileStore.from_config(cfg).save(Profile("HQ cam, 100x oil", 0.0725, white_gains=[1.0, 1.0, 0.5]))
    s = services_factory(cfg)
    assert s.active_profile().name == "HQ cam, 100x oil"
    s.start()
    assert wait_for(lambda: s.pipeline.last_classified is not None)
    raws = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sample_images]
    seen = s.live.frames.latest()[1].rgb
    # what the pipeline saw is a replayed file with the profile's gain: blue halved
    assert any(np.array_equal(seen, apply_gains(r, [1.0, 1.0, 0.5])) for r in raws)
    raw = raws[0]
    sample = s.store.open_sample("LAB-1", user="ann")
    rec = s.capture_field(sample["id"], "ann")
    assert (rec["um_per_px"], rec["profile"]) == (0.0725, "HQ cam, 100x oil")
    s.profiles.save(Profile("HQ cam, 40x", 0.181))
    s.set_active_profile("HQ cam, 40x", "ann")
    up = s.classify_upload(raw, filename="x.jpg", sample_id=None, user="ann")
    assert (up["um_per_px"], up["profile"]) == (0.181, "HQ cam, 40x")
    st = s.status()["calibration"]
    assert st["profile"] == "HQ cam, 40x" and st["um_per_px"] == 0.181 and st["error"] is None
    assert any("switched to profile HQ cam, 40x" in e["message"] for e in s.store.recent_events(10))
