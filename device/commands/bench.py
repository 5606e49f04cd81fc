"""`smearscope bench [--model DIR] [--json OUT] [--seconds S] [--threads T]`: speed and memory, one run.

- `invoke_fps`: the raw interpreter on a preprocessed tensor, in a loop (the pipeline's own interpreter,
  in segments interleaved with the pipeline's, so a shared machine's load drift hits both alike);
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
    p.add_argument(
        "--store-every",
        type=float,
        metavar="S",
        help="store a result every S seconds regardless of label (default: the config's policy)",
    )
    a = p.add_argument_group("acquisition (frame → tiles → field result)")
    a.add_argument("--no-acquisition", action="store_true", help="skip the acquisition figures")
    a.add_argument(
        "--frame-size", default="1920x1080", metavar="WxH", help="camera frame (default 1920x1080)"
    )
    a.add_argument(
        "--magnification",
        type=float,
        default=1.0,
        help="frame scale vs the models' (default 1: cells as trained)",
    )
    a.add_argument("--model-um-per-px", type=float, help="the models' µm/px when the bundle declares none")
    a.add_argument("--static-fps", type=float, default=5.0, help="camera fps for the static-field CPU figure")
    c = p.add_argument_group("cells (frame → cells → result, for cell bundles)")
    c.add_argument("--cells-model", metavar="DIR", help="a cell bundle (default: --model when it is one)")
    c.add_argument("--no-cells", action="store_true", help="skip the cell figures")
    c.add_argument(
        "--cell-um-per-px", type=float, default=0.19, help="the drawn frames' µm/px (default 0.19)"
    )


def run(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "device.commands.bench"]
    keys = ("model", "json", "seconds", "threads", "frames", "config", "store_every", "frame_size")
    for key in (*keys, "magnification", "model_um_per_px", "static_fps", "cells_model", "cell_um_per_px"):
        val = getattr(args, key, None)
        if val is not None:
            argv += [f"--{key.replace('_', '-')}", str(val)]
    for flag in ("no_acquisition", "no_cells"):
        if getattr(args, flag, False):
            argv.append(f"--{flag.replace('_', '-')}")
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


def _pct(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 3) if a.size else None


def measure(config, seconds: float, rounds: int = 4) -> dict[str, Any]:
    """Interleave `rounds` raw-invoke and pipeline segments on the same interpreter, so the load drift
    of a shared machine hits both alike; each figure sums its segments."""
    from device.preprocess import prepare
    from device.services import Services
    from device.telemetry import Telemetry

    tel = Telemetry(window=2_000_000)
    services = Services(config, pace=False, sync=False, telemetry=tel)
    model = services.ensemble.models[0]
    spec = model.manifest.input
    src = services.pipeline.source_factory()
    src.open()
    batch = model._input(prepare(src.read(), spec.size, spec.resize, white_reference=spec.white_reference))
    src.close()
    seg = seconds / rounds
    invoke_ms: list[float] = []
    lat: list[float] = []
    n_frames = 0
    pipe_s = 0.0
    counts = {k: 0 for k in ("captured", "dropped", "rejected", "stored")}
    services.start()
    try:
        time.sleep(1.0)  # warm-up: interpreter, caches, first frames
        for _ in range(rounds):
            services.pipeline.paused.set()
            time.sleep(0.1)  # let the frame in flight finish
            t_end = time.perf_counter() + seg
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                model.invoke_only(batch)
                invoke_ms.append((time.perf_counter() - t0) * 1000)
            with tel._lock:
                tel._latency_ms.clear()
            c0 = dict(tel.counts)
            services.pipeline.paused.clear()
            t0 = time.monotonic()
            time.sleep(seg)
            pipe_s += time.monotonic() - t0
            c1 = dict(tel.counts)
            n_frames += c1["classified"] - c0["classified"]
            for k in counts:
                counts[k] += c1.get(k, 0) - c0.get(k, 0)
            with tel._lock:
                lat.extend(tel._latency_ms)
        threads = threading.active_count()
    finally:
        services.stop()
    inv = np.array(invoke_ms)
    return {
        "invoke_fps": round(len(inv) / inv.sum() * 1000, 1),
        "invoke_ms_p50": _pct(inv, 50),
        "invoke_ms_p95": _pct(inv, 95),
        "pipeline_fps": round(n_frames / pipe_s, 1),
        "frames_classified": n_frames,
        **{f"frames_{k}" if k != "stored" else "records_stored": v for k, v in counts.items()},
        "latency_ms_p50": _pct(np.array(lat), 50),
        "latency_ms_p95": _pct(np.array(lat), 95),
        "python_threads": threads,
    }


def acquisition(args, config, model_dir: str) -> dict[str, Any]:
    """Frame → field result, batching, and the daemon's CPU on a static field (see _bench_acquisition)."""
    from device.commands import _bench_acquisition as acq
    from device.paths import default_bundle_dirs

    dirs = [str(d) for d in default_bundle_dirs()] if not args.model else [model_dir]
    w, h = (int(x) for x in args.frame_size.lower().split("x"))
    kw = {"model_um": args.model_um_per_px, "size": (w, h), "magnification": args.magnification}
    try:
        field = acq.measure_field(config, dirs, **kw)
    except ValueError as exc:
        return {"skipped": str(exc)}
    return {
        "ensemble": dirs,
        "field": field,
        "batch": acq.measure_batch(config, dirs, max(2, field["tiles_classified"])),
        "static_cpu": acq.measure_static_cpu(
            config, dirs, **kw, fps=args.static_fps, seconds=max(5.0, args.seconds)
        ),
    }


def cells(args, config, model_dir: str | None) -> dict[str, Any]:
    """Frame → cells → result at 5, 20 and 50 white cells, batching, static-field CPU (_bench_cells)."""
    from device.commands import _bench_cells

    cell_dir = args.cells_model or model_dir
    if not cell_dir:
        why = "no cell bundle: pass --cells-model DIR (benchmarks/make_cell_speed_bundle.py makes one)"
        return {"skipped": why}
    return _bench_cells.measure(
        config, cell_dir, um=args.cell_um_per_px, fps=args.static_fps, seconds=max(5.0, args.seconds)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="smearscope bench", description=__doc__.splitlines()[0])
    _arguments(ap)
    args = ap.parse_args(argv)
    from device.config import load_config
    from device.models.bundle import load_bundle
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
        if args.store_every is not None:  # e.g. 0.1: a much heavier store load than the default policy
            config.store.every_s, config.store.on_label_change = args.store_every, False
        config.store.reserve_mb = 0
        threads = config.classifier.threads
        manifest = load_bundle(model_dir).manifest
        out: dict[str, Any] = {
            "model": manifest.name,
            "quantization": manifest.quantization,
            "input": f"{manifest.input.width}x{manifest.input.height}",
            "interpreter_threads": threads,
            "cpu_count": os.cpu_count(),
            "seconds": args.seconds,
            "store_policy": f"every_s={config.store.every_s} on_label_change={config.store.on_label_change}",
            "heatmap": config.classifier.heatmap,
            "quality_gate": config.quality.enabled,
        }
        out.update(measure(config, args.seconds))
        out.update(_rss_mb())
        inv_ms = 1000 / out["invoke_fps"]
        out["targets"] = {
            "pipeline_fps >= 0.95 x invoke_fps": bool(out["pipeline_fps"] >= 0.95 * out["invoke_fps"]),
            "latency p95 <= 1.2 x invoke + 10 ms": bool((out["latency_ms_p95"] or 1e9) <= 1.2 * inv_ms + 10),
            "rss <= 120 MB": bool(out["rss_peak_mb"] <= 120),
        }
        out["pipeline_over_invoke"] = round(out["pipeline_fps"] / out["invoke_fps"], 3)
        if not args.no_acquisition and manifest.cells is None:
            out["acquisition"] = acquisition(args, config, model_dir)
        if not args.no_cells:
            out["cells"] = cells(args, config, model_dir if manifest.cells is not None else None)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
