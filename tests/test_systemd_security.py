"""The units keep their system-call filter, and `systemd-analyze security` scores them no worse than
docs/admin-guide.md states."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "systemd").glob("*.service"))
GUIDE = ROOT / "docs" / "admin-guide.md"


def service_values(unit: Path, key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip() for line in unit.read_text().splitlines() if line.startswith(f"{key}=")
    ]


def stated_scores() -> dict[str, float]:
    """{unit: exposure} from the guide's hardening table (`| `unit.service` | 1.9 | ... |`)."""
    rows = re.findall(r"^\| `([\w-]+\.service)` \| (\d+\.\d) \|", GUIDE.read_text(), re.M)
    return {name: float(score) for name, score in rows}


def analyze_version() -> int | None:
    if not shutil.which("systemd-analyze"):
        return None
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"systemd (\d+)", out.stdout)
    return int(m.group(1)) if m else None


def test_every_unit_filters_system_calls():
    assert UNITS
    for unit in UNITS:
        filters = service_values(unit, "SystemCallFilter")
        assert filters and filters[0] == "@system-service", unit.name  # an allow list, first
        denied = {w for f in filters if f.startswith("~") for w in f[1:].split()}
        assert {"@privileged", "@resources"} <= denied, unit.name
        assert service_values(unit, "SystemCallErrorNumber") == ["EPERM"], unit.name
        assert service_values(unit, "SystemCallArchitectures") == ["native"], unit.name
        assert service_values(unit, "NoNewPrivileges") == ["yes"], unit.name
        assert service_values(unit, "CapabilityBoundingSet") == [""], unit.name


def test_the_guide_states_a_score_for_every_unit():
    assert set(stated_scores()) == {u.name for u in UNITS}


@pytest.mark.skipif(
    (analyze_version() or 0) < 250, reason="needs systemd-analyze >= 250 (security --offline)"
)
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_exposure_stays_at_or_below_the_stated_score(unit: Path):
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
    assert m, out.stdout[-500:] + out.stderr[-500:]
    stated = stated_scores()[unit.name]
    assert float(m.group(1)) <= stated, f"{unit.name}: {m.group(1)} > {stated} stated in docs/admin-guide.md"


@pytest.mark.skipif(
    (analyze_version() or 0) < 250, reason="needs systemd-analyze >= 250 (security --offline)"
)
def test_the_score_rises_without_the_filter(tmp_path: Path):
    """The check can fail: the daemon's unit without its hardening scores worse than stated."""
    text = (ROOT / "systemd" / "smearscope.service").read_text()
    weak = "\n".join(
        line
        for line in text.splitlines()
        if not line.startswith(("SystemCallFilter=", "ProtectKernel", "RestrictNamespaces="))
    )
    unit = tmp_path / "smearscope.service"
    unit.write_text(weak + "\n")
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout).group(1))
    assert score > stated_scores()["smearscope.service"]
