"""The adversarial probe of issue 13 as a repeatable script: starts real daemons (replay camera, a shipped
or the tiny test model) on loopback and prints, per scenario, what held. Not a test: figures go to
docs/web.md. Loopback only; every loop is bounded in count and time (the whole run takes ~3-4 min).

streams   N viewers open the MJPEG/SSE streams and stop reading: admitted vs refused, page latency
          (/healthz, /login, /) while they stall, daemon memory before/during/after, stalled ones dropped
uploads   bursts of concurrent uploads (a 7000x7000 PNG bomb, 16 MP PNGs at the decode cap, 7000x7000
          JPEGs decoded reduced): status codes, the daemon's peak memory (VmHWM), /healthz meanwhile
kill      uploads from several clients while the daemon is killed with SIGKILL at random moments and
          restarted: records acknowledged vs kept, orphan rows/files left, database integrity
diskfull  the data dir on a small tmpfs that is filled up: uploads refused with 507 (nothing
          acknowledged lost), /healthz says "storage full", classification goes on, API keys still
          work, and writes resume by themselves once space is freed (needs root for `mount`)

    .venv/bin/python benchmarks/abuse.py [--only streams,kill] [--json OUT] [--model DIR]

hub       benchmarks/abuse_hub.py (the hub's own probe: hostile device, route walk, input, floods) run
          as a subprocess on SQLite and summarised (held count, names of what did not hold)

Add a station scenario with `@scenario("name")` (a function of the parsed args returning a dict with
"held"); `--only` picks scenarios by name.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.paths import default_bundle_dirs  # noqa: E402
from device.store import Store  # noqa: E402
from device.web import auth  # noqa: E402

PASSWORD = "abuse-probe-1"
SCENARIOS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def scenario(name: str):
    def register(fn: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
        SCENARIOS[name] = fn
        return fn

    return register


# -- a real daemon in a subprocess -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Daemon:
    """`smearscope run` on loopback with its own data dir, a user and an API key."""

    def __init__(self, data_dir: Path, model: str, **sections: dict):
        self.data_dir = data_dir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(data_dir, reserve_bytes=0)
        if auth.get_user(store.conn, "probe") is None:
            auth.add_user(store.conn, "probe", "admin", PASSWORD)
        self.key = auth.new_api_key(store.conn, "probe")
        store.close()
        conf = {
            "device": {"data_dir": str(data_dir)},
            "camera": {"source": "replay", "path": str(REPO / "device" / "samples"), "fps": 5.0},
            "classifier": {"models": [model]},
            "web": {"host": "127.0.0.1", "port": self.port},
            "store": {"every_s": 2.0},
        }
        for k, v in sections.items():
            conf.setdefault(k, {}).update(v)
        self.config = data_dir.parent / f"{data_dir.name}.toml"
        self.config.write_text(_toml(conf))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Daemon:
        env = {**os.environ, "SMEARSCOPE_SECRET_KEY": "abuse-probe-secret", "PYTHONPATH": str(REPO)}
        env.setdefault("MALLOC_ARENA_MAX", "2")  # as systemd/smearscope.service runs it
        self.log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "run", "--config", str(self.config)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.base + "/healthz", timeout=1).ok:
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}; see {self.log.name}")
            time.sleep(0.2)
        raise RuntimeError("daemon did not answer /healthz in time")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mb(self) -> float:
        return _proc_kb(self.pid, "VmRSS") / 1024

    def peak_mb(self) -> float:
        return _proc_kb(self.pid, "VmHWM") / 1024

    def reset_peak(self) -> None:
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
        with contextlib.suppress(Exception):
            self.log.close()


def _toml(conf: dict) -> str:
    out = []
    for section, values in conf.items():
        out.append(f"[{section}]")
        for k, v in values.items():
            out.append(f"{k} = {json.dumps(v)}")
        out.append("")
    return "\n".join(out)


def _latency(url: str, **kw) -> tuple[int, float]:
    t0 = time.monotonic()
    try:
        code = requests.get(url, timeout=kw.pop("timeout", 15), **kw).status_code
    except requests.RequestException:
        code = 0
    return code, round((time.monotonic() - t0) * 1000, 1)


def _page_latencies(d: Daemon, repeats: int = 5) -> dict:
    out = {}
    for path in ("/healthz", "/login", "/"):
        got = [_latency(d.base + path, headers=d.headers() if path == "/" else None) for _ in range(repeats)]
        out[path] = {"codes": sorted({c for c, _ in got}), "max_ms": max(ms for _, ms in got)}
    return out


# -- scenarios ---------------------------------------------------------------------------------------


@scenario("streams")
def streams(args: argparse.Namespace) -> dict:
    n = 50
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(
            Path(tmp) / "data", args.model, web={"open_live_view": True, "max_streams_per_user": 8}
        ).start()
        try:
            time.sleep(3)
            before = {"rss_mb": round(d.rss_mb(), 1), "pages": _page_latencies(d)}
            socks, codes = [], {}
            for i in range(n):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(10)
                s.connect(("127.0.0.1", d.port))
                path = "/live/stream.mjpg" if i % 2 == 0 else "/live/events"
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                try:
                    head = s.recv(12).decode(errors="replace")
                except OSError:
                    head = "timeout"
                codes[head[9:12] or head] = codes.get(head[9:12] or head, 0) + 1
                socks.append(s)  # and never read again
            time.sleep(5)
            during = {"rss_mb": round(d.rss_mb(), 1), "pages": _page_latencies(d)}
            time.sleep(15)  # past the write timeout: stalled MJPEG viewers are dropped
            dropped = {"pages": _page_latencies(d), "rss_mb": round(d.rss_mb(), 1)}
            for s in socks:
                s.close()
            time.sleep(5)
            after = {"rss_mb": round(d.rss_mb(), 1), "pages": _page_latencies(d)}
        finally:
            d.stop()
    return {
        "stalled_viewers": n,
        "status_codes": codes,
        "before": before,
        "while_stalled_5s": during,
        "after_write_timeout_20s": dropped,
        "after_close": after,
        "held": all(v["codes"] == [200] and v["max_ms"] < 2000 for v in during["pages"].values())
        and after["rss_mb"] < before["rss_mb"] + 40,
    }


def _png_bomb(w: int, h: int) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    img[::64] = (200, 170, 210)  # compresses to a few hundred KB
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buf.tobytes()


def _textured(w: int, h: int, ext: str) -> bytes:
    rng = np.random.default_rng(1)
    small = rng.integers(60, 230, (h // 64, w // 64, 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(ext, img, [cv2.IMWRITE_JPEG_QUALITY, 85] if ext == ".jpg" else [])
    assert ok
    return buf.tobytes()


def _burst(d: Daemon, name: str, data: bytes, n: int) -> dict:
    d.reset_peak()
    rss0 = d.rss_mb()
    stop = threading.Event()
    health: list[float] = []

    def probe() -> None:
        while not stop.is_set():
            health.append(_latency(d.base + "/healthz")[1])
            time.sleep(0.25)

    th = threading.Thread(target=probe, daemon=True)
    th.start()

    def one(_: int) -> int:
        try:
            r = requests.post(
                d.base + "/api/v1/classify", files={"file": (name, data)}, headers=d.headers(), timeout=120
            )
            return r.status_code
        except requests.RequestException:
            return 0

    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(one, range(n)))
    took = time.monotonic() - t0
    stop.set()
    th.join(5)
    return {
        "file": name,
        "file_kb": len(data) // 1024,
        "concurrent": n,
        "status_codes": {str(c): codes.count(c) for c in sorted(set(codes))},
        "seconds": round(took, 1),
        "rss_before_mb": round(rss0, 1),
        "peak_mb": round(d.peak_mb(), 1),
        "peak_over_idle_mb": round(d.peak_mb() - rss0, 1),
        "healthz_max_ms": max(health) if health else None,
    }


@scenario("uploads")
def uploads(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp) / "data", args.model).start()
        try:
            time.sleep(3)
            out = {
                "idle_rss_mb": round(d.rss_mb(), 1),
                "bursts": [
                    _burst(d, "bomb-7000.png", _png_bomb(7000, 7000), 24),
                    _burst(d, "cap-4000.png", _textured(4000, 4000, ".png"), 12),
                    _burst(d, "big-7000.jpg", _textured(7000, 7000, ".jpg"), 12),
                ],
            }
        finally:
            d.stop()
    out["peak_mb"] = max(b["peak_mb"] for b in out["bursts"])
    out["held"] = out["peak_mb"] < 600 and all((b["healthz_max_ms"] or 0) < 5000 for b in out["bursts"])
    return out


@scenario("kill")
def kill(args: argparse.Namespace) -> dict:
    rounds = args.kills
    rng = random.Random(13)
    acked: set[str] = set()
    img = _textured(640, 480, ".jpg")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        d = Daemon(data, args.model)
        key_headers = None
        for _ in range(rounds):
            d.start()
            key_headers = d.headers()
            stop = threading.Event()

            def client(
                seed: int, stop: threading.Event = stop, base: str = d.base, key_headers: dict = key_headers
            ) -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    body = img + f"{seed}-{i}-{time.monotonic_ns()}".encode()  # trailing bytes: new image
                    try:
                        r = requests.post(
                            base + "/api/v1/classify",
                            files={"file": (f"k{seed}-{i}.jpg", body)},
                            headers=key_headers,
                            timeout=10,
                        )
                    except requests.RequestException:
                        return
                    if r.status_code == 200:
                        for rec in r.json()["results"]:
                            acked.add(rec["id"])

            threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(3)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(2.0, 5.0))
            d.kill9()
            stop.set()
            for t in threads:
                t.join(15)
        conn = sqlite3.connect(data / "smearscope.db")
        kept = {r[0] for r in conn.execute("SELECT id FROM results")}
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        orphan_rows = conn.execute(
            "SELECT count(*) FROM images i WHERE NOT EXISTS (SELECT 1 FROM results r WHERE "
            "r.image_sha256 = i.sha256 OR r.heatmap_sha256 = i.sha256)"
        ).fetchone()[0]
        named = {r[0] for r in conn.execute("SELECT sha256 FROM images")}
        conn.close()
        files = {p.stem for p in (data / "images").glob("??/*.jpg")}
        orphan_files = len(files - named)
        store = Store(data, reserve_bytes=0, orphan_grace_s=0)  # the sweep, without its grace period
        swept = len(files) - sum(1 for _ in (data / "images").glob("??/*.jpg"))
        store.close()
    return {
        "kills": rounds,
        "acknowledged": len(acked),
        "acknowledged_and_kept": len(acked & kept),
        "lost": len(acked - kept),
        "integrity_check": integrity,
        "orphan_image_rows": orphan_rows,
        "orphan_files_before_sweep": orphan_files,
        "swept_on_open_without_grace": swept,
        "held": not (acked - kept) and integrity == "ok" and orphan_rows == 0,
    }


@scenario("diskfull")
def diskfull(args: argparse.Namespace) -> dict:
    mnt = Path(tempfile.mkdtemp(prefix="smearscope-full-"))
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)], check=True,
                       capture_output=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        mnt.rmdir()
        return {"skipped": f"cannot mount a tmpfs here ({exc}); run as root", "held": None}
    out: dict = {}
    d = Daemon(mnt / "data", args.model)
    try:
        d.start()
        time.sleep(3)
        reserve = 96 * 2**20 // 10
        filler = mnt / "filler"
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        with open(filler, "wb") as f:  # leave less than the reserve free
            f.write(b"\0" * max(0, free - reserve // 2))
        img = _textured(640, 480, ".jpg")
        before = requests.get(d.base + "/api/v1/status", headers=d.headers(), timeout=10).json()
        r = requests.post(d.base + "/api/v1/classify", files={"file": ("a.jpg", img)}, headers=d.headers(),
                          timeout=30)  # fmt: skip
        out["upload_below_reserve"] = {"status": r.status_code, "error": r.json().get("error")}
        out["healthz_full"] = requests.get(d.base + "/healthz", timeout=5).json()
        time.sleep(4)
        after = requests.get(d.base + "/api/v1/status", headers=d.headers(), timeout=10).json()
        out["classified_while_full"] = after["frames_classified"] - before["frames_classified"]
        out["live_result_while_full"] = requests.get(d.base + "/api/v1/live", headers=d.headers(),
                                                     timeout=5).json()["result"] is not None  # fmt: skip
        # now the very last bytes: SQLite itself cannot grow
        with open(filler, "ab") as f, contextlib.suppress(OSError):
            f.write(b"\0" * (os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize))
        out["api_key_get_when_0_free"] = requests.get(d.base + "/api/v1/results", headers=d.headers(),
                                                      timeout=10).status_code  # fmt: skip
        codes = set()
        for i in range(20):
            r = requests.post(
                d.base + "/api/v1/samples", json={"slide_id": f"S{i}" * 200}, headers=d.headers(), timeout=10
            )
            codes.add(r.status_code)
        out["writes_when_0_free"] = sorted(codes)
        filler.unlink()
        t0 = time.monotonic()
        state = None
        while time.monotonic() - t0 < 40:
            state = requests.get(d.base + "/healthz", timeout=5).json().get("storage")
            if state == "ok":
                break
            time.sleep(1)
        out["recovered_after_s"] = round(time.monotonic() - t0, 1) if state == "ok" else None
        r = requests.post(d.base + "/api/v1/classify", files={"file": ("b.jpg", img)}, headers=d.headers(),
                          timeout=30)  # fmt: skip
        out["upload_after_freeing"] = {
            "status": r.status_code,
            "image_stored": bool(r.ok and r.json()["results"][0]["image_sha256"]),
        }
    finally:
        d.stop()
        subprocess.run(["umount", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()
    out["held"] = (
        out.get("upload_below_reserve", {}).get("status") == 507
        and out.get("healthz_full", {}).get("storage") == "full"
        and out.get("classified_while_full", 0) > 0
        and out.get("api_key_get_when_0_free") == 200
        and out.get("upload_after_freeing", {}).get("image_stored") is True
    )
    return out


@scenario("hub")
def hub(args: argparse.Namespace) -> dict:
    """benchmarks/abuse_hub.py (the hub's own probe, SQLite) run as it is, summarised here."""
    script = Path(__file__).with_name("abuse_hub.py")
    if not script.is_file():
        return {"skipped": "benchmarks/abuse_hub.py is not here", "held": None}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hub.json"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            proc = subprocess.run(
                [sys.executable, str(script), "--db", "sqlite", "--json", str(out)],
                env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": "abuse_hub.py did not finish in 15 min", "held": False}
        if not out.is_file():
            return {"error": (proc.stderr or proc.stdout)[-2000:], "held": False}
        got = json.loads(out.read_text())
    scenarios = got.get("scenarios", [])
    failed = [r.get("scenario") for r in scenarios if not r.get("held")]
    return {
        "scenarios": len(scenarios),
        "held_count": len(scenarios) - len(failed),
        "not_held": failed,
        "held": not failed and proc.returncode == 0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated scenario names (default: all)")
    p.add_argument("--json", metavar="OUT", help="also write the results here")
    p.add_argument("--model", help="bundle dir (default: the first shipped bundle, else the tiny test one)")
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs in the kill scenario (default 10)")
    args = p.parse_args(argv)
    if not args.model:
        shipped = default_bundle_dirs()
        args.model = str(shipped[0]) if shipped else str(REPO / "tests" / "data" / "tiny-bundle")
    table = dict(SCENARIOS)
    names = args.only.split(",") if args.only else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(table)}")
    results = {}
    for name in names:
        t0 = time.monotonic()
        try:
            results[name] = table[name](args)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "held": False}
        results[name]["seconds"] = round(time.monotonic() - t0, 1)
        print(json.dumps({name: results[name]}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print("held: " + ", ".join(f"{k}={v.get('held')}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
