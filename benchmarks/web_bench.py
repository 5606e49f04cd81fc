"""Benchmarks of the technician's page (not timed tests). Prints JSON; `--json OUT` also writes it.

load    first load of the live page on loopback (HTML + its CSS/JS/icon, streams excluded):
        wall time and bytes transferred. Targets: < 200 ms, < 300 KB.
history with N records (default 1,000,000) in the store: history page, its filters, the samples
        list and a sample page, p50/p95 over repeats. Target: p95 < 100 ms.
mjpeg   a real daemon (replay camera unpaced, so the classifier is the bottleneck): classifier rate
        with and without an open MJPEG stream, alternating windows. Target: <= 5 % lower.

.venv/bin/python benchmarks/web_bench.py --part all [--records 1000000] [--keep-db DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from webkit import PASSWORD, FakeServices, login, make_app  # noqa: E402

from device.web.server import make_server  # noqa: E402


def _serve(app):
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.run, daemon=True).start()
    return server, f"http://127.0.0.1:{server.effective_port}"


def _login(base: str) -> requests.Session:
    s = requests.Session()
    html = s.get(base + "/login").text
    tok = re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)
    s.post(base + "/login", data={"username": "tech", "password": PASSWORD, "csrf_token": tok})
    return s


def bench_load(repeats: int = 20) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        app, _ = make_app(Path(tmp))
        server, base = _serve(app)
        try:
            times, sizes = [], []
            for i in range(repeats + 1):
                s = _login(base)  # a fresh browser: no cache
                t0 = time.perf_counter()
                r = s.get(base + "/")
                total = len(r.content) + sum(len(k) + len(v) + 4 for k, v in r.headers.items())
                assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', r.text)
                for a in assets:
                    ra = s.get(base + a)
                    total += len(ra.content) + sum(len(k) + len(v) + 4 for k, v in ra.headers.items())
                dt = (time.perf_counter() - t0) * 1000
                s.close()
                if i:  # the very first request warms Jinja's template cache
                    times.append(dt)
                    sizes.append(total)
        finally:
            server.close()
    return {
        "first_load_ms_p50": round(float(np.percentile(times, 50)), 1),
        "first_load_ms_p95": round(float(np.percentile(times, 95)), 1),
        "first_load_bytes": int(max(sizes)),
        "assets": assets,
        "note": "live page HTML + CSS + JS + icon fetched one after another (a browser fetches in parallel); "
        "the MJPEG and SSE streams are excluded (they never end)",
    }


def bench_load_browser(repeats: int = 10) -> dict:
    """First loads in headless chromium, a fresh profile each time (nothing cached): the login page
    (every asset fetched), then the live page right after logging in (assets cached by then).
    Times are navigation timing up to DOMContentLoaded; bytes count every response but the streams."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return {"skipped": "chromium is not installed"}
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    out: dict[str, list[float]] = {"login_ms": [], "login_bytes": [], "live_ms": [], "live_bytes": []}
    with tempfile.TemporaryDirectory() as tmp:
        app, svc = make_app(Path(tmp))
        stop = threading.Event()

        def camera() -> None:  # like the daemon: new frames and results at 5 fps
            k = 0
            while not stop.is_set():
                svc.push_frame(np.full((480, 640, 3), 100 + k % 100, np.uint8))
                k += 1
                time.sleep(0.2)

        threading.Thread(target=camera, daemon=True).start()
        server, base = _serve(app)

        def timed(page, url: str, key: str) -> None:
            got = {"bytes": 0}

            def count(resp) -> None:
                if "/live/" not in resp.url:
                    got["bytes"] += len(resp.body()) + sum(
                        len(k) + len(v) + 4 for k, v in resp.headers.items()
                    )

            page.on("response", count)
            page.goto(base + url, wait_until="domcontentloaded")
            page.wait_for_timeout(300)
            page.remove_listener("response", count)
            nav = json.loads(page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])"))
            out[key + "_ms"].append(nav["domContentLoadedEventEnd"] - nav["startTime"])
            out[key + "_bytes"].append(got["bytes"])

        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
                for _ in range(repeats):
                    ctx = browser.new_context()
                    page = ctx.new_page()
                    timed(page, "/login", "login")
                    page.fill("input[name=username]", "tech")
                    page.fill("input[name=password]", PASSWORD)
                    page.click("button[type=submit]")
                    page.wait_for_selector("#live")
                    timed(page, "/", "live")
                    ctx.close()
                browser.close()
        finally:
            stop.set()
            server.close()
    res = {}
    for key, vals in out.items():
        if key.endswith("_ms"):
            res[key[:-3] + "_dcl_ms_p50"] = round(float(np.percentile(vals, 50)), 1)
            res[key[:-3] + "_dcl_ms_p95"] = round(float(np.percentile(vals, 95)), 1)
        else:
            res[key] = int(max(vals))
    return res


LABELS = ["Benign", "Early", "Pre", "Pro"]


def populate(store, n: int, per_sample: int = 50, seed: int = 0) -> dict:
    """n classification records (1 % reviewed, ~10 % uncertain) in n/per_sample samples over a year."""
    rng = random.Random(seed)
    conn = store.conn
    start = datetime(2025, 11, 1, tzinfo=UTC)
    span = timedelta(days=365).total_seconds()
    n_samples = max(1, n // per_sample)
    models = json.dumps([{"name": "bench", "sha256": "0" * 64}])
    quality = json.dumps({"ok": True, "focus": 120.0, "clipped_high": 0.0, "clipped_low": 0.0, "stain": 0.3})
    conn.execute("BEGIN")
    sample_ids = []
    for k in range(n_samples):
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        at = (start + timedelta(seconds=span * k / n_samples)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        conn.execute(
            "INSERT INTO samples (id, slide_id, notes, status, started_at, created_by) VALUES (?,?,?,?,?,?)",
            (sid, f"LAB-{k:06d}", "", "finished" if k < n_samples - 1 else "open", at, "tech"),
        )
        sample_ids.append(sid)
    rows, reviews = [], []
    for i in range(n):
        at = (start + timedelta(seconds=span * i / n)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        p = [rng.random() ** 3 for _ in LABELS]
        tot = sum(p)
        p = [x / tot for x in p]
        idx = max(range(4), key=p.__getitem__)
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        sha = f"{rng.getrandbits(256):064x}"
        probs = json.dumps(dict(zip(LABELS, [round(x, 4) for x in p], strict=True)))
        sid = sample_ids[i // per_sample]
        rows.append((rid, "dev", sid, at, "camera", "classification", None, models, probs,
                     LABELS[idx], p[idx], int(p[idx] < 0.45), quality, sha, "synced"))  # fmt: skip
        if rng.random() < 0.01:
            reviews.append((str(uuid.UUID(int=rng.getrandbits(128))), "dev", sample_ids[i // per_sample], at,
                            "review", "review", rid, models, probs, rng.choice(LABELS), 1.0, 0, quality, sha,
                            "synced"))  # fmt: skip
        if len(rows) >= 50_000:
            _insert(conn, rows + reviews)
            rows, reviews = [], []
    _insert(conn, rows + reviews)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    return {"samples": sample_ids, "first": start}


def _insert(conn, rows) -> None:
    conn.executemany(
        "INSERT INTO results (id, device_id, sample_id, captured_at, source, kind, review_of, models_json, "
        "probabilities_json, label, confidence, abstained, quality_json, image_sha256, sync_state) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )


def bench_history(records: int, repeats: int, keep_db: str | None) -> dict:
    from device.config import load_config
    from device.store.store import Store
    from device.web import auth, create_app

    tmp = tempfile.TemporaryDirectory()
    root = Path(keep_db) if keep_db else Path(tmp.name)
    config = load_config(data_dir=root / "data", system_config=None, env={})
    svc = FakeServices(config, Store(config.device.data_dir, reserve_bytes=0))
    if auth.get_user(svc.store.conn, "tech") is None:
        auth.add_user(svc.store.conn, "tech", "technician", PASSWORD)
    app = create_app(config, svc)
    t0 = time.perf_counter()
    store = svc.store
    have = store.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    if have < records:
        populate(store, records - have)
    fill_s = time.perf_counter() - t0
    conn = store.conn
    total = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    mid_seq = total // 2
    sample = conn.execute("SELECT id FROM samples ORDER BY started_at LIMIT 1 OFFSET 500").fetchone()[0]
    open_sample = conn.execute("SELECT id FROM samples WHERE status = 'open'").fetchone()[0]
    client = app.test_client()
    login(client)
    urls = {
        "history": "/history",
        "history_deep_page": f"/history?before={mid_seq}",
        "filter_label": "/history?label=Pre",
        "filter_uncertain": "/history?uncertain=yes",
        "filter_reviewed": "/history?reviewed=yes",
        "filter_not_reviewed": "/history?reviewed=no",
        "filter_date_week": "/history?from=2026-03-01&to=2026-03-07",
        "filter_date_year": "/history?from=2025-11-01&to=2026-11-01",
        "filter_date_year_page2": None,  # filled below with the cursor of the year's first page
        "filter_label_uncertain": "/history?label=Early&uncertain=yes",
        "filter_sample": f"/history?sample={sample}",
        "samples": "/samples",
        "sample_page_finished": f"/samples/{sample}",
        "sample_page_open": f"/samples/{open_sample}",
        "api_results": "/api/v1/results?limit=50",
    }
    first = client.get("/api/v1/results?from=2025-11-01&to=2026-11-01").get_json()
    urls["filter_date_year_page2"] = f"/history?from=2025-11-01&to=2026-11-01&before={first['next_before']}"
    out = {"records": int(total), "fill_s": round(fill_s, 1)}
    for name, url in urls.items():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            r = client.get(url)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, (url, r.status_code)
        out[name] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                     "p95_ms": round(float(np.percentile(times, 95)), 1)}  # fmt: skip
    svc.store.close()
    tmp.cleanup()
    return out


def _replay_folder(dst: Path, size: tuple[int, int]) -> Path:
    """The shipped sample slides resized to a camera's frame size (what the stream would encode)."""
    import cv2

    from device.paths import SAMPLES_DIR

    dst.mkdir(parents=True)
    for p in sorted(SAMPLES_DIR.glob("*.jpg")):
        img = cv2.imread(str(p))
        cv2.imwrite(str(dst / p.name), cv2.resize(img, size, interpolation=cv2.INTER_CUBIC))
    return dst


def bench_mjpeg(seconds: float, rounds: int, model: str | None, frame_size: tuple[int, int]) -> dict:
    from device.config import load_config
    from device.paths import default_bundle_dirs
    from device.services import Services
    from device.web import auth, create_app

    bundle = model or (
        str(default_bundle_dirs()[0]) if default_bundle_dirs() else str(REPO / "tests/data/tiny-bundle")
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            data_dir=Path(tmp) / "data", system_config=None, env={},
            overrides={"classifier": {"models": [bundle]}, "store": {"every_s": 3600.0},
                       "camera": {"path": str(_replay_folder(Path(tmp) / "frames", frame_size))}},
        )  # fmt: skip
        services = Services(config, pace=False, sync=False)
        auth.add_user(services.store.conn, "tech", "technician", PASSWORD)
        app = create_app(config, services)
        server, base = _serve(app)
        services.start()
        tel = services.telemetry
        try:
            time.sleep(3)  # warm up

            def rate() -> float:
                c0, t0 = tel.counts["classified"], time.monotonic()
                time.sleep(seconds)
                return (tel.counts["classified"] - c0) / (time.monotonic() - t0)

            off, on, got = [], [], {"bytes": 0}
            s = _login(base)
            for _ in range(rounds):
                off.append(rate())
                stop = threading.Event()

                def watch(stop: threading.Event = stop) -> None:
                    with s.get(base + "/live/stream.mjpg", stream=True, timeout=10) as r:
                        for chunk in r.iter_content(65536):
                            got["bytes"] += len(chunk)
                            if stop.is_set():
                                return

                th = threading.Thread(target=watch, daemon=True)
                th.start()
                time.sleep(0.5)
                on.append(rate())
                stop.set()
                th.join(5)
            from device.pipeline.live import encode_jpeg

            frame = services.live.frames.latest()[1].rgb
            t = time.perf_counter()
            for _ in range(20):
                encode_jpeg(frame, services.live.jpeg_quality)
            encode_ms = (time.perf_counter() - t) * 1000 / 20
        finally:
            services.stop()
            server.close()
    off_m, on_m = float(np.mean(off)), float(np.mean(on))
    return {
        "bundle": Path(bundle).name,
        "classifier_fps_without_stream": round(off_m, 1),
        "classifier_fps_with_stream": round(on_m, 1),
        "rate_change_pct": round(100 * (on_m - off_m) / off_m, 2),
        "windows": {"off": [round(x, 1) for x in off], "on": [round(x, 1) for x in on]},
        "mjpeg_fps": config.web.mjpeg_fps,
        "frame_shape": list(frame.shape),
        "jpeg_encode_ms": round(encode_ms, 2),
        # what the stream costs, whatever the noise of the shared machine: one encode per streamed frame
        "stream_cpu_pct_of_one_core": round(encode_ms * config.web.mjpeg_fps / 10, 2),
        "stream_bytes": got["bytes"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["load", "load-browser", "history", "mjpeg", "all"], default="all")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--keep-db", metavar="DIR", help="keep (and reuse) the populated store here")
    ap.add_argument("--seconds", type=float, default=8.0, help="mjpeg: length of each window")
    ap.add_argument("--rounds", type=int, default=3, help="mjpeg: off/on window pairs")
    ap.add_argument(
        "--model", help="mjpeg: bundle dir (default: the first default bundle, else the tiny one)"
    )
    ap.add_argument("--frame-size", default="1280x960", help="mjpeg: replay frames resized to WxH")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    out = {}
    if args.part in ("load", "all"):
        out["load"] = bench_load()
    if args.part in ("load-browser", "all"):
        out["load_browser"] = bench_load_browser()
    if args.part in ("history", "all"):
        out["history"] = bench_history(args.records, args.repeats, args.keep_db)
    if args.part in ("mjpeg", "all"):
        w, h = (int(x) for x in args.frame_size.lower().split("x"))
        out["mjpeg"] = bench_mjpeg(args.seconds, args.rounds, args.model, (w, h))
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
