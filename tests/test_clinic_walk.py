"""A new technician's walk through the station in a real browser (Debian's chromium under the page's own
CSP), on a running `smearscope run`: switch to French and back, a finished sample's report printed (the
print stylesheet hides the menu and the page fits A4's width) and downloaded as a PDF in French, the
history, sample and upload pages at a phone's 390x844 with no sideways scrolling, and uploads from
elsewhere (auto scale; an image whose red cells cannot tell is answered with the offer of a typed scale,
and typing one selects "Typed" through upload.js, no inline script).
SMEARSCOPE_SCREENSHOTS=DIR keeps the screenshots and the downloaded PDF."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import cv2
import pytest
from make_tiny_bundle import SIGNED_TINY, sign_test
from test_browser import ARGS, CHROMIUM, _free_port
from webkit import running_daemon

from device.camera.replay import SAMPLES_LABEL_ROWS
from device.camera.virtual import SAMPLES_UM_PER_PX, VirtualMicroscope, VirtualOptics
from device.paths import SAMPLES_DIR
from device.preprocess import read_image
from device.store.store import Store
from device.web import auth

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
A4_WIDTH_PX = 794  # 210 mm at the browser's 96 px per inch
SLIDE = "WALK-2026-0001"
PASSWORD = "walk-pass-1"


def _bundle_with_scale(tmp_path: Path) -> Path:
    """The suite's tiny bundle declaring a physical scale (its 64-px input holds what a 224-px sample
    image holds), so uploads are rescaled and "auto" has something to decide."""
    bundle = tmp_path / "tiny-scaled"
    shutil.copytree(SIGNED_TINY, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["input"]["um_per_px"] = round(SAMPLES_UM_PER_PX * 224 / manifest["input"]["width"], 4)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (bundle / "signature.json").unlink()
    return sign_test(bundle)


def _finished_sample(data: Path) -> str:
    """A finished sample of three stored fields, one of them reviewed (made before the daemon starts)."""
    store = Store(data)
    auth.add_user(store.conn, "tech", "technician", PASSWORD)
    s = store.open_sample(SLIDE, "EDTA", "tech")
    first = None
    for i, path in enumerate(sorted(SAMPLES_DIR.glob("*.jpg"))[:3]):
        sha = store.put_image(path.read_bytes())
        rec = store.add_result(
            {"source": "camera", "sample_id": s["id"], "image_sha256": sha, "label": "Benign",
             "confidence": 0.9, "abstained": False, "probabilities": {"Benign": 0.9, "Pre": 0.1},
             "quality": {"ok": True}, "models": [{"name": "tiny", "sha256": "e" * 64}]}
        )  # fmt: skip
        first = first or rec
        if i == 0:
            store.add_review(rec["id"], None, "", "tech")
    store.finish_sample(s["id"])
    store.close()
    return s["id"]


@pytest.fixture
def station(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/system-deps.sh: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    data = tmp_path / "data"
    sample_id = _finished_sample(data)
    port = _free_port()
    model = str(_bundle_with_scale(tmp_path))
    args = ["run", "--data-dir", str(data), "--port", str(port), "--model", model]
    with running_daemon(args, port, tmp_path / "daemon.log") as base:
        yield base, sample_id


def _elsewhere_images(folder: Path) -> tuple[Path, Path]:
    """(a field another microscope took at 0.25 µm/px, whose red cells tell its scale: spread 0.29,
    0.45 allowed; a dataset image blurred out of focus, whose red cells cannot: spread 0.64)."""
    images = [read_image(p) for p in sorted(SAMPLES_DIR.glob("*.jpg"))[:12]]
    optics = VirtualOptics(width=640, height=480, um_per_px=0.25)
    scope = VirtualMicroscope.from_images(images, optics, 5.0, trim_bottom=SAMPLES_LABEL_ROWS)
    field = folder / "colleague-field.png"
    cv2.imwrite(str(field), cv2.cvtColor(scope.frame(25), cv2.COLOR_RGB2BGR))
    blurred = folder / "colleague-blurred.png"
    bgr = cv2.imread(str(SAMPLES_DIR / "Benign__WBC-Benign-272.jpg"))
    cv2.imwrite(str(blurred), cv2.GaussianBlur(bgr, (0, 0), 4))
    return field, blurred


def _no_sideways_scroll(page, what: str) -> None:
    scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{what}: {scroll} px wide at {inner}"


def _pick_language(page, code: str) -> None:
    page.select_option("#lang-pick select", code)
    page.click("#lang-pick input[type=submit]")
    page.wait_for_load_state("load")


def test_a_new_technician_walks_the_station(station, tmp_path):
    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader

    base, sample_id = station
    field, uneven = _elsewhere_images(tmp_path)
    keep = os.environ.get("SMEARSCOPE_SCREENSHOTS")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context(viewport=PHONE, accept_downloads=True, locale="en-GB")
            page = context.new_page()
            violations: list[str] = []
            page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
            page.goto(base + "/login")
            page.fill("input[name=username]", "tech")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#live")

            # French, remembered for this user
            _pick_language(page, "fr")
            assert page.get_attribute("html", "lang") == "fr"
            assert "Historique" in page.inner_text("header nav")

            # history, the finished sample and its report at a phone's width
            for url in ("/history", f"/samples/{sample_id}"):
                page.goto(base + url)
                page.wait_for_load_state("load")
                _no_sideways_scroll(page, url)
            assert SLIDE in page.inner_text("main")
            page.goto(base + f"/samples/{sample_id}/report")
            _no_sideways_scroll(page, "report")
            assert "Résultat de la lame" in page.inner_text("#report")

            # printed: the menu and buttons are hidden and the page fits A4's width
            page.set_viewport_size({"width": A4_WIDTH_PX, "height": 1123})
            page.emulate_media(media="print")
            shown = page.evaluate(
                "() => [...document.querySelectorAll('header nav, #lang-pick, .report-actions, footer')]"
                ".map(e => e.getClientRects().length)"
            )
            assert len(shown) >= 3 and set(shown) == {0}, shown  # nothing of them is drawn
            _no_sideways_scroll(page, "printed report")
            assert len(PdfReader(io.BytesIO(page.pdf(format="A4"))).pages) == 1
            page.emulate_media(media="screen")
            page.set_viewport_size(PHONE)

            # downloaded: the station's PDF, in French
            with page.expect_download() as got:
                page.click("#report-pdf")
            pdf_path = got.value.path()
            text = " ".join(" ".join(pg.extract_text() for pg in PdfReader(pdf_path).pages).split())
            for said in ("Résultat de la lame", "Relectures", "Imprimé", SLIDE, "Aide au dépistage"):
                assert said in text, said
            if keep:
                shutil.copy(pdf_path, Path(keep) / "walk-report-fr.pdf")

            # uploads from elsewhere, at a phone's width: "auto" is the default
            page.goto(base + "/upload")
            _no_sideways_scroll(page, "upload")
            assert page.is_checked("input[name=um_per_px][value=auto]")
            page.set_input_files("input[type=file]", [str(field), str(uneven)])
            page.click("#upload-form button[type=submit]")
            page.wait_for_selector("#upload-results")
            _no_sideways_scroll(page, "upload results")
            cards = page.locator("#upload-results > .card")
            assert cards.count() == 2
            told = cards.nth(0).inner_text()
            assert (
                "(d’après les globules rouges)" in told and not cards.nth(0).locator(".scale-unknown").count()
            )
            refused = cards.nth(1)
            assert not refused.locator("progress").count() and "0.0%" not in refused.inner_text()  # no call
            offer = refused.locator("p.scale-unknown")
            assert "échelle" in offer.inner_text() and offer.locator("a[href='#scale-typed']").count() == 1
            if keep:
                page.screenshot(path=str(Path(keep) / "walk-upload-390.png"), full_page=True)

            # the offer taken: typing the scale selects "Typed" (upload.js), and the image is classified
            page.click("a[href='#scale-typed']")
            page.fill("#scale-typed", "0,479".replace(",", "."))
            assert page.is_checked("#scale-typed-radio")
            page.set_input_files("input[type=file]", str(uneven))
            page.click("#upload-form button[type=submit]")
            page.wait_for_selector("#upload-results")
            card = page.locator("#upload-results > .card").nth(0)
            assert "0,479 µm/px (saisie)" in card.inner_text() and not card.locator(".scale-unknown").count()

            # back to English
            _pick_language(page, "en")
            assert page.get_attribute("html", "lang") == "en" and "History" in page.inner_text("header nav")
            assert not violations, violations
        finally:
            browser.close()
