"""Sync benchmark: a device backlog (default 10,000 records naming 1,000 images) flushed to a hub over
loopback. The hub runs as `smearscope-hub serve` (gunicorn workers) on a throwaway PostgreSQL cluster,
or on --db URL. Reports records/s and the hub's own request time (p50/p95, from its Server-Timing
header) per endpoint.

    .venv/bin/python benchmarks/sync_bench.py [--records 10000] [--images 1000] [--batch-size 500]
        [--workers 2] [--db URL|sqlite] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from device.store import Store
from device.sync import HubClient, Outbox, Syncer
from hub import db as hubdb
from hub import tokens
from hub.pgcluster import TempPostgres, free_port


def smear_like_jpeg(rng: np.random.Generator, size: int = 224) -> bytes:
    """A blurred-noise 224x224 JPEG: about the size of a real field image, unique per call."""
    img = rng.integers(0, 255, (size // 4, size // 4, 3), dtype=np.uint8)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def make_backlog(data_dir: Path, n_records: int, n_images: int) -> tuple[Store, int]:
    store = Store(data_dir, reserve_bytes=0)
    rng = np.random.default_rng(0)
    shas, total = [], 0
    for _ in range(n_images):
        data = smear_like_jpeg(rng)
        total += len(data)
        shas.append(store.put_image(data))
    sample = store.open_sample("bench-slide")
    c = store.conn  # one transaction: the backlog is input, not what is measured
    c.execute("BEGIN")
    for i in range(n_records):
        c.execute(
            "INSERT INTO results (id, device_id, sample_id, captured_at, monotonic_ns, boot_id, source, kind,"
            " "
            "models_json, probabilities_json, label, confidence, abstained, quality_json, image_sha256) "
            "VALUES (?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?, 'bench', 'camera', 'classification', "
            "?, ?, ?, ?, ?, ?, ?)",
            (
                f"00000000-0000-4000-8000-{i:012d}",
                store.device_id,
                sample["id"],
                i,
                json.dumps([{"name": "mobilenet_v2_int8", "sha256": "0" * 64}]),
                json.dumps({"Benign": 0.05, "Early": 0.05, "Pre": 0.85, "Pro": 0.05}),
                "Pre",
                0.85,
                int(i % 17 == 0),
                json.dumps(
                    {"ok": True, "focus": 120.5, "clipped_high": 0.0, "clipped_low": 0.0, "stain": 0.3}
                ),
                shas[i % len(shas)] if shas else None,
            ),
        )
    c.execute("COMMIT")
    return store, total // max(n_images, 1)


def start_hub(url: str, workers: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "hub.cli",
        "serve",
        "--db",
        url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the hub did not start")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=1_000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument(
        "--db", default="", help="hub database URL, 'sqlite', or empty for a throwaway PostgreSQL"
    )
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    pg = None
    if args.db == "sqlite":
        url, args.workers = f"sqlite:///{tmp / 'hub.db'}", 1
    elif args.db:
        url = args.db
    else:
        pg = TempPostgres().start()
        url = pg.create_database("bench")
    engine = hubdb.make_engine(url)
    hubdb.upgrade(engine)
    with hubdb.session_factory(engine)() as s:
        token = tokens.add_device(s, f"bench-{os.getpid()}")
    engine.dispose()
    t = time.perf_counter()
    store, avg_image = make_backlog(tmp / "device", args.records, args.images)
    backlog_s = time.perf_counter() - t
    proc, base = start_hub(url, args.workers, args.threads)
    timings: dict[str, list[float]] = defaultdict(list)

    def hook(resp, *a, **kw):  # noqa: ANN001, ANN202
        m = re.search(r"dur=([0-9.]+)", resp.headers.get("Server-Timing", ""))
        if m:
            path = re.sub(r"/images/[0-9a-f]{64}", "/images/<sha>", resp.request.path_url)
            timings[f"{resp.request.method} {path}"].append(float(m.group(1)))

    try:
        client = HubClient(base, token, timeout_s=60)
        client.session.hooks["response"].append(hook)
        t = time.perf_counter()
        summary = Syncer(Outbox(store), client, batch_size=args.batch_size).run()
        elapsed = time.perf_counter() - t
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        if pg is not None:
            pg.stop()
    all_t = [x for v in timings.values() for x in v]
    out = {
        "database": "sqlite" if url.startswith("sqlite") else "postgresql",
        "hub_workers": args.workers,
        "hub_threads": args.threads,
        "records": args.records,
        "images": args.images,
        "avg_image_bytes": avg_image,
        "batch_size": args.batch_size,
        "backlog_build_s": round(backlog_s, 2),
        "flush_s": round(elapsed, 2),
        "records_per_s": round(args.records / elapsed, 1),
        "sent": summary.sent,
        "images_sent": summary.images_sent,
        "pending_after": summary.to_dict()["pending"],
        "hub_request_ms_p50": round(pct(all_t, 50), 2),
        "hub_request_ms_p95": round(pct(all_t, 95), 2),
        "requests": len(all_t),
        "per_endpoint": {
            k: {
                "n": len(v),
                "p50_ms": round(pct(v, 50), 2),
                "p95_ms": round(pct(v, 95), 2),
                "mean_ms": round(statistics.fmean(v), 2),
            }
            for k, v in sorted(timings.items())
        },
        "target": "10,000 records + 1,000 images in <= 60 s on PostgreSQL",
        "ok": summary.sent == args.records and elapsed <= 60,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
