"""The admin calibration page (login, admin-only, CSRF), the live page's profile switch, the
profiles API, and records stored with the active profile's scale."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
from webkit import smear, token_of

from device.camera.profiles import Profile


def post(c, url, **form):
    return c.post(url, data={"csrf_token": token_of(c), **form})


def test_page_is_admin_only_and_needs_csrf(app_svc, admin, tech):
    assert app_svc[0].test_client().get("/admin/calibration").status_code == 302  # login first
    assert tech.get("/admin/calibration").status_code == 403
    assert post(tech, "/admin/calibration/typed", name="x", um_per_px="0.1").status_code == 403
    html = admin.get("/admin/calibration").get_data(as_text=True)
    assert "No profile yet" in html and "not a diagnosis" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from a CDN
    r = admin.post("/admin/calibration/typed", data={"name": "x", "um_per_px": "0.1"})
    assert r.status_code == 400  # no CSRF token
    assert app_svc[1].profiles.list() == []


def test_typed_activate_remove_download(app_svc, admin):
    svc = app_svc[1]
    r = post(admin, "/admin/calibration/typed", name="HQ cam, 40x", um_per_px="0.181", activate="1")
    assert r.status_code == 302
    post(admin, "/admin/calibration/typed", name="HQ cam, 100x oil", um_per_px="0.0725")
    assert svc.profiles.active_name() == "HQ cam, 40x"
    assert post(admin, "/admin/calibration/typed", name="HQ cam, 40x", um_per_px="0.2").status_code == 400
    assert post(admin, "/admin/calibration/typed", name="y", um_per_px="abc").status_code == 400
    assert post(admin, "/admin/calibration/activate", name="HQ cam, 100x oil").status_code == 302
    assert svc.profiles.active_name() == "HQ cam, 100x oil"
    html = admin.get("/admin/calibration").get_data(as_text=True)
    assert "0.0725" in html and "active" in html
    toml = admin.get("/admin/calibration/profiles.toml")
    assert toml.headers["Content-Disposition"].startswith("attachment") and b"HQ cam, 40x" in toml.data
    assert post(admin, "/admin/calibration/remove", name="HQ cam, 40x").status_code == 302
    assert [p.name for p in svc.profiles.list()] == ["HQ cam, 100x oil"]


def test_micrometer_on_a_frozen_frame(app_svc, admin):
    svc = app_svc[1]
    assert (
        admin.post("/admin/calibration/freeze", headers={"X-CSRF-Token": token_of(admin)}).status_code == 409
    )
    svc.push_frame(smear(1, 200))
    r = admin.post("/admin/calibration/freeze", headers={"X-CSRF-Token": token_of(admin)}).get_json()
    assert (r["width"], r["height"]) == (200, 200)
    img = admin.get(r["url"])
    assert img.mimetype == "image/jpeg" and img.data[:2] == b"\xff\xd8"
    svc.push_frame(smear(2, 200))  # the live view moves on; the frozen frame stays
    assert admin.get(r["url"]).data == img.data
    form = {"token": r["token"], "x1": "10", "y1": "100", "x2": "190", "y2": "100", "length_um": "18"}
    too_close = {**form, "x2": "15"}
    assert post(admin, "/admin/calibration/micrometer", name="m", **too_close).status_code == 400
    assert post(admin, "/admin/calibration/micrometer", name="HQ cam, 40x", **form).status_code == 302
    p = svc.profiles.get("HQ cam, 40x")
    assert p.method == "micrometer" and p.um_per_px == pytest.approx(0.1) and p.created_by == "admin"


@dataclass
class Est:
    diameter_px: float | None
    confident: bool
    reason: str | None = None


def _wait_job(c, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = c.get("/admin/calibration/job").get_json()["job"]
        if job and job["state"] != "running":
            return job
        time.sleep(0.02)
    raise AssertionError("calibration job did not finish")


@pytest.fixture
def live_camera(app_svc):
    """New frames keep arriving, as from a running camera."""
    svc = app_svc[1]
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            i += 1
            svc.push_frame(smear(i % 5))
            time.sleep(0.005)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    yield
    stop.set()
    t.join()


def _run(c, **body):
    return c.post("/admin/calibration/run", json=body, headers={"X-CSRF-Token": token_of(c)})


def test_automatic_run_with_progress_then_save(app_svc, admin, live_camera):
    svc = app_svc[1]
    svc.scale_estimator = lambda rgb, rbc_um: Est(50.0, True)
    r = _run(admin, kind="auto", frames=5)
    assert r.status_code == 202 and r.get_json()["state"] == "running"
    job = _wait_job(admin)
    assert job["state"] == "done" and job["done"] == 5
    assert job["result"]["um_per_px"] == pytest.approx(0.15)
    assert post(admin, "/admin/calibration/save", job="nope", name="x").status_code == 400
    r = post(admin, "/admin/calibration/save", job=job["id"], name="HQ cam, 100x oil", activate="1")
    assert r.status_code == 302
    p = svc.profiles.active()
    assert p.method == "auto" and p.um_per_px == pytest.approx(0.15) and p.n_frames == 5


def test_automatic_run_refused_when_unsure(app_svc, admin, live_camera):
    svc = app_svc[1]
    svc.scale_estimator = lambda rgb, rbc_um: Est(None, False, "too few red cells")
    _run(admin, kind="auto", frames=3)
    job = _wait_job(admin)
    assert job["state"] == "failed" and "too few red cells" in job["error"]
    assert svc.profiles.list() == []


def test_colour_run_without_a_running_camera_says_so(app_svc, admin, live_camera):
    _run(admin, kind="white")
    job = _wait_job(admin)
    assert job["state"] == "failed" and "camera is not running" in job["error"]


def test_technician_switches_profile_on_the_live_page(app_svc, tech):
    svc = app_svc[1]
    html = tech.get("/").get_data(as_text=True)
    assert "No calibration profile" in html and "Ask an admin" in html
    svc.profiles.save(Profile("HQ cam, 40x", 0.181))
    svc.profiles.save(Profile("HQ cam, 100x oil", 0.0725))
    html = tech.get("/").get_data(as_text=True)
    assert 'name="profile"' in html and "HQ cam, 100x oil · 0.0725 µm/px" in html
    assert post(tech, "/live/profile", profile="HQ cam, 100x oil").status_code == 302
    assert svc.profiles.active_name() == "HQ cam, 100x oil"
    assert post(tech, "/live/profile", profile="nope").status_code == 400
    assert tech.post("/live/profile", data={"profile": "HQ cam, 40x"}).status_code == 400  # CSRF
    # the record of the next capture carries the profile it was classified at
    svc.push_frame(smear(3))
    sample = tech.post("/api/v1/samples", json={"slide_id": "S1"}, headers={"X-CSRF-Token": token_of(tech)})
    rec = tech.post(
        "/api/v1/capture", json={"sample": sample.get_json()["id"]}, headers={"X-CSRF-Token": token_of(tech)}
    )
    got = rec.get_json()["record"]
    assert (got["um_per_px"], got["profile"]) == (0.0725, "HQ cam, 100x oil")
    assert tech.get(f"/api/v1/results/{got['id']}").get_json()["profile"] == "HQ cam, 100x oil"


def test_profiles_api(app_svc, tech):
    svc = app_svc[1]
    assert tech.get("/api/v1/profiles").get_json() == {"active": None, "profiles": []}
    svc.profiles.save(Profile("A", 0.1))
    svc.profiles.save(Profile("B", 0.2))
    r = tech.post("/api/v1/profiles/active", json={"name": "B"}, headers={"X-CSRF-Token": token_of(tech)})
    assert r.status_code == 200 and r.get_json()["active"] == "B"
    r = tech.post("/api/v1/profiles/active", json={"name": "C"}, headers={"X-CSRF-Token": token_of(tech)})
    assert r.status_code == 404
    listed = tech.get("/api/v1/profiles").get_json()
    assert listed["active"] == "B" and [p["name"] for p in listed["profiles"]] == ["A", "B"]
    assert np.isclose(listed["profiles"][1]["um_per_px"], 0.2)


def test_colour_run_drives_the_running_camera_then_saves(app_svc, admin):
    """The page's colour calibration asks the capture thread to set controls (camera handles are not
    thread-safe), measures raw frames, and keeps the result in the chosen profile."""
    from test_optics_profiles import SimCamera

    from device.camera.profiled import ProfiledSource

    svc = app_svc[1]
    svc.profiles.save(Profile("HQ cam, 100x oil", 0.0725))
    cam = SimCamera()
    src = ProfiledSource(cam_source(cam), svc.profiles)
    src.open()
    svc.camera_source = src
    stop = threading.Event()

    def capture():  # what the pipeline's capture worker does
        from device.pipeline.live import LiveFrame
        from device.store.store import utc_now

        while not stop.is_set():
            svc.live.publish_frame(LiveFrame(src.read(), utc_now(), 0))
            time.sleep(0.002)

    t = threading.Thread(target=capture, daemon=True)
    t.start()
    try:
        assert _run(admin, kind="white").status_code == 202
        job = _wait_job(admin, timeout=20)
    finally:
        stop.set()
        t.join()
    assert job["state"] == "done", job
    res = job["result"]
    assert res["controls"]["AwbEnable"] is False and abs(res["after"][1] - 230) <= 4
    assert not src.raw  # the software gain is back on
    r = post(admin, "/admin/calibration/save", job=job["id"], name="HQ cam, 100x oil")
    assert r.status_code == 302
    p = svc.profiles.get("HQ cam, 100x oil")
    assert p.controls["AwbEnable"] is False and p.controls["ExposureTime"] == res["controls"]["ExposureTime"]
    assert p.um_per_px == 0.0725  # the scale is kept


def cam_source(cam):
    from device.camera.base import FrameSource

    class Src(FrameSource):
        name = "sim"

        def open(self):
            pass

        def read(self):
            return cam.read()

        def set_controls(self, c):
            return cam.set_controls(c)

        def get_controls(self):
            return cam.get_controls()

    return Src()


def test_page_says_which_camera_controls_took_effect(app_svc, admin):
    svc = app_svc[1]
    svc.calibration_status = lambda: {
        "controls_applied": {"AeEnable": False, "ExposureTime": 5000.0},
        "controls_ignored": ["ColourGains"],
    }
    html = admin.get("/admin/calibration").get_data(as_text=True)
    assert "AeEnable = False, ExposureTime = 5000.0" in html and "ignored ColourGains" in html
