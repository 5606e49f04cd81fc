"""The cell gallery in a real browser (Debian's chromium, the page's own CSP): no sideways scrolling on a
phone, reclassifying with the keyboard (arrow keys, a number key) and with a click (the menu), the
counts and the call updating in place."""

from __future__ import annotations

import pytest
from test_browser import ARGS, CHROMIUM, daemon  # noqa: F401 - fixture
from test_browser_clinic import VIEWPORTS, WIDE, _login, _width
from test_gallery import add_field, cell

from device.store.store import Store

pytestmark = pytest.mark.browser


def test_gallery_by_keyboard_and_click_at_phone_width(daemon, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    store = Store(tmp_path / "data", temps_older_than_s=3600)
    sample = store.open_sample("GALLERY-ŁÓDŹ-0000000000000000000000000000000000001", user="tech")
    for _ in range(3):
        add_field(store, sample["id"], [cell(i) for i in range(4)] + [cell(4, "unclassified", None)])
    store.close()
    url = f"{daemon}/samples/{sample['id']}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORTS[0])
            violations: list[str] = []
            page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
            _login(page, daemon)
            for vp in VIEWPORTS:
                page.set_viewport_size(vp)
                page.goto(url)
                page.wait_for_load_state("load")
                scroll, inner = _width(page)
                assert scroll <= inner, f"{vp}: {scroll} px wide: {page.evaluate(WIDE)}"
            page.set_viewport_size(VIEWPORTS[0])
            page.goto(url)
            assert "count more cells: 12 of 100" in page.inner_text("#slide-call")
            assert page.locator(".cell-thumb").count() == 15
            # keyboard: the first thumbnail (an unclassified cell: listed before the normal types),
            # arrow right to the next, "1" = the first label of the menu (the blast)
            page.focus(".cell-thumb >> nth=0")
            page.keyboard.press("ArrowRight")
            key = page.evaluate("() => document.activeElement.dataset.key")
            page.keyboard.press("1")
            page.wait_for_function(
                "() => document.querySelector('#slide-call').textContent.includes('1 blast')"
            )
            assert page.evaluate("() => document.activeElement.dataset.key") == key  # focus stays on it
            assert page.locator('[data-group="blast_b"] .cell-thumb').count() == 1
            assert "13 of 100 white cells counted · 1 blast(s)" in page.inner_text("#slide-figures")
            # click: the menu opens; "not a white cell" excludes the cell from the counts
            page.click('[data-group="lymphocyte"] .cell-thumb >> nth=0')
            page.wait_for_selector("#cell-menu:not([hidden])")
            scroll, inner = _width(page)
            assert scroll <= inner, f"menu open: {scroll} px wide: {page.evaluate(WIDE)}"
            page.click('#cell-menu [data-label="not_a_cell"]')
            page.wait_for_selector('[data-group="not_a_cell"] .cell-thumb')
            assert "12 of 100 white cells counted" in page.inner_text("#slide-figures")
            # Escape closes the menu and gives the focus back
            page.focus(".cell-thumb >> nth=0")
            page.keyboard.press("Enter")
            page.wait_for_selector("#cell-menu:not([hidden])")
            page.keyboard.press("Escape")
            page.wait_for_selector("#cell-menu", state="hidden")
            assert page.evaluate("() => document.activeElement.classList.contains('cell-thumb')")
            # the thumbnails are images the page may show (the CSP allows them)
            assert page.evaluate("() => document.querySelector('.cell-thumb img').naturalWidth") > 0
            assert not violations, violations
        finally:
            browser.close()
