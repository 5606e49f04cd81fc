"""Model updates flowing down, measured on a real daemon (not a timed test). Prints JSON; `--json OUT`
also writes it.

For each poll interval: a station (Services: replay camera, the shipped ensemble's first bundle, sync on)
classifies while a hub on loopback publishes a set = the shipped bundles (both signed by the project
key). Measured: seconds from `publish` to the new ensemble serving in the daemon, bytes the hub sent
the station (every response body, counted by a WSGI wrapper) vs the update's file bytes, and frames
classified per second before / during / after the update (classification must not stop).
Then `offline`: the hub is unreachable; the station keeps classifying (frames counted over a window)
while its update checks fail and back off.

.venv/bin/python benchmarks/fleet_update_bench.py [--poll 1 5] [--repeat 3] \
    [--json benchmarks/results/fleet_update.json]

The ensemble before the update is one bundle and after it two, so the frame rate after is the two-model
rate (lower on a busy 2-core machine); "during" counts frames from publish to serving.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from hubkit import Hub, Server  # noqa: E402

from device.config import load_config  # noqa: E402
from device.models import modelstore  # noqa: E402
from device.models.signing import PROJECT_KEY  # noqa: E402
from device.paths import SAMPLES_DIR  # noqa: E402
from device.services import Services  # noqa: E402
from hub.fleet import updates as fleet  # noqa: E402

SHIPPED = [REPO / "models" / "mobilenetv2-all4-int8", REPO / "models" / "efficientnet-lite0-all4-int8"]


class CountBytes:
    """WSGI wrapper: sums response body bytes (what the hub sent)."""

    def __init__(self, app: Any):
        self.app = app
        self.sent = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        for chunk in self.app(environ, start_response):
            with self.lock:
                self.sent += len(chunk)
            yield chunk


def _station(root: Path, hub_url: str, token: str, poll_s: float) -> Services:
    models = root / "models"
    modelstore.install(SHIPPED[0], models, log=lambda _m: None)
    (models / "DEFAULT").write_text(f"{SHIPPED[0].name}\n")
    os.environ["SMEARSCOPE_MODELS_DIR"] = str(models)
    config = load_config(
        data_dir=root / "data",
        system_config=None,
        env={},
        overrides={
            "classifier": {"threads": 1},
            "camera": {"path": str(SAMPLES_DIR), "fps": 5.0},
            "store": {"every_s": 5.0, "reserve_mb": 0},
            "sync": {"enabled": True, "hub_url": hub_url, "token": token, "interval_s": 5.0, "timeout_s": 5},
            "models": {"trusted_keys": ["project"], "update_policy": "auto", "poll_s": poll_s},
        },
    )
    return Services(config)


def _frames(s: Services) -> int:
    return int(s.status()["frames_classified"])


def _rate(s: Services, seconds: float) -> float:
    n0, t0 = _frames(s), time.monotonic()
    time.sleep(seconds)
    return (_frames(s) - n0) / (time.monotonic() - t0)


def run_update(poll_s: float, window_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        root = Path(tmp)
        hub = Hub(f"sqlite:///{root / 'hub.db'}")
        counted = CountBytes(hub.app)
        server = Server(counted)
        s = _station(root / "st", server.url, hub.device_token, poll_s)
        s.start()
        try:
            deadline = time.monotonic() + 60
            while _frames(s) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(poll_s + 1)  # the first poll (no set yet) is behind us
            before = _rate(s, window_s)
            sent0 = counted.sent
            with hub.sessions() as db:
                fleet.add_key(db, PROJECT_KEY.read_text())
                n_frames0 = _frames(s)
                t0 = time.monotonic()
                fleet.publish(db, SHIPPED, set_name="bench")
            names = [b.name for b in SHIPPED]
            while s.pipeline.ensemble.names != names and time.monotonic() - t0 < 300:
                time.sleep(0.02)
            seconds = time.monotonic() - t0
            during = (_frames(s) - n_frames0) / seconds
            after = _rate(s, window_s)
            sent = counted.sent - sent0
            update_bytes = sum(p.stat().st_size for p in SHIPPED[1].rglob("*") if p.is_file())
            return {
                "poll_s": poll_s,
                "publish_to_serving_s": round(seconds, 2),
                "installed": s.pipeline.ensemble.names == names,
                "hub_bytes_sent": sent,
                "new_bundle_bytes": update_bytes,
                "downloaded_file_bytes": s.sync_worker.updater.bytes_downloaded,
                "fps_before": round(before, 2),
                "fps_during_update": round(during, 2),
                "fps_after": round(after, 2),
            }
        finally:
            s.stop()
            server.close()


def run_offline(window_s: float) -> dict[str, Any]:
    from hub.pgcluster import free_port

    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        s = _station(Path(tmp), f"http://127.0.0.1:{free_port()}", "token", 1.0)
        s.start()
        try:
            time.sleep(3)
            fps = _rate(s, window_s)
            upd = s.status()["model_update"]
            return {
                "hub": "unreachable",
                "window_s": window_s,
                "fps_while_offline": round(fps, 2),
                "update_checks_failing": upd["last_error"] is not None,
                "last_error": upd["last_error"],
            }
        finally:
            s.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poll", type=float, nargs="+", default=[1.0, 5.0], help="poll intervals (s)")
    ap.add_argument("--window", type=float, default=8.0, help="seconds per frame-rate window")
    ap.add_argument("--repeat", type=int, default=1, help="runs per poll interval")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    runs = [run_update(p, args.window) for p in args.poll for _ in range(args.repeat)]
    summary = {}
    for p in args.poll:
        times = sorted(r["publish_to_serving_s"] for r in runs if r["poll_s"] == p)
        summary[str(p)] = {"min_s": times[0], "median_s": times[len(times) // 2], "max_s": times[-1]}
    out = {"updates": runs, "publish_to_serving_by_poll_s": summary, "offline": run_offline(args.window)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
