"""Bounded allocator slack for the daemon (glibc malloc).

A 2028x1520 RGB frame is 9 MB, and the daemon makes and drops several per frame across the camera,
pipeline, store and ~24 web server threads. Two glibc defaults turn that into RSS that climbs with
the number of viewers and with time (benchmarks/soak.py measures it):

- every thread that allocates concurrently gets its own arena (up to 8 per core), and memory freed
  in one arena is reused only by that arena: capped at `ARENA_MAX`;
- the mmap threshold adapts upwards to the largest block freed (up to 32 MB), after which frame-sized
  buffers come from the arenas' heaps, where fragmentation keeps them: fixed at
  `MMAP_THRESHOLD_BYTES`, so a frame-sized buffer is its own mapping, returned to the system when freed.
  The price is a page-fault pass over each new frame buffer (about 1.5 ms per 9 MB here).

`bound_malloc()` runs first in `smearscope`'s `main()`, before any worker thread exists, so `make
run`, the systemd unit and every command get the same allocator. `MALLOC_ARENA_MAX` /
`MALLOC_MMAP_THRESHOLD_` in the environment win (glibc reads them itself);
`SMEARSCOPE_MALLOC=glibc` leaves glibc's defaults alone (the soak benchmark's comparison run).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ARENA_MAX = 2
MMAP_THRESHOLD_BYTES = 2 * 1024 * 1024
# glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - present on glibc
    except (OSError, AttributeError):
        return None
    return libc


def bound_malloc(
    arena_max: int = ARENA_MAX, mmap_threshold: int = MMAP_THRESHOLD_BYTES, env: dict | None = None
) -> dict[str, bool]:
    """Cap glibc's arenas and fix its mmap threshold. Returns which limit is in force (set here or by
    the environment); both False on a C library without `mallopt` (musl, macOS): nothing changes."""
    env = os.environ if env is None else env
    done = {"arena_max": False, "mmap_threshold": False}
    if env.get("SMEARSCOPE_MALLOC") == "glibc":
        return done
    libc = _libc()
    for key, var, option, value in (
        ("arena_max", "MALLOC_ARENA_MAX", M_ARENA_MAX, arena_max),
        ("mmap_threshold", "MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, mmap_threshold),
    ):
        if env.get(var):
            done[key] = libc is not None
        elif libc is not None:
            done[key] = bool(libc.mallopt(ctypes.c_int(option), ctypes.c_int(value)))
    return done
