"""One real browser (Debian's chromium, headless, via Playwright) against a real `smearscope run`:
log in, watch the live prediction change, toggle the heatmap, start a sample, capture a field,
upload an image, and save screenshots that are checked not to be blank.

Set SMEARSCOPE_SCREENSHOTS=DIR to also keep the screenshots (docs/screenshots/ is made this way).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from make_tiny_bundle import SIGNED_TINY  # noqa: E402
from webkit import running_daemon

from device.paths import SAMPLES_DIR
from device.store.store import Store
from device.web import auth

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
TINY = SIGNED_TINY
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip


RESULTS_ARRIVED = "Number(document.getElementById('live').dataset.results) >= 1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_not_blank(png: Path) -> None:
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img.std()) > 20, "screenshot is (nearly) one colour"
    colours = np.unique(img.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 50, "screenshot has too few colours to be a rendered page"


@pytest.fixture
def daemon(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/system-deps.sh: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    data = tmp_path / "data"
    store = Store(data)
    auth.add_user(store.conn, "tech", "technician", "browser-pass-1")
    store.close()
    port = _free_port()
    args = ["run", "--data-dir", str(data), "--port", str(port), "--model", str(TINY)]
    with running_daemon(args, port, tmp_path / "daemon.log") as base:
        yield base


def test_browser_session(daemon, tmp_path):
    from playwright.sync_api import sync_playwright

    keep = os.environ.get("SMEARSCOPE_SCREENSHOTS")
    shots = Path(keep) if keep else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    upload = sorted(SAMPLES_DIR.glob("*.jpg"))[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            # bypass_csp: Playwright evaluates its wait conditions as strings, which our CSP forbids
            page = browser.new_page(viewport={"width": 1024, "height": 600}, bypass_csp=True)  # 7" screen
            page.goto(daemon + "/")
            assert "/login" in page.url
            page.fill("input[name=username]", "tech")
            page.fill("input[name=password]", "browser-pass-1")
            page.click("button[type=submit]")
            page.wait_for_selector("#live")

            # the live prediction arrives and changes as the replay camera moves through the slides
            page.wait_for_function(RESULTS_ARRIVED, timeout=30000)
            seen = set()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and len(seen) < 2:
                seen.add(page.eval_on_selector("#call-label", "e => e.textContent"))
                page.wait_for_timeout(200)
            assert len(seen) >= 2, f"the live prediction never changed: {seen}"
            assert page.eval_on_selector("#stream", "img => img.naturalWidth") > 0
            page.check("#heatmap")
            page.wait_for_timeout(500)
            page.uncheck("#heatmap")
            page.check("#tiles-toggle")  # the tile outlines drawn over the picture
            page.wait_for_selector("#tiles-layer .tile-box", state="attached", timeout=10000)
            page.uncheck("#tiles-toggle")

            # a sample, and a captured field in it
            page.fill("details input[name=slide_id]", "BROWSER-1")
            page.click("details button[type=submit]")
            page.wait_for_selector("#capture:not([disabled])")
            page.wait_for_function(RESULTS_ARRIVED, timeout=30000)
            page.click("#capture")
            page.wait_for_function(
                "document.getElementById('capture-msg').textContent.startsWith('Field stored')"
                " || document.getElementById('capture-msg').textContent.startsWith('Not stored')",
                timeout=15000,
            )
            page.wait_for_timeout(300)
            page.screenshot(path=str(shots / "live-7in.png"))
            assert_not_blank(shots / "live-7in.png")

            # upload an image exported by "microscope software"
            page.goto(daemon + "/upload")
            page.set_input_files("input[type=file]", str(upload))
            page.click("#upload-form button[type=submit]")
            page.wait_for_selector("#upload-results")
            text = page.inner_text("#upload-results")
            assert upload.name in text and "%" in text
            page.screenshot(path=str(shots / "upload.png"), full_page=True)
            assert_not_blank(shots / "upload.png")

            # the page's own scripts run under its Content-Security-Policy (no bypass here)
            strict = browser.new_page(viewport={"width": 1280, "height": 800})
            violations = []
            strict.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
            strict.goto(daemon + "/login")
            strict.fill("input[name=username]", "tech")
            strict.fill("input[name=password]", "browser-pass-1")
            strict.click("button[type=submit]")
            strict.wait_for_selector("#call:not(.waiting)", timeout=30000)
            assert not violations, violations
            strict.wait_for_timeout(1500)  # a few frames and results
            strict.screenshot(path=str(shots / "live.png"))
            assert_not_blank(shots / "live.png")
            strict.click("text=Open sample")
            strict.wait_for_selector("text=Slide-level summary")
            strict.screenshot(path=str(shots / "sample.png"), full_page=True)
            assert_not_blank(shots / "sample.png")
            strict.goto(daemon + "/history")
            assert strict.locator("img.thumb").count() >= 2  # the captured field and the upload
            strict.screenshot(path=str(shots / "history.png"))
            assert_not_blank(shots / "history.png")
            strict.close()

            # a French-speaking technician: the picker on the login page, then the live page in French
            # with the overlay's time in the station's zone, the zone written after it
            fr = browser.new_page(viewport={"width": 1024, "height": 600}, bypass_csp=True)
            fr.goto(daemon + "/login")
            fr.select_option("#lang-pick select", "fr")
            fr.click("#lang-pick input[type=submit]")
            fr.wait_for_selector("text=Se connecter")
            fr.fill("input[name=username]", "tech")
            fr.fill("input[name=password]", "browser-pass-1")
            fr.click("main button[type=submit]")
            fr.wait_for_selector("#live")
            assert fr.get_attribute("html", "lang") == "fr"
            assert "Aide au dépistage pour personnel formé, pas un diagnostic." in fr.inner_text("body")
            assert fr.inner_text("#capture") == "Capturer le champ"
            fr.wait_for_function("document.getElementById('ov-time').textContent.length > 0", timeout=30000)
            assert re.fullmatch(r"\d\d:\d\d:\d\d \S+", fr.inner_text("#ov-time")), fr.inner_text("#ov-time")
            assert fr.inner_text("#q-state") in ("bonne", "mauvaise")
            fr.screenshot(path=str(shots / "live-fr.png"))
            assert_not_blank(shots / "live-fr.png")
            fr.close()
        finally:
            browser.close()
