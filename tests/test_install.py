"""scripts/install.sh and uninstall.sh: the dry run lists every step and changes nothing; an
installation under --prefix (using this test venv as is) produces a valid config, the first admin,
the models, an enabled unit whose ExecStart targets exist and that `systemd-analyze verify` accepts;
a second run changes nothing that matters; uninstall keeps the data unless --purge."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from make_tiny_bundle import SIGNED_TINY  # noqa: E402

from device.config import load_config

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"
UNINSTALL = REPO / "scripts" / "uninstall.sh"
WHEELHOUSE = REPO / "scripts" / "wheelhouse.sh"
VENV = Path(sys.prefix)
PASSWORD = "correct horse battery staple"
TINY_BUNDLE = SIGNED_TINY

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")


def _trust() -> dict[str, str]:
    """The fixture bundles' test key stays trusted in the child (conftest.py sets it)."""
    return {k: v for k, v in os.environ.items() if k == "SMEARSCOPE_TRUSTED_KEYS"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMEARSCOPE_")}
    env.update(_trust())
    env.pop("JOURNAL_STREAM", None)
    return env


def sh(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["bash", *map(str, argv)], capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO
    )
    if check and r.returncode != 0:
        raise AssertionError(f"{argv} exited {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
    return r


def test_scripts_parse() -> None:
    for script in (INSTALL, UNINSTALL, WHEELHOUSE):
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
        assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed (apt shellcheck)")
def test_shellcheck_clean() -> None:
    r = subprocess.run(
        ["shellcheck", str(INSTALL), str(UNINSTALL)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout


# ------------------------------------------------------------------------------------------ dry run

SYSTEM_PATHS = [Path(p) for p in ("/opt/smearscope", "/etc/smearscope", "/var/lib/smearscope")]


@pytest.mark.parametrize("platform", ["pi", "jetson", "generic"])
def test_dry_run_lists_every_step_and_changes_nothing(platform: str) -> None:
    before = {p: p.exists() for p in SYSTEM_PATHS}
    out = sh(INSTALL, "--dry-run", "--platform", platform).stdout
    steps = [ln for ln in out.splitlines() if ln.startswith("==> ") and ln[4:5].isdigit()]
    assert [s.split(".")[0][4:] for s in steps] == [str(i) for i in range(1, 12)], out
    assert "apt-get install" in out and "useradd --system" in out
    assert "-m venv" in out and "pip install" in out
    assert "write /etc/smearscope/config.toml" in out
    assert "users add admin --role admin" in out
    assert "write /etc/systemd/system/smearscope.service" in out
    assert "systemctl enable smearscope.service smearscope-backup.timer" in out
    assert "systemctl restart smearscope.service" in out
    if platform == "pi":
        assert "python3-picamera2" in out and "--system-site-packages" in out and "simplejpeg" in out
    if platform == "jetson":
        assert "python3-opencv" in out and "uninstall -y opencv-python-headless" in out
    if platform == "generic":
        assert "--system-site-packages" not in out and "picamera2" not in out
    assert {p: p.exists() for p in SYSTEM_PATHS} == before


def test_dry_run_sets_up_https_unless_told_not_to() -> None:
    out = sh(INSTALL, "--dry-run", "--platform", "generic").stdout
    assert re.search(r"apt-get install .*\bnginx\b.*\bopenssl\b", out), out
    assert "write /etc/nginx/sites-available/smearscope" in out and "nginx -t" in out
    assert "systemctl reload-or-restart nginx" in out and "page:   https://" in out
    plain = sh(INSTALL, "--dry-run", "--platform", "generic", "--no-https").stdout
    assert "nginx" not in plain and "not set up (--no-https)" in plain and "page:   http://" in plain
    assert "smearscope-https-renew" not in plain  # no certificate to renew
    r = sh(INSTALL, "--dry-run", "--no-https", "--tls-cert", INSTALL, check=False)
    assert r.returncode != 0 and "need HTTPS" in r.stderr


def test_dry_run_offline_from_a_wheelhouse(tmp_path: Path) -> None:
    out = sh(INSTALL, "--dry-run", "--platform", "pi", "--wheelhouse", tmp_path).stdout
    pip_lines = [ln for ln in out.splitlines() if "pip install" in ln]
    assert pip_lines and all(f"--no-index --find-links {tmp_path}" in ln for ln in pip_lines)
    assert any(re.search(r"smearscope\\?\[device\\?\]", ln) for ln in pip_lines)
    assert any("--force-reinstall smearscope" in ln for ln in pip_lines)


def test_dry_run_hub_role() -> None:
    out = sh(INSTALL, "--dry-run", "--role", "hub", "--platform", "generic").stdout
    assert "postgresql" in out and "smearscope-hub" in out
    assert re.search(r"pip install .*src\\?\[hub\\?\]", out) and "write /etc/smearscope/hub.env" in out
    assert "users add" not in out


def test_bad_option_is_refused() -> None:
    r = sh(INSTALL, "--dry-run", "--camera", "webcam", check=False)
    assert r.returncode != 0 and "--camera" in r.stderr
    r = sh(INSTALL, "--frobnicate", check=False)
    assert r.returncode == 2 and "unknown option" in r.stderr


# -------------------------------------------------------------------------------------- --prefix


def _install(root: Path, *more: str | Path) -> subprocess.CompletedProcess:
    pw = root.parent / "admin-password"
    pw.write_text(PASSWORD + "\n")
    return sh(
        INSTALL,
        "--prefix", root,
        "--venv", VENV,
        "--camera", "replay",
        "--admin-password-file", pw,
        *more,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if not (VENV / "bin" / "smearscope").exists():
        pytest.skip(f"{VENV}/bin/smearscope missing (pip install -e . first)")
    base = tmp_path_factory.mktemp("prefix")
    shutil.copytree(TINY_BUNDLE, base / "bundles" / "tiny")
    (base / "bundles" / "DEFAULT").write_text("tiny\n")
    root = base / "root"
    out = _install(root, "--models-from", base / "bundles").stdout
    return root, out


def test_prefix_install_lays_out_a_station(installed: tuple[Path, str]) -> None:
    root, out = installed
    assert "skip (--prefix): apt-get" in out and "skip (--prefix): useradd" in out
    cfg_path = root / "etc/smearscope/config.toml"
    cfg = tomllib.loads(cfg_path.read_text())
    assert cfg["device"]["data_dir"] == "/var/lib/smearscope"
    assert len(cfg["web"]["secret_key"]) >= 32
    assert cfg_path.stat().st_mode & 0o777 == 0o640  # it holds the secret key
    load_config(cfg_path, data_dir=root / "var/lib/smearscope")  # valid for the daemon
    wrapper = root / "usr/local/bin/smearscope"
    assert os.access(wrapper, os.X_OK) and "SMEARSCOPE_MODELS_DIR" in wrapper.read_text()
    assert (root / "opt/smearscope/src/pyproject.toml").is_file()
    assert not (root / "opt/smearscope/src/.git").exists()


def test_prefix_install_puts_the_daemon_behind_https(installed: tuple[Path, str]) -> None:
    root, out = installed
    cfg = tomllib.loads((root / "etc/smearscope/config.toml").read_text())
    assert cfg["web"]["host"] == "127.0.0.1"  # only nginx reaches the daemon
    tls = root / "etc/smearscope/tls"
    assert (tls / "ca.crt").is_file() and (tls / "server.crt").is_file()
    assert (tls / "server.key").stat().st_mode & 0o077 == 0 and (tls / "ca.key").stat().st_mode & 0o077 == 0
    site = (root / "etc/nginx/sites-available/smearscope").read_text()
    assert "ssl_certificate /etc/smearscope/tls/server.crt;" in site  # the target path, not the prefix
    assert "server 127.0.0.1:8080;" in site and "listen 443 ssl;" in site
    assert os.readlink(root / "etc/nginx/sites-enabled/smearscope") == "../sites-available/smearscope"
    assert "CA to trust: http://" in out


def test_prefix_install_creates_the_first_admin(installed: tuple[Path, str]) -> None:
    root, _ = installed
    conn = sqlite3.connect(root / "var/lib/smearscope/smearscope.db")
    rows = conn.execute("SELECT name, role, password_hash FROM users").fetchall()
    conn.close()
    assert [(n, r) for n, r, _ in rows] == [("admin", "admin")]
    assert PASSWORD not in rows[0][2]  # stored hashed


def test_prefix_install_installs_the_models(installed: tuple[Path, str]) -> None:
    root, _ = installed
    models = root / "var/lib/smearscope/models"
    name = "tiny-mobilenetv2-int8"  # the manifest's name, not the folder's
    assert (models / name).is_symlink() and (models / name / "manifest.json").is_file()
    listed = [n for n in (models / "DEFAULT").read_text().splitlines() if n and not n.startswith("#")]
    assert listed == [name]


def _exec_targets(unit: Path) -> list[str]:
    out = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop"):
            out.append(shlex.split(value)[0].lstrip("-@+!:"))
    return out


def test_installed_unit_exec_targets_exist_and_it_is_enabled(installed: tuple[Path, str]) -> None:
    root, _ = installed
    units = root / "etc/systemd/system"
    for name in ("smearscope.service", "smearscope-backup.service"):
        targets = _exec_targets(units / name)
        assert targets == [str(VENV / "bin" / "smearscope")], name
        for t in targets:
            assert os.access(t, os.X_OK), t
    assert (units / "smearscope-backup.timer").is_file()
    assert (units / "smearscope-https-renew.timer").is_file()
    renew = (units / "smearscope-https-renew.service").read_text()
    script = re.search(r"^ExecStart=/bin/bash (\S+) --renew-due$", renew, re.M)
    assert script, renew
    assert (root / script.group(1).lstrip("/")).is_file()  # the installed copy of the script
    assert (root / "var/backups/smearscope").is_dir()
    if shutil.which("systemctl"):
        for wants, name in (
            ("multi-user.target.wants", "smearscope.service"),
            ("timers.target.wants", "smearscope-backup.timer"),
            ("timers.target.wants", "smearscope-https-renew.timer"),
        ):
            link = units / wants / name
            assert link.is_symlink() and os.readlink(link) == f"/etc/systemd/system/{name}"


def _verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", unit.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=unit.parent,
    )


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed (apt systemd)")
@pytest.mark.parametrize(
    "name",
    [
        "smearscope.service",
        "smearscope-backup.service",
        "smearscope-backup.timer",
        "smearscope-https-renew.service",
        "smearscope-https-renew.timer",
    ],
)
def test_systemd_analyze_verifies_the_installed_units(installed: tuple[Path, str], name: str) -> None:
    root, _ = installed
    r = _verify(root / "etc/systemd/system" / name)
    assert r.returncode == 0 and name not in r.stderr, r.stderr


def test_second_run_keeps_config_admin_and_models(installed: tuple[Path, str]) -> None:
    root, _ = installed
    cfg = (root / "etc/smearscope/config.toml").read_text()
    models = root / "var/lib/smearscope/models"
    links = {p.name: os.readlink(p) for p in models.iterdir() if p.is_symlink()}
    out = _install(root, "--models-from", root.parent / "bundles").stdout
    assert "config.toml exists: kept" in out and "admin exists: kept" in out
    assert "already active; nothing to do" in out
    assert "server certificate kept" in out
    assert (root / "etc/smearscope/config.toml").read_text() == cfg  # same secret key
    assert {p.name: os.readlink(p) for p in models.iterdir() if p.is_symlink()} == links
    conn = sqlite3.connect(root / "var/lib/smearscope/smearscope.db")
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1
    conn.close()


def test_hub_role_under_prefix(tmp_path: Path) -> None:
    if not (VENV / "bin" / "smearscope-hub").exists():
        pytest.skip("smearscope-hub entry point missing")
    root = tmp_path / "root"
    sh(INSTALL, "--prefix", root, "--venv", VENV, "--role", "hub")
    unit = root / "etc/systemd/system/smearscope-hub.service"
    assert (root / "etc/smearscope/hub.env").read_text().count("SMEARSCOPE_HUB_DB=") == 2  # example + value
    for t in _exec_targets(unit):
        assert os.access(t, os.X_OK), t
    if shutil.which("systemd-analyze"):
        r = _verify(unit)
        assert r.returncode == 0 and "smearscope-hub.service" not in r.stderr, r.stderr


def test_uninstall_keeps_data_unless_purge(tmp_path: Path) -> None:
    if not (VENV / "bin" / "smearscope").exists():
        pytest.skip("smearscope entry point missing")
    root = tmp_path / "root"
    _install(root, "--no-start")
    sh(UNINSTALL, "--prefix", root)
    assert not (root / "etc/systemd/system/smearscope.service").exists()
    assert not (root / "etc/systemd/system/smearscope-backup.timer").exists()
    assert not (root / "etc/systemd/system/smearscope-https-renew.timer").exists()
    assert not (root / "usr/local/bin/smearscope").exists()
    assert not (root / "opt/smearscope").exists()
    assert (root / "var/lib/smearscope/smearscope.db").is_file()
    assert (root / "etc/smearscope/config.toml").is_file()
    assert not (root / "etc/nginx/sites-enabled/smearscope").exists()
    assert not (root / "etc/nginx/sites-available/smearscope").exists()
    assert (root / "etc/smearscope/tls/ca.key").is_file()  # tablets' trust survives a re-install
    sh(UNINSTALL, "--prefix", root, "--purge")
    assert not (root / "var/lib/smearscope").exists() and not (root / "etc/smearscope/config.toml").exists()
    assert not (root / "etc/smearscope/tls").exists()
