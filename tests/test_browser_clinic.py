"""Clinic-ready pages in a real browser (Debian's chromium under the page's own CSP): no sideways
scrolling on a phone (390x844, 360x740) or a tablet (768x1024), the report prints on one A4 and one
Letter page, the typed scale works through upload.js, Capture says why it is disabled, Finish asks first.
SMEARSCOPE_SCREENSHOTS=DIR keeps the screenshots and the printed PDFs."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from test_browser import ARGS, CHROMIUM, daemon  # noqa: F401 - fixture
from test_clinic import crowded_slide

from device.paths import SAMPLES_DIR
from device.store.store import Store

pytestmark = pytest.mark.browser

VIEWPORTS = ({"width": 390, "height": 844}, {"width": 768, "height": 1024}, {"width": 360, "height": 740})
SLIDE = "CLINIC-ŁÓDŹ-2026-000000000000000000000000000000000000000000001"  # long ids must wrap


def _login(page, base: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", "tech")
    page.fill("input[name=password]", "browser-pass-1")
    page.click("button[type=submit]")
    page.wait_for_selector("#live")


def _width(page) -> tuple[int, int]:
    return tuple(page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]"))


WIDE = """() => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 8).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className + ' '
  + Math.round(e.getBoundingClientRect().right))"""


def _pages(page) -> int:
    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(page)).pages)


def test_clinic_pages_in_a_browser(daemon, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    upload = sorted(SAMPLES_DIR.glob("*.jpg"))[0]
    keep = os.environ.get("SMEARSCOPE_SCREENSHOTS")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORTS[0])
            violations: list[str] = []
            page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
            _login(page, daemon)

            # Capture is disabled until there is a sample, and says so
            assert page.is_disabled("#capture")
            assert "Start a sample first" in page.inner_text("#capture-why")
            assert "Start a sample first" in page.get_attribute("#capture", "title")
            page.fill("details input[name=slide_id]", SLIDE)
            page.click("details button[type=submit]")
            page.wait_for_selector("#capture:not([disabled])", timeout=30000)
            page.click("#capture")
            page.locator("#capture-msg").filter(has_text=re.compile("Field stored|Not stored")).wait_for()
            sample_url = page.get_attribute("text=Open sample", "href")

            # an upload from elsewhere: auto by default; typing a scale selects "Typed" (upload.js)
            page.goto(daemon + "/upload")
            assert page.is_checked("input[name=um_per_px][value=auto]")
            page.fill("#scale-typed", "0.25")
            assert page.is_checked("#scale-typed-radio")
            page.check("input[name=um_per_px][value=auto]")
            assert page.input_value("#scale-typed") == ""
            page.set_input_files("input[type=file]", str(upload))
            page.click("#upload-form button[type=submit]")
            page.wait_for_selector("#upload-results")
            scroll, inner = _width(page)
            assert scroll <= inner, f"upload results: {scroll} px wide at {inner}: {page.evaluate(WIDE)}"

            # a review, so the report has one
            page.goto(daemon + "/history")
            page.click("table.grid td a >> nth=1")
            page.click("#review-form button[type=submit]")
            page.wait_for_selector("text=Review saved")

            sample_id = sample_url.rstrip("/").split("/")[-1]
            urls = ["/", sample_url, "/history", "/upload", f"/samples/{sample_id}/report"]
            for vp in VIEWPORTS:
                page.set_viewport_size(vp)
                for url in urls:
                    page.goto(daemon + url)
                    page.wait_for_load_state("load")
                    scroll, inner = _width(page)
                    assert scroll <= inner, (
                        f"{url} at {vp['width']}x{vp['height']}: {scroll} px wide: {page.evaluate(WIDE)}"
                    )
                    if keep:
                        name = url.strip("/").replace("/", "-")[-30:] or "live"
                        page.screenshot(path=str(Path(keep) / f"{vp['width']}-{name}.png"), full_page=True)

            # the report prints on one page, A4 and Letter (the browser's own print), also a crowded one
            store = Store(tmp_path / "data", temps_older_than_s=3600)
            crowded = crowded_slide(store, upload.read_bytes())
            store.close()
            for sid, what in ((sample_id, "report"), (crowded, "crowded")):
                page.goto(daemon + f"/samples/{sid}/report")
                page.emulate_media(media="print")
                for fmt in ("A4", "Letter"):
                    pdf = page.pdf(format=fmt, print_background=True)
                    if keep:
                        (Path(keep) / f"{what}-print-{fmt}.pdf").write_bytes(pdf)
                    assert _pages(pdf) == 1, (what, fmt)
                page.emulate_media(media="screen")

            # Finish asks first: cancel keeps the sample open, confirm finishes it
            page.goto(daemon + sample_url)
            page.click("form[data-confirm] button[type=submit]")
            page.wait_for_selector("#confirm-dialog[open]")
            assert "Finish sample" in page.inner_text("#confirm-text")
            page.click("#confirm-dialog button[value=no]")
            page.wait_for_selector("#confirm-dialog:not([open])", state="attached")
            assert "open" in page.inner_text("h1 .tag")
            page.click("form[data-confirm] button[type=submit]")
            page.click("#confirm-yes")
            page.wait_for_selector("text=its summary is frozen")
            assert "finished" in page.inner_text("h1 .tag")
            assert not violations, violations
        finally:
            browser.close()
