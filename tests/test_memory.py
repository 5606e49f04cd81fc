"""device/memory.py: the daemon's allocator bounds are in force in every `smearscope` process
(a frame-sized block stays its own mapping even after a larger one was freed), and the environment
still wins."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from device.memory import bound_malloc

REPO = Path(__file__).resolve().parents[1]
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Frees an 8 MB block (glibc's adaptive threshold would then rise above 3 MB), allocates 3 MB and
# prints whether glibc mmapped it (bit 1 of the chunk's size word).
PROBE = """
import ctypes, sys
{setup}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))
q = libc.malloc(3 << 20)
print(bool(ctypes.c_size_t.from_address(q - 8).value & 2))
"""


def _probe(setup: str, env: dict | None = None) -> str:
    r = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True,
                       timeout=60, cwd=REPO, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


@glibc_only
def test_frame_sized_blocks_stay_mappings_after_bound_malloc() -> None:
    assert _probe("") == "False"  # glibc's default: the block comes from the heap
    assert _probe("from device.memory import bound_malloc; bound_malloc(env={})") == "True"


@glibc_only
def test_smearscope_main_bounds_malloc_first() -> None:
    setup = "from device import cli\ntry:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass"
    assert _probe(setup, env={"PATH": "/usr/bin:/bin"}) == "True"


@glibc_only
def test_both_bounds_are_reported_in_force() -> None:
    assert bound_malloc(env={}) == {"arena_max": True, "mmap_threshold": True}
    # an administrator's own MALLOC_* settings are left to glibc
    assert bound_malloc(env={"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536"}) == {
        "arena_max": True,
        "mmap_threshold": True,
    }
    assert bound_malloc(env={"SMEARSCOPE_MALLOC": "glibc"}) == {"arena_max": False, "mmap_threshold": False}
