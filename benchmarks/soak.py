"""Memory soak: the real daemon on the virtual microscope with live viewers, RSS over time.

Starts `smearscope run` (temp data dir; replay camera, `[camera] virtual = true`, 2028x1520 at 5 fps;
the shipped models) on 127.0.0.1, opens N viewers as the live page does (its MJPEG stream + its
result events, reconnecting when a stream ends) and samples the daemon's RSS from /proc every few
seconds for `--minutes`. Writes into benchmarks/results/:

  soak-<tag>.csv    t_s, rss_mb, hwm_mb, threads, frames_seen, events_seen
  soak-<tag>.json   settings + summary: warm-up, slope of the last 2/3 (MB/min), max, flat or not
  soak-<tag>.png    RSS over time

"Flat after warm-up": over the last two thirds of the run the fitted slope is below
`FLAT_MB_PER_MIN` (the range there is reported too: it holds the transient working set of a field's
classification). The daemon's environment has no MALLOC_* (it bounds glibc's malloc itself,
device/memory.py); `--env KEY=VALUE` adds to it, `--env SMEARSCOPE_MALLOC=glibc` measures glibc's defaults.

  PYTHONPATH=$PWD .venv/bin/python benchmarks/soak.py --minutes 30 --viewers 2 --tag 30min-2viewers
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FLAT_MB_PER_MIN = 0.5
CEILING_TARGET_MB = 300.0

CONFIG = """\
[device]
data_dir = "{data_dir}"

[camera]
source = "replay"
fps = {fps}
virtual = true
width = {width}
height = {height}
um_per_px = 0.155
tint_r = 1.08
tint_b = 0.90
vignetting = 0.25
noise = 2.5
pan = true
dwell_s = 4.0
move_s = 1.0

[web]
host = "127.0.0.1"
port = {port}
open_live_view = true
secret_key = "soak-benchmark-only"
"""


@dataclass
class Counters:
    frames: int = 0
    events: int = 0
    errors: int = 0
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    hwm_mb: float
    threads: int
    frames_seen: int
    events_seen: int
    cpu_s: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> tuple[float, float, int]:
    """(VmRSS MB, VmHWM MB, threads) from /proc/<pid>/status."""
    values: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = rest.strip()
    kb = lambda k: float(values[k].split()[0]) / 1024  # noqa: E731
    return kb("VmRSS"), kb("VmHWM"), int(values["Threads"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def viewer_mjpeg(base: str, stop: threading.Event, counters: Counters) -> None:
    """Reads the MJPEG stream as a browser's <img> does; counts the parts."""
    while not stop.is_set():
        try:
            with requests.get(base + "/live/stream.mjpg", stream=True, timeout=(5, 30)) as r:
                if r.status_code != 200:
                    counters.add("errors")
                    stop.wait(2)
                    continue
                for chunk in r.iter_content(64 * 1024):
                    counters.add("frames", chunk.count(b"Content-Type: image/jpeg"))
                    if stop.is_set():
                        break
        except requests.RequestException:
            counters.add("errors")
            stop.wait(1)
        counters.add("reconnects")


def viewer_events(base: str, stop: threading.Event, counters: Counters) -> None:
    """Reads the result events (EventSource) as the page does; reconnects when the server ends them."""
    while not stop.is_set():
        try:
            with requests.get(base + "/live/events", stream=True, timeout=(5, 30)) as r:
                if r.status_code != 200:
                    counters.add("errors")
                    stop.wait(2)
                    continue
                for line in r.iter_lines():
                    if line.startswith(b"event: result"):
                        counters.add("events")
                    if stop.is_set():
                        break
        except requests.RequestException:
            counters.add("errors")
            stop.wait(1)
        counters.add("reconnects")


def wait_ready(base: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode} before serving")
        try:
            if requests.get(base + "/live/frame.jpg", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit("the daemon served no frame within the timeout")


def summarise(samples: list[Sample]) -> dict:
    t = np.array([s.t_s for s in samples])
    rss = np.array([s.rss_mb for s in samples])
    start = t[-1] / 3
    late = t >= start
    i0 = int(late.argmax())
    slope = float(np.polyfit(t[late] / 60, rss[late], 1)[0]) if late.sum() >= 3 else float("nan")
    late_range = float(rss[late].max() - rss[late].min()) if late.any() else float("nan")
    return {
        "samples": len(samples),
        "duration_min": round(float(t[-1]) / 60, 2),
        "warmup_end_min": round(float(start) / 60, 2),
        "rss_start_mb": round(float(rss[0]), 1),
        "rss_max_mb": round(float(rss.max()), 1),
        "rss_max_at_min": round(float(t[int(rss.argmax())]) / 60, 2),
        "rss_last_mb": round(float(rss[-1]), 1),
        "late_mean_mb": round(float(rss[late].mean()), 1),
        "late_range_mb": round(late_range, 1),
        "late_slope_mb_per_min": round(slope, 3),
        "hwm_mb": round(max(s.hwm_mb for s in samples), 1),
        "cpu_percent_late": round(
            100 * (samples[-1].cpu_s - samples[i0].cpu_s) / max(1e-9, t[-1] - t[i0]), 1
        ),
        "flat_after_warmup": bool(abs(slope) < FLAT_MB_PER_MIN),
        "flat_rule": f"|slope| < {FLAT_MB_PER_MIN} MB/min over the last 2/3",
        "ceiling_target_mb": CEILING_TARGET_MB,
        "within_target": bool(rss.max() <= CEILING_TARGET_MB),
    }


def plot(samples: list[Sample], summary: dict, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot(t, [s.rss_mb for s in samples], label="RSS")
    ax.axhline(CEILING_TARGET_MB, color="tab:red", ls="--", lw=1, label=f"target {CEILING_TARGET_MB:.0f} MB")
    ax.axvline(summary["warmup_end_min"], color="grey", ls=":", lw=1, label="end of warm-up (1/3)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax.set_ylim(0, max(CEILING_TARGET_MB, summary["rss_max_mb"]) * 1.15)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--viewers", type=int, default=2, help="live pages open (MJPEG + result events each)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--width", type=int, default=2028)
    p.add_argument("--height", type=int, default=1520)
    p.add_argument("--tag", default="", help="result file names: soak-<tag>.*")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra daemon environment")
    args = p.parse_args(argv)
    tag = args.tag or f"{args.minutes:g}min-{args.viewers}viewers"
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="smearscope-soak-") as tmp:
        port = _free_port()
        cfg = Path(tmp) / "config.toml"
        cfg.write_text(
            CONFIG.format(
                data_dir=Path(tmp) / "data", fps=args.fps, width=args.width, height=args.height, port=port
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(kv.split("=", 1) for kv in args.env)
        log = open(Path(tmp) / "daemon.log", "wb")  # noqa: SIM115 - open for the daemon's lifetime
        proc = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "run", "--config", str(cfg)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        stop = threading.Event()
        counters = Counters()
        samples: list[Sample] = []
        try:
            wait_ready(base, proc)
            requests.get(base + "/", timeout=10)
            for i in range(args.viewers):
                for fn in (viewer_mjpeg, viewer_events):
                    threading.Thread(
                        target=fn, args=(base, stop, counters), name=f"{fn.__name__}-{i}", daemon=True
                    ).start()
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            while True:
                now = time.monotonic()
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon exited with {proc.returncode} during the soak")
                rss, hwm, threads = proc_status(proc.pid)
                samples.append(
                    Sample(
                        round(now - t0, 1),
                        round(rss, 1),
                        round(hwm, 1),
                        threads,
                        counters.frames,
                        counters.events,
                        round(cpu_seconds(proc.pid), 2),
                    )
                )
                if len(samples) % 12 == 1:
                    print(
                        f"{samples[-1].t_s:7.0f} s  RSS {rss:6.1f} MB  threads {threads}  "
                        f"frames {counters.frames}  events {counters.events}",
                        flush=True,
                    )
                if now >= end:
                    break
                time.sleep(min(args.interval, max(0.0, end - now)))
        finally:
            stop.set()
            time.sleep(2)  # viewers close their streams first: the shutdown is then a quiet one
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            daemon_log = (Path(tmp) / "daemon.log").read_text(errors="replace")
        if not samples:
            print(daemon_log[-3000:], file=sys.stderr)
            return 1

    summary = summarise(samples)
    summary.update(
        frames_seen=counters.frames,
        events_seen=counters.events,
        stream_errors=counters.errors,
        reconnects=counters.reconnects,
        daemon_exit=proc.returncode,
    )
    settings = {
        "command": "benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "minutes": args.minutes,
        "viewers": args.viewers,
        "interval_s": args.interval,
        "camera": f"virtual {args.width}x{args.height} at {args.fps:g} fps",
        "extra_env": args.env,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "note": "shared 2-core machine: CPU-bound rates are noisy; the memory figures are what this measures",
    }
    stem = args.out / f"soak-{tag}"
    with open(stem.with_suffix(".csv"), "w") as f:
        f.write(",".join(Sample.__dataclass_fields__) + "\n")
        for s in samples:
            f.write(",".join(str(v) for v in asdict(s).values()) + "\n")
    stem.with_suffix(".json").write_text(
        json.dumps({"settings": settings, "summary": summary}, indent=2) + "\n"
    )
    title = (
        f"smearscope daemon RSS: virtual {args.width}x{args.height} @ {args.fps:g} fps, "
        f"{args.viewers} viewers; "
        f"max {summary['rss_max_mb']} MB, late slope {summary['late_slope_mb_per_min']} MB/min"
    )
    plot(samples, summary, title, stem.with_suffix(".png"))
    print(json.dumps(summary, indent=2))
    print(f"wrote {stem}.csv/.json/.png")
    if daemon_log.count("Traceback"):
        print("the daemon logged tracebacks:\n" + daemon_log[-3000:], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
