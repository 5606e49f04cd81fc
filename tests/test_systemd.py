"""The unit files' contract (what the issue asks of them), checked statically. `systemd-analyze
verify` runs on the units an installation writes: see tests/test_install.py."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values...]}} (keys may repeat in a unit file)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def one(unit: dict, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key} missing"
    return values[-1]


HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"}


def test_device_unit_contract() -> None:
    u = parse_unit(UNITS / "smearscope.service")
    assert one(u, "Service", "Type") == "notify"
    assert int(one(u, "Service", "WatchdogSec")) > 0
    assert one(u, "Service", "Restart") == "on-failure"
    assert one(u, "Service", "User") == "smearscope" and one(u, "Service", "Group") == "smearscope"
    assert "video" in one(u, "Service", "SupplementaryGroups").split()
    assert one(u, "Service", "StateDirectory") == "smearscope"
    for key, value in HARDENING.items():
        assert one(u, "Service", key) == value, key
    # nothing writable besides the state directory (ProtectSystem=strict)
    assert "ReadWritePaths" not in u["Service"]
    env = dict(e.split("=", 1) for e in u["Service"]["Environment"])
    assert env["SMEARSCOPE_MODELS_DIR"].startswith("/var/lib/smearscope/")
    assert env["MALLOC_ARENA_MAX"] == "2"  # bounded allocator slack (docs/web.md, peak memory)
    argv = shlex.split(one(u, "Service", "ExecStart"))
    assert argv[0].endswith("/bin/smearscope") and argv[1] == "run"
    assert argv[argv.index("--config") + 1] == "/etc/smearscope/config.toml"
    assert one(u, "Install", "WantedBy") == "multi-user.target"
    # a bad config / tampered bundle exits 2: restarting in a loop would not help
    assert "2" in one(u, "Service", "RestartPreventExitStatus").split()


def test_device_unit_keeps_the_camera_visible() -> None:
    """PrivateDevices / DeviceAllow / ProtectClock install a device policy that hides /dev/video*."""
    u = parse_unit(UNITS / "smearscope.service")["Service"]
    assert u.get("PrivateDevices", ["no"])[-1] == "no"
    assert "DeviceAllow" not in u and "ProtectClock" not in u


def test_hub_unit_contract() -> None:
    u = parse_unit(UNITS / "smearscope-hub.service")
    assert one(u, "Service", "User") == "smearscope-hub"
    assert one(u, "Service", "Restart") == "on-failure"
    assert one(u, "Service", "StateDirectory") == "smearscope-hub"
    for key, value in HARDENING.items():
        assert one(u, "Service", key) == value, key
    argv = shlex.split(one(u, "Service", "ExecStart"))
    assert argv[0].endswith("/bin/smearscope-hub") and argv[1] == "serve"
    assert int(argv[argv.index("--workers") + 1]) > 1  # > 1 worker: gunicorn (hub/cli.py)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # behind a TLS proxy
    # the proxy's X-Forwarded-For is trusted, else every client shares one failed-auth budget
    assert argv[argv.index("--proxy-hops") + 1] == "1"
    assert shlex.split(one(u, "Service", "ExecStartPre"))[1] == "migrate"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed (apt systemd)")
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The negative control for the verify tests: a misspelt key must be reported."""
    text = (UNITS / "smearscope.service").read_text().replace("WatchdogSec=", "WatchdogSecs=")
    text = text.replace("/opt/smearscope/venv/bin/smearscope", "/bin/true")
    unit = tmp_path / "smearscope.service"
    unit.write_text(text)
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "WatchdogSecs" in r.stderr


def test_backup_units() -> None:
    svc = parse_unit(UNITS / "smearscope-backup.service")
    assert one(svc, "Service", "Type") == "oneshot" and one(svc, "Service", "User") == "smearscope"
    argv = shlex.split(one(svc, "Service", "ExecStart"))
    assert argv[1] == "backup" and "--keep" in argv
    dest = argv[argv.index("--keep") - 1]
    assert one(svc, "Service", "ReadWritePaths").lstrip("-") == dest  # the only extra writable place
    timer = parse_unit(UNITS / "smearscope-backup.timer")
    assert (
        one(timer, "Timer", "Persistent") == "true" and one(timer, "Install", "WantedBy") == "timers.target"
    )
