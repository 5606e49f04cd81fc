"""The live page in a real browser when the stream budget is spent (issue 13, item 1): results still
arrive (polled) and the picture falls back to still frames."""

from __future__ import annotations

from pathlib import Path

import pytest
from webkit import running_daemon

from device.store.store import Store
from device.web import auth
from tests.test_browser import ARGS, CHROMIUM, RESULTS_ARRIVED, TINY, _free_port

pytestmark = pytest.mark.browser


@pytest.fixture
def tight_daemon(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/system-deps.sh: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    data = tmp_path / "data"
    store = Store(data)
    auth.add_user(store.conn, "tech", "technician", "browser-pass-1")
    store.close()
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[device]\ndata_dir = "{data}"\n[web]\nport = {port}\nmax_streams = 1\nmax_streams_per_user = 1\n'
    )
    args = ["run", "--config", str(config), "--model", str(TINY)]
    with running_daemon(args, port, tmp_path / "daemon.log") as base:
        yield base


def test_live_page_falls_back_to_stills_and_polling(tight_daemon):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context(bypass_csp=True)
            page = context.new_page()
            page.goto(tight_daemon + "/login")
            page.fill("input[name=username]", "tech")
            page.fill("input[name=password]", "browser-pass-1")
            page.click("button[type=submit]")
            page.wait_for_selector("#live")
            # one stream allowed: the MJPEG <img> takes it, the SSE is refused -> results are polled
            page.wait_for_function(RESULTS_ARRIVED, timeout=30000)
            # a second tab of the same user: its stream is refused too -> still frames
            second = context.new_page()  # same browser profile: same login
            second.goto(tight_daemon + "/")
            second.wait_for_function("document.getElementById('live').dataset.stills === '1'", timeout=20000)
            second.wait_for_function(
                "document.getElementById('stream').src.indexOf('/live/frame.jpg') >= 0"
                " && document.getElementById('stream').naturalWidth > 0",
                timeout=20000,
            )
            second.wait_for_function(RESULTS_ARRIVED, timeout=30000)
        finally:
            browser.close()
