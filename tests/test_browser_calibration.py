"""The calibration page's own script in a real browser (chromium, under the page's CSP): freeze a
frame, mark a stage micrometer with two clicks, save; then switch the profile on the live page."""

from __future__ import annotations

import pytest
from test_browser import ARGS, CHROMIUM, daemon  # noqa: F401 - fixture

from device.camera.profiles import ProfileStore
from device.store.store import Store
from device.web import auth

pytestmark = pytest.mark.browser


def test_micrometer_and_profile_switch_in_a_browser(daemon, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    store = Store(tmp_path / "data", temps_older_than_s=3600)
    auth.add_user(store.conn, "boss", "admin", "browser-pass-2")
    store.close()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            violations = []
            page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
            page.goto(daemon + "/login")
            page.fill("input[name=username]", "boss")
            page.fill("input[name=password]", "browser-pass-2")
            page.click("button[type=submit]")
            page.wait_for_selector("#call:not(.waiting)", timeout=30000)  # frames are coming
            page.goto(daemon + "/admin/calibration")
            assert page.locator("#mic-form").is_hidden()
            page.click("#mic-freeze")
            canvas = page.locator("#mic-canvas")
            canvas.wait_for(state="visible")
            canvas.scroll_into_view_if_needed()
            width = canvas.evaluate("c => c.width")  # the frame's own pixels
            box = canvas.bounding_box()
            y = box["y"] + box["height"] / 2
            page.mouse.click(box["x"] + box["width"] * 0.1, y)
            assert page.locator("#mic-form").is_hidden()  # one point is not a length
            page.mouse.click(box["x"] + box["width"] * 0.9, y)
            page.wait_for_selector("#mic-form:not([hidden])")
            x1 = float(page.input_value("#mic-form input[name=x1]"))
            x2 = float(page.input_value("#mic-form input[name=x2]"))
            assert abs((x2 - x1) - 0.8 * width) < 0.02 * width  # clicks → frame pixels
            page.fill("#mic-form input[name=length_um]", "50")
            page.fill("#mic-form input[name=name]", "Browser cam, 40x")
            page.click("#mic-form button[type=submit]")
            page.wait_for_selector("text=Profile Browser cam, 40x saved")
            p_ = ProfileStore(tmp_path / "data" / "profiles.toml").get("Browser cam, 40x")
            assert p_.method == "micrometer" and abs(p_.um_per_px - 50 / (x2 - x1)) < 1e-3

            page.goto(daemon + "/")
            page.select_option("#profile", "Browser cam, 40x")
            page.click("#profile-switch button[type=submit]")
            page.wait_for_selector("text=Calibration profile: Browser cam, 40x")
            assert not violations, violations
        finally:
            browser.close()
