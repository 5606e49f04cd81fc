#!/usr/bin/env python3
"""Check that pyproject.toml's pins resolve to binary wheels for the stations' platforms.

A station installs from wheels only (no compiler on a Pi in a clinic, no internet for a wheelhouse
built elsewhere), so a pin without a wheel for, say, CPython 3.13 on 64-bit ARM breaks the Pi. For
each target this asks pip to resolve the requirements with `--only-binary :all:` for that target's
Python, CPU and glibc (`pip install --dry-run --report`: pip reads the wheels' metadata files, it does
not download the wheels themselves) and reports the wheel chosen for every package, or what has none.

    python scripts/check_wheels.py                 # the station targets (device, tflite)
    python scripts/check_wheels.py --all           # also x86_64 and the hub/train/dev extras
    python scripts/check_wheels.py --extra hub --python 3.13 --arch x86_64

pip evaluates environment markers (`platform_machine == ...`) for the machine it runs on, not the
target: the pins here carry no marker that differs between the targets' CPUs.
Exit status: 0 all resolve, 1 a target does not, 3 the package index is unreachable.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class Target:
    """A station's interpreter: CPython version, CPU and the glibc its OS ships."""

    python: str  # "3.11"
    arch: str  # "aarch64" | "x86_64"
    glibc: tuple[int, int]
    os: str  # for the report only

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platform_tags(self) -> list[str]:
        """Every manylinux tag a wheel may carry and still install here (pip does not expand a
        `--platform manylinux_2_36_aarch64` to the older glibc versions by itself)."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        return [*tags, f"manylinux2014_{self.arch}"]

    def describe(self) -> str:
        return f"{self.abi} {self.arch} glibc {self.glibc[0]}.{self.glibc[1]} ({self.os})"


BOOKWORM_311 = Target("3.11", "aarch64", (2, 36), "Raspberry Pi OS Bookworm")
TRIXIE_313 = Target("3.13", "aarch64", (2, 41), "Raspberry Pi OS Trixie")
X86_311 = Target("3.11", "x86_64", (2, 36), "Debian 12")
X86_313 = Target("3.13", "x86_64", (2, 41), "Debian 13")


@dataclass(frozen=True)
class Check:
    """One pip resolution: which extras of pyproject.toml, for which target."""

    extras: tuple[str, ...]
    target: Target

    def describe(self) -> str:
        return f"[{','.join(self.extras) or 'core'}] on {self.target.describe()}"


# What the stations need: the daemon with LiteRT on both Pi OS releases; tflite-runtime has wheels
# for Python 3.11 only (its last release, 2.14, predates 3.12).
STATION_CHECKS = (
    Check(("device",), BOOKWORM_311),
    Check(("device",), TRIXIE_313),
    Check(("tflite",), BOOKWORM_311),
)
ALL_CHECKS = (
    *STATION_CHECKS,
    Check(("device",), X86_311),
    Check(("device",), X86_313),
    Check(("tflite",), X86_311),
    Check(("hub",), X86_311),
    Check(("hub",), X86_313),
    Check(("hub",), BOOKWORM_311),
    Check(("train", "dev"), X86_311),
    Check(("train", "dev"), X86_313),
)


@dataclass
class Result:
    check: Check
    ok: bool
    wheels: dict[str, str] = field(default_factory=dict)  # package name -> wheel file chosen
    missing: list[str] = field(default_factory=list)  # requirements pip found no wheel for
    error: str = ""


def requirements(pyproject: Path, extras: tuple[str, ...]) -> list[str]:
    """The core dependencies plus the given extras, as written in pyproject.toml."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            raise KeyError(f"pyproject.toml has no extra {extra!r} (has: {', '.join(sorted(optional))})")
        reqs += optional[extra]
    return reqs


def pip_command(reqs: list[str], target: Target, workdir: Path, index_url: str = DEFAULT_INDEX) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check"]
    cmd += ["--index-url", index_url, "--dry-run", "--ignore-installed", "--only-binary", ":all:"]
    for tag in target.platform_tags():
        cmd += ["--platform", tag]
    cmd += ["--python-version", target.python, "--implementation", "cp", "--abi", target.abi]
    cmd += ["--target", str(workdir / "target"), "--report", str(workdir / "report.json"), "--quiet"]
    return cmd + reqs


_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
_CONFLICT = re.compile(r"(?:Cannot install|conflict is caused by|ResolutionImpossible).*", re.S)


def parse_failure(stderr: str) -> tuple[list[str], str]:
    """(requirements without a wheel, a short reason) from pip's error output."""
    missing = _NO_MATCH.findall(stderr)
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("ERROR:")]
    if missing:
        return missing, "no wheel for " + ", ".join(missing)
    if _CONFLICT.search(stderr):
        return [], "conflicting requirements: " + " / ".join(lines[:3])
    return [], " / ".join(lines[:3]) or stderr.strip()[-400:]


def parse_report(report: dict) -> dict[str, str]:
    """Package name -> the wheel file pip chose, from `pip install --report`."""
    chosen = {}
    for item in report.get("install", []):
        url = item.get("download_info", {}).get("url", "")
        chosen[item["metadata"]["name"].lower()] = url.rsplit("/", 1)[-1]
    return chosen


def run_check(
    check: Check,
    pyproject: Path = ROOT / "pyproject.toml",
    index_url: str = DEFAULT_INDEX,
    reqs: list[str] | None = None,
    timeout: float = 180,
) -> Result:
    reqs = requirements(pyproject, check.extras) if reqs is None else reqs
    with tempfile.TemporaryDirectory(prefix="wheelcheck-") as tmp:
        workdir = Path(tmp)
        proc = subprocess.run(
            pip_command(reqs, check.target, workdir, index_url),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            missing, reason = parse_failure(proc.stderr)
            return Result(check, False, missing=missing, error=reason)
        wheels = parse_report(json.loads((workdir / "report.json").read_text(encoding="utf-8")))
    not_wheels = sorted(name for name, f in wheels.items() if not f.endswith(".whl"))
    if not_wheels:
        return Result(check, False, wheels, not_wheels, "not a wheel: " + ", ".join(not_wheels))
    return Result(check, True, wheels)


def run_checks(checks: list[Check] | tuple[Check, ...], index_url: str = DEFAULT_INDEX) -> list[Result]:
    """Several checks at once: each pip mostly waits on the index, so they overlap well."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda c: run_check(c, index_url=index_url), checks))


def index_unreachable(index_url: str = DEFAULT_INDEX, timeout: float = 10) -> str | None:
    """None when the index answers, else why not (the check cannot run offline)."""
    try:
        with urllib.request.urlopen(index_url.rstrip("/") + "/pip/", timeout=timeout) as resp:
            resp.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return f"{index_url} unreachable: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="x86_64 and the hub/train/dev extras too")
    ap.add_argument("--extra", action="append", help="check these extras only (repeatable)")
    ap.add_argument("--python", nargs="+", default=["3.11", "3.13"])
    ap.add_argument("--arch", nargs="+", default=["aarch64"])
    ap.add_argument("--index-url", default=DEFAULT_INDEX)
    ap.add_argument("-v", "--verbose", action="store_true", help="list every wheel chosen")
    args = ap.parse_args(argv)
    if args.extra:
        known = {(t.python, t.arch): t for t in (BOOKWORM_311, TRIXIE_313, X86_311, X86_313)}
        checks = [
            Check(tuple(args.extra), known.get((py, arch)) or Target(py, arch, (2, 36), "glibc 2.36"))
            for py in args.python
            for arch in args.arch
        ]
    else:
        checks = list(ALL_CHECKS if args.all else STATION_CHECKS)
    reason = index_unreachable(args.index_url)
    if reason:
        print(f"SKIP: {reason}", file=sys.stderr)
        return 3
    failed = 0
    for check, res in zip(checks, run_checks(checks, args.index_url), strict=True):
        print(
            f"{'OK  ' if res.ok else 'FAIL'} {check.describe()}: {len(res.wheels)} wheels{res.error and ': '}"
            f"{res.error}"
        )
        if args.verbose:
            for name, wheel in sorted(res.wheels.items()):
                print(f"       {name}: {wheel}")
        failed += not res.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
