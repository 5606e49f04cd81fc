"""`smearscope doctor`: check a station and say what to fix.

Checks: configuration, TFLite runtime and model bundles (hash, tensors, one ensemble), camera, disk,
clock, hub reachability and token, the systemd service and the page. Each check yields OK / WARN / FAIL
lines with a fix; the exit status is 1 when any check failed (warnings do not fail), so it can gate
scripts.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device.config import SYSTEM_CONFIG, Config, add_config_args, config_from_args
from device.errors import ConfigError, SmearscopeError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
SERVICE = "smearscope.service"
#: a device clock earlier than this is certainly wrong (a Pi without RTC or network boots at the
#: last shutdown time, or at 1970); records would then carry impossible capture times
CLOCK_FLOOR = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Check:
    area: str
    status: str
    message: str
    fix: str = ""


CheckFn = Callable[[Config, argparse.Namespace], Iterator[Check]]


# ------------------------------------------------------------------------------------------ models


def check_models(cfg: Config, args: argparse.Namespace) -> Iterator[Check]:
    from device.models.ensemble import Ensemble
    from device.models.runtime import interpreter_class
    from device.paths import default_bundle_dirs, models_dir

    try:
        _, runtime = interpreter_class()
        yield Check("runtime", OK, f"TFLite runtime: {runtime}")
    except SmearscopeError as exc:
        yield Check("runtime", FAIL, str(exc), "pip install ai-edge-litert in the smearscope venv")
        return
    dirs = [Path(d) for d in cfg.classifier.models] or default_bundle_dirs()
    if not dirs:
        yield Check(
            "models",
            FAIL,
            f"no model bundles (config [classifier] models is empty and {models_dir()} has none)",
            "smearscope models install BUNDLE.tar.gz",
        )
        return
    yield from check_signatures(cfg, dirs)
    try:
        ens = Ensemble.from_dirs([str(d) for d in dirs], num_threads=1)
    except SmearscopeError as exc:
        yield Check(
            "models",
            FAIL,
            str(exc),
            "reinstall the bundle (smearscope models install …) or return to the previous one "
            "(smearscope models rollback NAME)",
        )
        return
    labels = ",".join(ens.label_ids)
    names = ", ".join(f"{m.manifest.name} ({m.manifest.sha256[:12]})" for m in ens.models)
    yield Check("models", OK, f"{len(ens.models)} bundle(s) load and agree on labels {labels}: {names}")


def check_signatures(cfg: Config, dirs: list[Path]) -> Iterator[Check]:
    """The signature of each bundle against `[models] trusted_keys` (what the daemon's start checks)."""
    from device.models.signing import load_trusted_keys, verify_bundle

    try:
        trust = load_trusted_keys(cfg.models.trusted_keys)
    except SmearscopeError as exc:
        yield Check("signatures", FAIL, str(exc), "fix [models] trusted_keys")
        return
    for d in dirs:
        v = verify_bundle(d, trust)
        if v.ok:
            yield Check("signatures", OK, f"{d.name}: signed by trusted key {v.key_id}")
        elif cfg.models.allow_unsigned:
            yield Check(
                "signatures",
                WARN,
                f"{v.problem()} — runs anyway: [models] allow_unsigned = true",
                "install a bundle signed by a trusted key, then set allow_unsigned = false",
            )
        else:
            yield Check(
                "signatures",
                FAIL,
                v.problem(),
                "install a bundle signed by a key in [models] trusted_keys (smearscope models verify "
                "DIR shows every check); the daemon refuses to start with this one",
            )


# ------------------------------------------------------------------------------------------ camera


def _service_active() -> bool:
    if not shutil.which("systemctl"):
        return False
    r = subprocess.run(["systemctl", "is-active", "--quiet", SERVICE], check=False, timeout=10)
    return r.returncode == 0


def check_camera(cfg: Config, args: argparse.Namespace) -> Iterator[Check]:
    cam = cfg.camera
    if args.no_camera:
        yield Check("camera", SKIP, f"camera check skipped (source {cam.source})")
        return
    if cam.source == "replay":
        from device.paths import SAMPLES_DIR

        path = Path(cam.path) if cam.path else SAMPLES_DIR
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            yield Check("camera", FAIL, f"replay source {path} is missing or empty", "set [camera] path")
        else:
            yield Check(
                "camera",
                WARN if cfg.source == str(SYSTEM_CONFIG) else OK,
                f"replay camera plays {path} (demo source, not a microscope)",
                'for a microscope set [camera] source = "picamera2", "opencv" or "jetson"',
            )
        return
    if cam.source == "picamera2":
        yield from _check_picamera2()
        return
    yield from _check_opencv(cam.source, cam.device, cam.width, cam.height)


def _check_picamera2() -> Iterator[Check]:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError:
        yield Check(
            "camera",
            FAIL,
            "picamera2 is not importable",
            "sudo apt install python3-picamera2, and make the venv with --system-site-packages "
            "(scripts/install.sh does both)",
        )
        return
    except ValueError as exc:  # numpy 1.x-built simplejpeg from apt under the venv's numpy 2
        yield Check(
            "camera",
            FAIL,
            f"picamera2 fails to import ({exc})",
            "/opt/smearscope/venv/bin/pip install --ignore-installed simplejpeg (a numpy-2 build)",
        )
        return
    try:
        cams = Picamera2.global_camera_info()
    except Exception as exc:  # libcamera errors are untyped
        cams, err = [], exc
    else:
        err = None
    if not cams:
        yield Check(
            "camera",
            FAIL,
            "no camera detected by libcamera" + (f" ({err})" if err else ""),
            "check the ribbon cable (contacts and orientation), camera_auto_detect=1 in "
            "/boot/firmware/config.txt, then reboot; `rpicam-hello --list-cameras` must list it",
        )
        return
    models = ", ".join(str(c.get("Model", "?")) for c in cams)
    yield Check("camera", OK, f"libcamera sees {len(cams)} camera(s): {models}")


def _check_opencv(source: str, device: str, width: int, height: int) -> Iterator[Check]:
    import cv2

    if source == "jetson":
        info = cv2.getBuildInformation()
        gst = any("GStreamer" in ln and "YES" in ln for ln in info.splitlines())
        if not gst:
            yield Check(
                "camera",
                FAIL,
                "this OpenCV has no GStreamer support (the pip wheel), so the CSI camera cannot be opened",
                "use JetPack's python3-opencv: /opt/smearscope/venv/bin/pip uninstall opencv-python-headless "
                "(scripts/install.sh does this on a Jetson)",
            )
            return
        yield Check("camera", OK, "OpenCV has GStreamer (the Jetson CSI pipeline can open)")
        return
    target: int | str = int(device) if device.isdigit() else device
    node = Path(f"/dev/video{device}") if isinstance(target, int) else Path(device)
    if not node.exists():
        yield Check(
            "camera",
            FAIL,
            f"{node} does not exist",
            "plug the USB camera in (check `v4l2-ctl --list-devices`), or set [camera] device",
        )
        return
    if not os.access(node, os.R_OK | os.W_OK):
        yield Check(
            "camera",
            FAIL,
            f"{node} is not readable by {os.environ.get('USER', 'this user')}",
            "the service runs with SupplementaryGroups=video; for a shell: sudo usermod -aG video $USER",
        )
        return
    capture = cv2.VideoCapture(target)
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
    finally:
        capture.release()
    if ok and frame is not None:
        h, w = frame.shape[:2]
        note = "" if (w, h) == (width, height) else f" (config asks {width}x{height}; the daemon sets it)"
        yield Check("camera", OK, f"{node} gives frames of {w}x{h}{note}")
    elif _service_active():
        yield Check("camera", WARN, f"{node} is busy: {SERVICE} is running and holds it", "")
    else:
        yield Check("camera", FAIL, f"{node} opens but gives no frame", "check the cable; try another port")


# -------------------------------------------------------------------------------------- disk/clock


def check_disk(cfg: Config, args: argparse.Namespace) -> Iterator[Check]:
    data = cfg.data_dir
    probe = data if data.exists() else next((p for p in data.parents if p.exists()), Path("/"))
    if not data.exists():
        yield Check("disk", WARN, f"data directory {data} does not exist yet (made on first start)", "")
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=data, prefix=".doctor-"):
                pass
        except OSError as exc:
            yield Check(
                "disk",
                FAIL,
                f"cannot write in {data} ({exc.strerror})",
                "chown -R smearscope: the data directory, or fix [device] data_dir",
            )
    usage = shutil.disk_usage(probe)
    free_mb = usage.free / 2**20
    # the store's effective reserve: [store] reserve_mb, but never more than a tenth of the disk
    reserve = min(cfg.store.reserve_mb, int(usage.total / 2**20 / 10))
    msg = f"{free_mb:,.0f} MB free of {usage.total / 2**20:,.0f} MB on {probe} (reserve {reserve} MB)"
    fix = "free space, set [store] budget_mb so synced images are pruned, or move data_dir to a bigger disk"
    if free_mb < reserve:
        yield Check("disk", FAIL, msg + ": image writes are refused", fix)
    elif free_mb < max(2 * reserve, 1024):
        yield Check("disk", WARN, msg + ": running low", fix)
    else:
        yield Check("disk", OK, msg)


def _timesync() -> bool | None:
    if not shutil.which("timedatectl"):
        return None
    try:
        r = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = r.stdout.strip()
    return {"yes": True, "no": False}.get(value)


def check_clock(cfg: Config, args: argparse.Namespace) -> Iterator[Check]:
    now = datetime.now(UTC)
    fix = (
        "connect to a network with NTP, or set it: sudo timedatectl set-time 'YYYY-MM-DD HH:MM:SS' "
        "(a Pi keeps no time without its RTC battery)"
    )
    if now < CLOCK_FLOOR:
        yield Check("clock", FAIL, f"the clock says {now:%Y-%m-%d %H:%M} UTC, before this release", fix)
        return
    newest = _newest_record_time(cfg.data_dir)
    if newest is not None and newest > now.timestamp() + 300:
        when = datetime.fromtimestamp(newest, UTC)
        yield Check(
            "clock",
            FAIL,
            f"the clock says {now:%Y-%m-%d %H:%M} UTC but a stored record is from {when:%Y-%m-%d %H:%M}: "
            "the clock went backwards",
            fix,
        )
        return
    synced = _timesync() if not args.no_system else None
    if synced is False:
        yield Check("clock", WARN, f"{now:%Y-%m-%d %H:%M:%S} UTC, not synchronised with NTP", fix)
    else:
        yield Check("clock", OK, f"{now:%Y-%m-%d %H:%M:%S} UTC" + (", NTP synchronised" if synced else ""))


def _newest_record_time(data_dir: Path) -> float | None:
    from device.store.store import DB_NAME

    db = data_dir / DB_NAME
    if not db.is_file():
        return None
    # Even a read-only connection creates -wal/-shm files next to a WAL database when they are
    # missing; made by root (sudo smearscope doctor) they would lock the daemon out. So when the
    # daemon has none open, read the file as immutable (the newest row is in the file then anyway).
    flags = "mode=ro" if Path(f"{db}-wal").exists() else "mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(f"file:{db}?{flags}", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT max(captured_at) FROM results").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    if not row or not row[0]:
        return None
    try:
        return datetime.fromisoformat(str(row[0]).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------- hub


#: The doctor waits at most this long for the hub, whatever `[sync] timeout_s` says.
HUB_CHECK_TIMEOUT_S = 10.0


def _hub_health(base: str, get: Callable[..., Any]) -> Check | None:
    """A failed check when `GET /healthz` does not answer 200, else None."""
    import requests

    try:
        r = get(f"{base}/healthz")
    except requests.exceptions.SSLError as exc:
        return Check(
            "hub",
            FAIL,
            f"TLS to {base} fails ({exc.__class__.__name__})",
            "check the clock, and set [sync] ca_file to the CA that signed the hub's certificate",
        )
    except requests.RequestException as exc:
        return Check(
            "hub",
            FAIL,
            f"{base} is unreachable ({exc.__class__.__name__})",
            "check the network/DNS/proxy ([sync] proxy); results queue up and are sent when it is back",
        )
    if r.status_code != 200:
        return Check("hub", FAIL, f"{base}/healthz answered {r.status_code}", "ask the hub's admin")
    return None


def _hub_token(base: str, token: str, get: Callable[..., Any]) -> Check:
    """`GET /api/v1/ping` with the device's token."""
    import requests

    try:
        r = get(f"{base}/api/v1/ping", headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        return Check("hub", FAIL, f"{base}/api/v1/ping failed ({exc.__class__.__name__})", "")
    if r.status_code == 401:
        return Check(
            "hub",
            FAIL,
            "the hub refuses this device's token (401)",
            "register the device again on the hub (smearscope-hub devices add NAME) and set "
            "SMEARSCOPE_SYNC_TOKEN",
        )
    if r.status_code != 200:
        return Check("hub", FAIL, f"{base}/api/v1/ping answered {r.status_code}", "")
    return Check("hub", OK, f"{base} reachable, token accepted")


def check_hub(cfg: Config, args: argparse.Namespace) -> Iterator[Check]:
    import requests

    s = cfg.sync
    if not s.hub_url:
        yield Check("hub", SKIP, "no hub configured ([sync] hub_url is empty): results stay on this device")
        return
    if not s.enabled:
        yield Check("hub", WARN, f"[sync] enabled = false: nothing is sent to {s.hub_url}", "")
    if s.ca_file and not Path(s.ca_file).is_file():
        yield Check("hub", FAIL, f"[sync] ca_file {s.ca_file} does not exist", "copy the clinic CA there")
        return
    get = functools.partial(
        requests.get,
        timeout=min(s.timeout_s, HUB_CHECK_TIMEOUT_S),
        verify=s.ca_file or True,
        proxies={"http": s.proxy, "https": s.proxy} if s.proxy else None,
    )
    base = s.hub_url.rstrip("/")
    problem = _hub_health(base, get)
    if problem is not None:
        yield problem
        return
    if not s.token:
        yield Check(
            "hub", FAIL, "the hub answers, but no token is set", "smearscope-hub devices add NAME on the hub"
        )
        return
    yield _hub_token(base, s.token, get)


# ------------------------------------------------------------------------------------------ system


def check_service(cfg: Config, args: argparse.Namespace) -> Iterator[Check]:
    if args.no_system or not shutil.which("systemctl") or not Path("/run/systemd/system").is_dir():
        yield Check("service", SKIP, "not checked (no systemd here)")
        return
    r = subprocess.run(
        ["systemctl", "is-active", SERVICE], capture_output=True, text=True, check=False, timeout=10
    )
    state = r.stdout.strip() or "unknown"
    if state == "active":
        yield Check("service", OK, f"{SERVICE} is active")
    else:
        yield Check(
            "service",
            FAIL if state == "failed" else WARN,
            f"{SERVICE} is {state}",
            f"journalctl -u {SERVICE} -e  (then: sudo systemctl restart {SERVICE})",
        )


def check_web(cfg: Config, args: argparse.Namespace) -> Iterator[Check]:
    """The page of a running daemon answers /healthz; no daemon running is not a failure here."""
    import requests

    host = "127.0.0.1" if cfg.web.host in ("0.0.0.0", "::", "") else cfg.web.host
    url = f"http://{'[' + host + ']' if ':' in host else host}:{cfg.web.port}/healthz"
    try:
        r = requests.get(url, timeout=5)
    except requests.RequestException:
        running = not args.no_system and _service_active()
        why = f"although {SERVICE} is active" if running else "(daemon not running)"
        yield Check(
            "web",
            FAIL if running else SKIP,
            f"{url} does not answer {why}",
            f"journalctl -u {SERVICE} -e" if running else "",
        )
        return
    if r.status_code == 200:
        yield Check("web", OK, f"the page answers on port {cfg.web.port} (web host {cfg.web.host})")
    else:
        yield Check("web", FAIL, f"{url} answered {r.status_code}", f"journalctl -u {SERVICE} -e")


def check_calibration(cfg: Config, args: argparse.Namespace) -> Iterator[Check]:
    """The calibration profiles file: readable, and a profile active (else the scale is unknown)."""
    from device.camera.profiles import ProfileError, ProfileStore

    store = ProfileStore.from_config(cfg)
    try:
        profiles, active = store.list(), store.active()
    except ProfileError as exc:
        yield Check("calibration", FAIL, str(exc), f"fix or restore {store.path} (backups hold a copy)")
        return
    if active is None:
        what = (
            f"{len(profiles)} calibration profile(s), none active" if profiles else "no calibration profile"
        )
        yield Check(
            "calibration",
            WARN,
            f"{what}: the station's scale (µm per pixel) is unknown",
            "calibrate: Admin → Calibration, or `smearscope calibrate --help` (docs/technician-guide.md)",
        )
        return
    yield Check(
        "calibration",
        OK,
        f"active profile {active.name}: {active.summary()} ({len(profiles)} in {store.path})",
    )


CHECKS: tuple[CheckFn, ...] = (
    check_models,
    check_camera,
    check_calibration,
    check_disk,
    check_clock,
    check_hub,
    check_service,
    check_web,
)


def config_notes(cfg: Config) -> Iterator[Check]:
    """Valid settings that are still worth a second look."""
    if cfg.web.open_live_view:
        yield Check(
            "config",
            WARN,
            "[web] open_live_view = true: anyone on the network sees the live view without logging in",
            "set it to false unless the network is private to the lab",
        )
    if cfg.source == str(SYSTEM_CONFIG) and cfg.web.host in ("127.0.0.1", "localhost", "::1"):
        yield Check(
            "config",
            WARN,
            f"[web] host = {cfg.web.host}: the page is reachable from this machine only",
            'set [web] host = "0.0.0.0" to use it from other computers or tablets',
        )


def run_checks(cfg: Config, args: argparse.Namespace, checks: tuple[CheckFn, ...] = CHECKS) -> list[Check]:
    out: list[Check] = [Check("config", OK, f"configuration from {cfg.source} is valid"), *config_notes(cfg)]
    for fn in checks:
        try:
            out.extend(fn(cfg, args))
        except Exception as exc:  # a check must never hide the others
            out.append(Check(fn.__name__.removeprefix("check_"), FAIL, f"check crashed: {exc!r}", ""))
    return out


# --------------------------------------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check camera, models, disk, clock, hub and config; say what to fix")
    add_config_args(p, web=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-camera", action="store_true", help="skip opening the camera")
    p.add_argument("--no-system", action="store_true", help="skip systemd and timedatectl queries")
    p.set_defaults(func=run)


MARK = {OK: "OK  ", WARN: "WARN", FAIL: "FAIL", SKIP: "--  "}


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        where = args.config or (SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else "the defaults")
        checks = [Check("config", FAIL, str(exc), f"edit {where}")]
    else:
        checks = run_checks(cfg, args)
    failed = sum(c.status == FAIL for c in checks)
    if args.json:
        out: dict[str, Any] = {"ok": failed == 0, "checks": [asdict(c) for c in checks]}
        print(json.dumps(out, indent=2))
    else:
        for c in checks:
            print(f"{MARK[c.status]} {c.area:8} {c.message}")
            if c.fix and c.status in (WARN, FAIL):
                print(f"{'':14}fix: {c.fix}")
        verdict = "all checks passed" if not failed else f"{failed} check(s) failed"
        print(f"{verdict} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return 1 if failed else 0
