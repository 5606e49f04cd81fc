"""One writer owns a data directory: an flock on `<data_dir>/smearscope.lock`.

The daemon holds it for its whole life, `smearscope restore` while it swaps the data in, and the store
while it upgrades the schema. The kernel releases it when the holder dies (even `kill -9`), so a
crashed daemon never leaves a stale lock. The file names the holder (pid, command, since) so the
refusal says who. Re-entrant within one process (the daemon's own store migrates under the daemon's
lock): flock locks belong to an open file, so a second open in the same process would block itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from device.errors import SmearscopeError

LOCK_NAME = "smearscope.lock"

#: The exit status of "this needs a person": a damaged or missing store, a data directory another
#: process holds. systemd's unit lists it in RestartPreventExitStatus= (a restart cannot fix it).
EXIT_NEEDS_ADMIN = 3

_held: dict[str, tuple[int, int]] = {}  # realpath of data_dir -> (fd, holders in this process)
_held_lock = threading.Lock()


class NeedsAdminError(SmearscopeError):
    """The station must not start (or a command must not write) until a person acts."""

    exit_status = EXIT_NEEDS_ADMIN


class DataDirBusy(NeedsAdminError):
    """Another process holds the data directory's lock."""


def _key(data_dir: Path) -> str:
    return os.path.realpath(data_dir)


def holder(data_dir: str | Path) -> str:
    """Who holds (or last held) the lock, as its file says: "pid 123 (smearscope run) since ..."."""
    try:
        text = (Path(data_dir) / LOCK_NAME).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return text.splitlines()[0] if text else ""


def held_here(data_dir: str | Path) -> bool:
    with _held_lock:
        return _key(Path(data_dir)) in _held


def acquire(data_dir: str | Path, what: str) -> None:
    """Take the data directory's lock without waiting; `DataDirBusy` when another process has it."""
    data_dir = Path(data_dir)
    key = _key(data_dir)
    with _held_lock:
        if key in _held:
            fd, n = _held[key]
            _held[key] = (fd, n + 1)
            return
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = holder(data_dir) or "another process"
            raise DataDirBusy(
                f"{data_dir} is in use by {who}: one smearscope process writes a data directory at a "
                "time. Stop the other one first (on a device: sudo systemctl stop smearscope)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with contextlib.suppress(OSError):  # the note is informational; the flock is the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({what}) since {stamp}\n".encode(), 0)
        _held[key] = (fd, 1)


def release(data_dir: str | Path) -> None:
    key = _key(Path(data_dir))
    with _held_lock:
        if key not in _held:
            return
        fd, n = _held[key]
        if n > 1:
            _held[key] = (fd, n - 1)
            return
        del _held[key]
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def holding(data_dir: str | Path, what: str) -> Iterator[None]:
    acquire(data_dir, what)
    try:
        yield
    finally:
        release(data_dir)
