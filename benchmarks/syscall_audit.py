"""Which system calls the daemon and the hub make, against the units' SystemCallFilter.

Runs the process under `strace -f` through a short working session and lists every system call
it made that the unit's filter (`@system-service` minus the `~@...` sets the unit removes) would
refuse. The filter answers EPERM (`SystemCallErrorNumber=EPERM`), so a call listed here fails
instead of killing the service; the list says what to allow or to check.

    python benchmarks/syscall_audit.py --seconds 20          # device (shipped models, replay camera)
                                                              # and then its backup
    python benchmarks/syscall_audit.py --hub                  # hub: waitress on SQLite (+ gunicorn on
                                                              # a throwaway PostgreSQL when initdb exists)

Writes benchmarks/results/syscall_audit.json. Needs strace and systemd-analyze. The camera here is
the replay source: picamera2/libcamera (ioctl, mmap of dma-buf) and V4L2 are not exercised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "syscall_audit.json"


# Calls the audit sees only because it runs as root, where the units run as their own user.
ROOT_ONLY = {
    "fchown": "SQLite hands its journal/WAL files to the database's owner only when running as root "
    "(os_unix.c robustFchown); as User=smearscope it makes no such call",
}


def syscall_sets() -> dict[str, list[str]]:
    """{"@set": [members...]} from `systemd-analyze syscall-filter` (members may be sets)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True)
    sets: dict[str, list[str]] = {}
    current = None
    for line in out.stdout.splitlines():
        if line.startswith("@"):
            current = line.strip()
            sets[current] = []
        elif current and line.startswith("    ") and not line.strip().startswith("#"):
            sets[current].append(line.strip())
    return sets


def expand(name: str, sets: dict[str, list[str]], seen: set[str] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    out: set[str] = set()
    for member in sets.get(name, []):
        out |= expand(member, sets, seen)
    return out


def unit_filter(unit: Path, sets: dict[str, list[str]]) -> set[str]:
    """The system calls a unit's SystemCallFilter= lines allow. The first line is an allow list;
    each later line removes (`~...`) from it or adds to it, in order (systemd.exec(5))."""
    allowed: set[str] = set()
    for line in unit.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1].strip()
        names = set().union(*(expand(item, sets) for item in value.lstrip("~").split()))
        allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


_CALL = re.compile(r"^\d+\s+(\w+)\(")


def parse_strace(path: Path) -> tuple[dict[str, int], int]:
    """({syscall: calls}, mappings both writable and executable) from an `strace -f -o` log. A call
    split by another thread (`<unfinished ...>` then `<... resumed>`) counts once."""
    counts: dict[str, int] = {}
    write_exec = 0
    with path.open(errors="replace") as fh:
        for line in fh:
            m = _CALL.match(line)
            if not m:
                continue
            name = m.group(1)
            counts[name] = counts.get(name, 0) + 1
            if name in ("mmap", "mprotect", "pkey_mprotect") and "PROT_WRITE" in line and "PROT_EXEC" in line:
                write_exec += 1
    return counts, write_exec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def traced(cmd: list[str], out: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["strace", "-f", "-qq", "-o", str(out), *cmd],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the traced program (strace's child), not to strace: strace writes its log once
    the program has exited. A program that does not exit is killed, never left behind."""
    children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(10)


def upload(url: str, token: str, path: Path) -> int:
    boundary = "smearscope-audit"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def run_device(seconds: float, work: Path) -> tuple[dict[str, int], int]:
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    data = work / "data"
    cli = [py, "-m", "device.cli"]
    subprocess.run(
        [*cli, "users", "add", "audit", "--role", "admin", "--data-dir", str(data)],
        input="audit-password-123\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    key = subprocess.run(
        [*cli, "users", "apikey", "audit", "--data-dir", str(data)],
        text=True,
        env=env,
        check=True,
        capture_output=True,
    ).stdout.split()[-1]
    port = free_port()
    out = work / "device.strace"
    proc = traced(
        [*cli, "run", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)], out, env, work
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz")
        sample = next((ROOT / "device" / "samples").glob("*.jp*g"))
        print("upload", upload(base + "/api/v1/classify", key, sample))
        for path in ("/metrics", "/api/status", "/live/result.json", "/api/v1/results"):
            print(path, get(base + path, key))
        time.sleep(seconds)
    finally:
        stop(proc)
    return parse_strace(out)


def run_backup(work: Path) -> tuple[dict[str, int], int]:
    """`smearscope backup` of the data the device run left (the daily timer's job)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = work / "backup.strace"
    cmd = [sys.executable, "-m", "device.cli", "backup", "--data-dir", str(work / "data"), str(work / "bk")]
    proc = traced([*cmd, "--keep", "2"], out, env, work)
    if proc.wait(300) != 0:
        raise RuntimeError(f"smearscope backup failed ({proc.returncode})")
    return parse_strace(out)


def run_hub(work: Path, workers: int) -> tuple[dict[str, int], int]:
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pg = None
    if workers > 1:
        from hub.pgcluster import TempPostgres

        pg = TempPostgres().start()
        url = pg.create_database()
    else:
        url = f"sqlite:///{work / 'hub.db'}"
    hub = [py, "-m", "hub.cli", "--db", url]
    try:
        subprocess.run([*hub, "migrate"], env=env, check=True, capture_output=True)
        out = subprocess.run(
            [*hub, "users", "add", "audit"], env=env, check=True, capture_output=True, text=True
        )
        token = re.findall(r"[A-Za-z0-9_-]{43}", out.stdout)[0]
        port = free_port()
        trace = work / f"hub-{workers}.strace"
        serve = [*hub, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        proc = traced(serve, trace, env, work)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/healthz")
            for path in ("/metrics", "/api/v1/stats", "/api/v1/devices", "/", "/login"):
                print(path, get(base + path, token))
            time.sleep(3)
        finally:
            stop(proc)
        return parse_strace(trace)
    finally:
        if pg is not None:
            pg.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="live classification after the requests")
    ap.add_argument("--hub", action="store_true", help="audit the hub instead of the daemon")
    args = ap.parse_args()
    for tool in ("strace", "systemd-analyze"):
        if not shutil.which(tool):
            print(f"needs {tool}", file=sys.stderr)
            return 2
    sets = syscall_sets()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    runs: list[tuple[str, Path, tuple[dict[str, int], int]]] = []
    with tempfile.TemporaryDirectory(prefix="syscall-audit-") as tmp:
        work = Path(tmp)
        if args.hub:
            unit = ROOT / "systemd" / "smearscope-hub.service"
            runs.append(("hub_waitress_sqlite", unit, run_hub(work, 1)))
            if (
                shutil.which("initdb")
                or shutil.which("pg_ctl")
                or list(Path("/usr/lib/postgresql").glob("*/bin"))
            ):
                runs.append(("hub_gunicorn_postgres", unit, run_hub(work, 2)))
        else:
            runs.append(
                ("device_replay", ROOT / "systemd" / "smearscope.service", run_device(args.seconds, work))
            )
            runs.append(("backup", ROOT / "systemd" / "smearscope-backup.service", run_backup(work)))
    for name, unit, (counts, write_exec) in runs:
        allowed = unit_filter(unit, sets)
        refused = sorted(s for s in counts if s not in allowed)
        notes = {s: ROOT_ONLY[s] for s in refused if s in ROOT_ONLY and os.geteuid() == 0}
        results[name] = {
            "unit": unit.name,
            "machine": platform.machine(),
            "python": platform.python_version(),
            "syscalls_used": len(counts),
            "refused_by_filter": {s: counts[s] for s in refused},
            "notes": notes,
            "writable_executable_mappings": write_exec,  # 0: MemoryDenyWriteExecute=yes would not bite
        }
        print(
            f"{name}: {len(counts)} system calls, outside {unit.name}'s filter: {refused or 'none'}; "
            f"writable+executable mappings: {write_exec}"
        )
        for s, why in notes.items():
            print(f"  {s}: {why}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
