"""Take the screenshots docs/technician-guide.md shows, with Debian's chromium in headless mode.

    .venv/bin/python scripts/docs_screenshots.py [--model DIR]... [--out docs/screenshots] [--force]

Starts `smearscope run` on the replay camera (the shipped sample slides) with a throw-away data
directory and account, opens a sample, captures a few fields, and saves live.png, sample.png,
history.png (and result.png); with --calibration instead: calibration.png,
calibration-auto.png, calibration-micrometer.png and live-profile.png (the virtual HQ camera;
profiles made on the admin page). Existing files
are kept unless --force. Needs playwright (dev extra) and /usr/bin/chromium; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMEARSCOPE = Path(sys.prefix) / "bin" / "smearscope"
PASSWORD = "screenshots-only-password"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"smearscope run exited with {proc.returncode}")
        try:
            if requests.get(url + "/healthz", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not come up")


def shoot(models: list[str], out: Path, force: bool) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    wanted = {n: out / f"{n}.png" for n in ("live", "sample", "history", "result")}
    if not force and all(p.exists() for p in wanted.values()):
        print("all screenshots exist (use --force to retake)")
        return []
    work = Path(tempfile.mkdtemp(prefix="smearscope-shots-"))
    port = _free_port()
    config = work / "config.toml"
    model_list = ", ".join(f'"{m}"' for m in models)
    config.write_text(
        f'[device]\ndata_dir = "{work / "data"}"\n[camera]\nsource = "replay"\nfps = 1.0\n'
        f"[classifier]\nmodels = [{model_list}]\n[store]\nevery_s = 0\n"
        f'[web]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    env = dict(os.environ)
    subprocess.run(
        [str(SMEARSCOPE), "users", "add", "demo", "--role", "admin", "--config", str(config)],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        env=env,
    )
    proc = subprocess.Popen([str(SMEARSCOPE), "run", "--config", str(config)], env=env)
    url = f"http://127.0.0.1:{port}"
    taken = []
    try:
        _wait_http(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "/login")
            page.fill("input[name=username]", "demo")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.goto(url + "/")
            page.fill("input[name=slide_id]", "DEMO-0001")
            page.fill("textarea[name=notes]", "replay camera, dataset sample slides")
            page.locator("input[name=slide_id]").press("Enter")
            page.wait_for_selector("#call:not(.waiting)", timeout=60_000)  # the first result arrived
            for _ in range(4):  # a few fields into the sample, one per replayed slide
                page.wait_for_timeout(1500)
                if page.locator("#capture").is_enabled():
                    page.click("#capture")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(wanted["live"]))
            page.goto(url + "/samples")
            page.locator("table a").first.click()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(wanted["sample"]), full_page=True)
            page.goto(url + "/history")
            page.screenshot(path=str(wanted["history"]), full_page=True)
            page.locator("a[href*='/results/']").first.click()
            page.wait_for_load_state("networkidle")
            if page.locator("details summary").count():  # show the heatmap
                page.locator("details summary").first.click()
                page.wait_for_load_state("networkidle")
            page.screenshot(path=str(wanted["result"]), full_page=True)
            browser.close()
        taken = list(wanted.values())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return taken


def shoot_calibration(models: list[str], out: Path, force: bool) -> list[Path]:
    """The admin calibration page (a stage micrometer marked on a frozen frame, a typed profile, the
    list) and the live page's profile switch."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    names = ("calibration", "calibration-auto", "calibration-micrometer", "live-profile")
    wanted = {n: out / f"{n}.png" for n in names}
    if not force and all(p.exists() for p in wanted.values()):
        print("all calibration screenshots exist (use --force to retake)")
        return []
    work = Path(tempfile.mkdtemp(prefix="smearscope-shots-"))
    port = _free_port()
    config = work / "config.toml"
    model_list = ", ".join(f'"{m}"' for m in models)
    config.write_text(  # the virtual HQ camera (docs/examples/virtual-hq.toml), 40x: 0.155 µm/px
        f'[device]\ndata_dir = "{work / "data"}"\n'
        '[camera]\nsource = "replay"\nfps = 2.0\nvirtual = true\nwidth = 2028\nheight = 1520\n'
        "um_per_px = 0.155\ntint_r = 1.08\ntint_b = 0.9\nvignetting = 0.25\nnoise = 2.5\ndwell_s = 30.0\n"
        f"[classifier]\nmodels = [{model_list}]\n"
        f'[web]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    env = dict(os.environ)
    run = [str(SMEARSCOPE)]
    subprocess.run(
        [*run, "users", "add", "demo", "--role", "admin", "--config", str(config)],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        env=env,
    )
    for name, um in (("HQ cam, 100x oil", "0.0725"), ("HQ cam, 10x", "0.31")):
        subprocess.run(
            [*run, "calibrate", "--config", str(config), "--name", name, "--um-per-px", um],
            check=True,
            env=env,
        )
    proc = subprocess.Popen([*run, "run", "--config", str(config)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/login")
            page.fill("input[name=username]", "demo")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.goto(url + "/")
            page.wait_for_selector("#call:not(.waiting)", timeout=60_000)  # frames are coming
            page.goto(url + "/admin/calibration")
            page.fill("#auto-frames", "6")
            page.click("#auto-start")
            page.wait_for_selector("#auto-save:not([hidden]), #auto-msg.error", timeout=120_000)
            if page.locator("#auto-msg.error").count():
                raise SystemExit("automatic calibration refused: " + page.inner_text("#auto-msg"))
            page.fill("#auto-save input[name=name]", "Virtual HQ cam, 40x")
            page.locator("#auto-save").locator("xpath=ancestor::section").screenshot(
                path=str(wanted["calibration-auto"])
            )
            page.click("#auto-save button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.click("#mic-freeze")
            canvas = page.locator("#mic-canvas")
            canvas.wait_for(state="visible")
            canvas.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            box = canvas.bounding_box()
            y = box["y"] + box["height"] * 0.55
            page.mouse.click(box["x"] + box["width"] * 0.12, y)
            page.mouse.click(box["x"] + box["width"] * 0.88, y)
            page.fill("#mic-form input[name=length_um]", "250")
            page.fill("#mic-form input[name=name]", "HQ cam, 40x (micrometer)")
            page.uncheck("#mic-form input[name=activate]")
            page.locator("#mic-form").locator("xpath=ancestor::section").screenshot(
                path=str(wanted["calibration-micrometer"])
            )
            page.click("#mic-form button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(wanted["calibration"]), full_page=True)
            page.goto(url + "/")
            page.wait_for_selector("#call:not(.waiting)", timeout=60_000)
            page.locator(".panel").screenshot(path=str(wanted["live-profile"]))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return list(wanted.values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="bundle dir (default: the repository's models/DEFAULT)")
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    p.add_argument("--force", action="store_true")
    p.add_argument("--calibration", action="store_true", help="the calibration pictures only")
    args = p.parse_args()
    models = args.model
    if not models:
        listing = REPO / "models" / "DEFAULT"
        names = [n.strip() for n in listing.read_text().splitlines() if n.strip() and not n.startswith("#")]
        models = [str(REPO / "models" / n) for n in names]
    take = shoot_calibration if args.calibration else shoot
    for path in take([str(Path(m).resolve()) for m in models], Path(args.out), args.force):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
