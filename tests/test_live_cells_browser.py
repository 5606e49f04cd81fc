"""The live page draws a cell result in a real browser (Debian's chromium, headless, under the page's own
CSP): one outline per cell in its colour and on its cell at any width, the legend, the field line and the
running slide count, in English and in French, and no sideways scrolling on a phone (390 px).
SMEARSCOPE_SCREENSHOTS=DIR keeps a screenshot."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_browser import ARGS, CHROMIUM
from test_live_cells import RESULT
from webkit import PASSWORD, make_app

from device.pipeline.live import LiveFrame
from device.store.store import utc_now
from device.web.server import make_server

pytestmark = pytest.mark.browser

W, H = 320, 240


def _frame() -> np.ndarray:
    img = np.full((H, W, 3), (225, 205, 215), np.uint8)
    for c in RESULT["cells"]:
        x0, y0, x1, y1 = c["box"]
        cv2.circle(img, ((x0 + x1) // 2, (y0 + y1) // 2), (x1 - x0) // 2 - 2, (110, 50, 140), -1)
    return img


@pytest.fixture
def served(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/system-deps.sh: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    app, services = make_app(tmp_path)
    rgb = _frame()
    services.live.publish_frame(LiveFrame(rgb, utc_now(), 0))
    services.live.publish_result({**RESULT, "frame_size": [W, H], "captured_at": utc_now()}, rgb, None)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}", services
    server.close()


def _login(page, base: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", "tech")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#live")


# where box 0 should be on screen: the image letterboxed in its frame (object-fit: contain)
EXPECTED_BOX = """() => {
  const img = document.getElementById('stream').getBoundingClientRect();
  const k = Math.min(img.width / %d, img.height / %d);
  const ox = img.left + (img.width - %d * k) / 2, oy = img.top + (img.height - %d * k) / 2;
  const r = document.querySelector('#cells-layer rect[data-index="0"]').getBoundingClientRect();
  const b = %s;
  return [r.left - (ox + b[0] * k), r.top - (oy + b[1] * k), r.width - (b[2] - b[0]) * k];
}"""


def test_cell_result_is_drawn_and_worded(served):
    base, services = served
    from playwright.sync_api import sync_playwright

    cells = RESULT["cells"]
    keep = os.environ.get("SMEARSCOPE_SCREENSHOTS")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 700})
            violations: list[str] = []
            page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
            _login(page, base)
            page.locator(f"#cells-layer rect >> nth={len(cells) - 1}").wait_for(state="attached")
            assert page.locator("#cells-layer rect").count() == len(cells)
            attrs = "rs => rs.map(r => [r.getAttribute('stroke'), r.getAttribute('class')])"
            drawn = page.eval_on_selector_all("#cells-layer rect", attrs)
            assert drawn == [[c["colour"], f"cell {c['state']} {c['kind']}"] for c in cells]
            assert page.get_attribute("#cells-layer", "viewBox") == f"0 0 {W} {H}"
            assert page.inner_text("#field-line") == RESULT["field_line"]
            legend = page.inner_text("#cells-legend")
            assert "Lymphocyte" in legend and "Blast" in legend and "unclassified — review" in legend
            assert page.locator("#cells-legend li").count() == 3
            assert page.inner_text("#slide-line") == "42 of 100 white cells counted; 3 blasts (7.1%)"
            assert page.is_visible("#slide-count")
            assert page.is_visible("#cells-toggle")

            # the outlines sit on their cells, the image letterboxed at any size
            for vp in ({"width": 1024, "height": 700}, {"width": 390, "height": 844}):
                page.set_viewport_size(vp)
                page.wait_for_timeout(100)
                dx, dy, dw = page.evaluate(EXPECTED_BOX % (W, H, W, H, cells[0]["box"]))
                assert max(abs(dx), abs(dy), abs(dw)) < 3, (vp, dx, dy, dw)
            scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            assert scroll <= inner

            assert page.locator("#cells-layer").is_visible()
            if keep:
                page.screenshot(path=str(Path(keep) / "live-cells-390.png"), full_page=True)
            page.uncheck("#cells-toggle")  # the technician looks at the cells without outlines
            assert page.locator("#cells-layer").is_hidden()
            page.check("#cells-toggle")
            assert page.locator("#cells-layer rect").count() == len(cells)
            assert not violations, violations

            fr = browser.new_page(viewport={"width": 390, "height": 844}, locale="fr-FR")
            _login(fr, base)
            fr.locator("#cells-layer rect >> nth=0").wait_for(state="attached")
            fr.locator("#field-line", has_text="globules blancs").wait_for()
            line = "4 globules blancs : 1 blaste, 2 × Lymphocyte, 1 non classé"
            assert fr.inner_text("#field-line") == line
            assert fr.inner_text("#slide-line").startswith(
                "42 sur 100 globules blancs comptés ; 3 blastes (7,1"
            )
            assert "non classé — à revoir" in fr.inner_text("#cells-legend")

            # the station counts its newest open sample: the page never shows it as another sample's
            sample = services.store.open_sample("LIVE-CELLS-1", user="tech")
            page.reload()
            page.locator("#cells-layer rect >> nth=0").wait_for(state="attached")
            assert page.locator("#slide-count").is_hidden()  # the count is of sample "s-1"
            rgb = _frame()
            mine = {**RESULT, "frame_size": [W, H], "slide": {**RESULT["slide"], "sample_id": sample["id"]}}
            services.live.publish_result({**mine, "captured_at": utc_now()}, rgb, None)
            page.locator("#slide-count").wait_for(state="visible")
            assert not page.is_visible("#tiles-toggle")  # a cell result has no tiles
        finally:
            browser.close()
