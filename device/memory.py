"""Bounded allocator slack for the daemon.

glibc gives every thread that allocates concurrently its own malloc arena (up to 8 per core), and
memory freed in one arena is reused only by that arena. The daemon's frames (a 2028x1520 RGB frame
is 9 MB) are made and dropped across the camera, pipeline, store and ~24 web server threads, so with
unbounded arenas RSS grows with the number of viewers towards the sum of each arena's high-water mark
(benchmarks/soak.py measures it). Two arenas keep RSS flat at a few per cent of CPU time.

`limit_arenas()` runs first in `smearscope`'s `main()`, before any worker thread exists, so `make run`,
the systemd unit and every command get the same allocator. An explicit `MALLOC_ARENA_MAX` in the
environment wins (glibc reads it itself).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger("smearscope.memory")

ARENA_MAX = 2
M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(n: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas at `n`. True when the limit is in force (set here or by the
    environment); False on a C library without `mallopt` (musl, macOS), where nothing changes."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(n)))
    except (OSError, AttributeError):
        return False
    if not ok:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", n)
    return ok
