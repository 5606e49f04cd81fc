"""The pinned dependencies have wheels for the stations (scripts/check_wheels.py).

The `network` tests ask PyPI (under a minute, the pip runs overlapping) and skip when it is
unreachable; the others test the checker's parsing offline.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_wheels", ROOT / "scripts" / "check_wheels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_wheels"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


cw = _load_checker()


def test_requirements_come_from_pyproject():
    reqs = cw.requirements(ROOT / "pyproject.toml", ("device",))
    names = {r.split(";")[0].split("=")[0].split(">")[0].split("<")[0].strip() for r in reqs}
    assert {"numpy", "opencv-python-headless", "flask", "cryptography", "ai-edge-litert"} <= names
    with pytest.raises(KeyError, match="no extra 'nope'"):
        cw.requirements(ROOT / "pyproject.toml", ("nope",))


def test_python_range_admits_both_pi_os_releases():
    import tomllib

    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert "3.11" in spec and "3.13.1" in spec
    assert "3.10.12" not in spec  # JetPack 6: refused by pip with "requires a different Python"


def test_platform_tags_cover_every_older_glibc():
    tags = cw.BOOKWORM_311.platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64"
    assert {"manylinux_2_34_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64"} <= set(tags)
    assert tags[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_37_aarch64" not in tags
    assert cw.TRIXIE_313.abi == "cp313"


def test_parse_failure_names_the_pin_without_a_wheel():
    stderr = (
        "ERROR: Could not find a version that satisfies the requirement tflite-runtime==2.14.0 "
        "(from versions: none)\nERROR: No matching distribution found for tflite-runtime==2.14.0\n"
    )
    missing, reason = cw.parse_failure(stderr)
    assert missing == ["tflite-runtime==2.14.0"]
    assert reason == "no wheel for tflite-runtime==2.14.0"
    missing, reason = cw.parse_failure(
        "ERROR: Cannot install a==1 and b==2 because ...\nResolutionImpossible"
    )
    assert missing == [] and reason.startswith("conflicting requirements")


def test_parse_report_lists_the_chosen_wheels():
    report = {
        "install": [
            {
                "metadata": {"name": "NumPy", "version": "2.2.6"},
                "download_info": {
                    "url": "https://files/x/numpy-2.2.6-cp313-cp313-manylinux_2_17_aarch64.whl"
                },
            }
        ]
    }
    assert cw.parse_report(report) == {"numpy": "numpy-2.2.6-cp313-cp313-manylinux_2_17_aarch64.whl"}


@pytest.fixture(scope="module")
def pypi():
    reason = cw.index_unreachable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def station_results(pypi):
    return dict(zip(cw.STATION_CHECKS, cw.run_checks(cw.STATION_CHECKS), strict=True))


@pytest.mark.network
@pytest.mark.parametrize("check", cw.STATION_CHECKS, ids=lambda c: c.describe())
def test_station_pins_have_wheels(station_results, check):
    result = station_results[check]
    assert result.ok, f"{check.describe()}: {result.error}"
    assert any(name == "numpy" for name in result.wheels)
    assert all(wheel.endswith(".whl") for wheel in result.wheels.values())


@pytest.mark.network
def test_a_pin_without_an_aarch64_wheel_fails(pypi):
    """The check can fail: tflite-runtime stopped before CPython 3.13."""
    result = cw.run_check(cw.Check(("tflite",), cw.TRIXIE_313), reqs=["tflite-runtime==2.14.0"])
    assert not result.ok
    assert result.missing == ["tflite-runtime==2.14.0"]
