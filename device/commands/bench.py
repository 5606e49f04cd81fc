"""`smearscope bench [--model DIR] [--json OUT] [--seconds S] [--threads T]`: speed and memory, one run.

- `invoke_fps`: the raw interpreter on a preprocessed tensor, in a loop;
- `pipeline_fps`: the replay camera as fast as the pipeline takes frames → quality gate → preprocess →
  classify → store policy/queue → result published, with the same interpreter threads;
- `latency_ms_p50/p95`: capture to published result; `rss_mb` (peak, this process); threads used.

The measurement runs in a fresh `python -m device.commands.bench` process, so the figures are the
daemon's own (the `smearscope` front end may have imported other commands' libraries).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the interpreter and the whole pipeline (fps, latency, RSS)")
    _arguments(p)
    p.set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", help="bundle dir (default: the first default bundle)")
    p.add_argument("--json", metavar="OUT", help="write the figures to this JSON file")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measurement (default 10)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (default: [classifier])")
    p.add_argument("--frames", metavar="DIR", help="replay folder (default: the shipped sample slides)")
    p.add_argument("--config", metavar="FILE", help="TOML config")


def run(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "device.commands.bench"]
    for key in ("model", "json", "seconds", "threads", "frames", "config"):
        val = getattr(args, key, None)
        if val is not None:
            argv += [f"--{key}", str(val)]
    return subprocess.call(argv)


def _rss_mb() -> dict[str, float]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_mb": round(out.get("VmRSS", 0.0), 1), "rss_peak_mb": round(out.get("VmHWM", 0.0), 1)}


def measure_invoke(model, frame: np.ndarray, seconds: float) -> dict[str, float]:
    from device.preprocess import prepare

    spec = model.manifest.input
    batch = model._input(prepare(frame, spec.size, spec.resize))
    for _ in range(20):
        model.invoke_only(batch)
    times = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        model.invoke_only(batch)
        times.append(time.perf_counter() - t0)
    arr = np.array(times) * 1000
    return {
        "invoke_fps": round(len(times) / arr.sum() * 1000, 1),
        "invoke_ms_p50": round(float(np.percentile(arr, 50)), 3),
        "invoke_ms_p95": round(float(np.percentile(arr, 95)), 3),
        "invokes": len(times),
    }


def measure_pipeline(config, seconds: float) -> dict[str, Any]:
    from device.services import Services
    from device.telemetry import Telemetry

    tel = Telemetry(window=2_000_000)
    services = Services(config, pace=False, sync=False, telemetry=tel)
    services.start()
    try:
        time.sleep(min(2.0, seconds / 4))  # warm-up: interpreter, caches, first frames
        with tel._lock:
            tel._latency_ms.clear()
            tel._inference_ms.clear()
        c0 = dict(tel.counts)
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        c1 = dict(tel.counts)
        with tel._lock:
            lat = np.array(tel._latency_ms)
            inf = np.array(tel._inference_ms)
        threads = threading.active_count()
    finally:
        services.stop()
    n = c1["classified"] - c0["classified"]
    return {
        "pipeline_fps": round(n / elapsed, 1),
        "frames_classified": n,
        "frames_captured": c1["captured"] - c0["captured"],
        "frames_dropped": c1["dropped"] - c0["dropped"],
        "frames_rejected": c1["rejected"] - c0["rejected"],
        "records_stored": c1["stored"] - c0["stored"],
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 3) if lat.size else None,
        "pipeline_inference_ms_p50": round(float(np.percentile(inf, 50)), 3) if inf.size else None,
        "python_threads": threads,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="smearscope bench", description=__doc__.splitlines()[0])
    _arguments(ap)
    args = ap.parse_args(argv)
    from device.config import load_config
    from device.model import TFLiteModel
    from device.paths import default_bundle_dirs

    with tempfile.TemporaryDirectory(prefix="smearscope-bench-") as tmp:
        config = load_config(args.config, data_dir=tmp)
        model_dir = args.model or (config.classifier.models or [str(d) for d in default_bundle_dirs()])[:1]
        model_dir = model_dir if isinstance(model_dir, str) else (model_dir[0] if model_dir else None)
        if not model_dir:
            print("smearscope bench: no model bundle: pass --model DIR", file=sys.stderr)
            return 2
        config.classifier.models = [model_dir]
        if args.threads:
            config.classifier.threads = args.threads
        if args.frames:
            config.camera.path = args.frames
        config.camera.source = "replay"
        threads = config.classifier.threads
        from device.camera.replay import ReplaySource

        src = ReplaySource(config.camera.path or None, fps=0)
        src.open()
        frame = src.read()
        src.close()
        model = TFLiteModel.from_dir(model_dir, threads)
        out: dict[str, Any] = {
            "model": model.manifest.name,
            "quantization": model.manifest.quantization,
            "input": f"{model.manifest.input.width}x{model.manifest.input.height}",
            "frame": f"{frame.shape[1]}x{frame.shape[0]}",
            "interpreter_threads": threads,
            "cpu_count": os.cpu_count(),
            "runtime": model.runtime,
        }
        out.update(measure_invoke(model, frame, args.seconds))
        del model
        out.update(measure_pipeline(config, args.seconds))
        out.update(_rss_mb())
        inv_ms = 1000 / out["invoke_fps"]
        out["targets"] = {
            "pipeline_fps >= 0.95 x invoke_fps": bool(out["pipeline_fps"] >= 0.95 * out["invoke_fps"]),
            "latency p95 <= 1.2 x invoke + 10 ms": bool((out["latency_ms_p95"] or 1e9) <= 1.2 * inv_ms + 10),
            "rss <= 120 MB": bool(out["rss_peak_mb"] <= 120),
        }
        out["pipeline_over_invoke"] = round(out["pipeline_fps"] / out["invoke_fps"], 3)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
