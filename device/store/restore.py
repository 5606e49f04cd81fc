"""Put a backup back: checked, staged beside the data directory, swapped in by rename.

1. Lock the data directory (a running daemon holds it: refused) and check the backup: manifest
   checksums, header, `PRAGMA integrity_check`, schema not newer than this code's migrations.
2. Stage a complete new data directory next to the old one (`.<name>.restore-<time>`, same file
   system): the database copied with SQLite's backup API and migrated forward, every image checked
   against its name (sha256) and hard-linked (else copied), `device-id`, the calibration profiles, and
   everything else of the old directory (models, download staging) hard-linked across; the models
   come from the backup only when the station has none.
3. Swap: one `renameat2(RENAME_EXCHANGE)` (atomic: the path names the old data or the new, never
   nothing), then the old directory is renamed to `<data_dir>.before-restore-<time>` and kept.
   Any failure before the swap removes the staging directory and leaves the old data as it was.
Run as root, the new files get the owner of the old data directory, else the service user
(`smearscope`, made by scripts/install.sh).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pwd
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from device.fsutil import atomic_write_bytes, fsync_dir
from device.store import lock as datadir_lock
from device.store.backup_format import BackupError, CheckedBackup, backup_images, check_backup, open_backup_db
from device.store.db import connect, migrate
from device.store.guard import DEVICE_ID_NAME, write_device_id
from device.store.store import DB_NAME, IMAGES_DIR, utc_now

#: the service user scripts/install.sh creates: owner of restored files when the data dir is root's
SERVICE_USER = "smearscope"
#: A data directory the restore creates gets this mode; the stage is private until it is sealed.
NEW_DATA_DIR_MODE = 0o750
STAGE_MODE = 0o700
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
#: entries of a data directory that the backup replaces (the rest is carried across)
_STORE_ENTRIES = {
    DB_NAME,
    f"{DB_NAME}-wal",
    f"{DB_NAME}-shm",
    IMAGES_DIR,
    DEVICE_ID_NAME,
    datadir_lock.LOCK_NAME,
}


@dataclass
class RestoreResult:
    backup: Path
    data_dir: Path
    before: Path | None  # the old data directory, kept (None: there was none)
    device_id: str | None
    records: int
    images: int
    schema_from: int
    schema_to: int
    models: str  # "station" (kept) | "backup" | "none" | "outside" (a models dir outside data_dir, untouched)
    profiles: Path | None  # where the backup's profiles went (None: the backup had none)
    manifest: bool


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def _carry(src: Path, dst: Path) -> None:
    """`src` into `dst` by hard links (symlinks stay symlinks): the old directory stays as it was."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2). False when the kernel or file system cannot."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    if path.is_dir() and not path.is_symlink():
        for p in path.rglob("*"):
            os.chown(p, uid, gid, follow_symlinks=False)


def _inside(path: Path | None, root: Path) -> Path | None:
    """`path` relative to `root` when it lies inside it."""
    if path is None:
        return None
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return None


def _check_target(data_dir: Path) -> None:
    """The data directory can be swapped: not a mount point, its parent writable."""
    if os.path.ismount(data_dir):
        raise BackupError(
            f"{data_dir} is a mount point: restore swaps the whole directory, so make data_dir a folder "
            "inside the mount ([device] data_dir) or restore by hand (docs/admin-guide.md)"
        )
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(data_dir.parent, os.W_OK):
        raise BackupError(
            f"cannot write {data_dir.parent} (restore renames {data_dir} there): run it with sudo"
        )


def _restored_owner(data_dir: Path, existed: bool, owner: tuple[int, int] | None) -> tuple[int, int] | None:
    """Who the restored files belong to: as asked, else the old data directory's owner (unless root),
    else the service user; None when not running as root (a user restores its own data as itself)."""
    if owner is None and existed and data_dir.stat().st_uid != 0:
        owner = (data_dir.stat().st_uid, data_dir.stat().st_gid)
    if owner is None:
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(SERVICE_USER)
            owner = (pw.pw_uid, pw.pw_gid)
    return owner if os.geteuid() == 0 else None


def _seal_stage(
    stage: Path, result: RestoreResult, owner: tuple[int, int] | None, mode: int, profiles_path: Path | None
) -> None:
    """Give the staged store to its owner, with the old directory's mode, on disk."""
    if owner is not None:
        for name in (DB_NAME, IMAGES_DIR, DEVICE_ID_NAME):
            _chown_tree(stage / name, *owner)
        profiles_rel = _inside(profiles_path, result.data_dir)
        if result.profiles is not None and profiles_rel is not None:
            _chown_tree(stage / profiles_rel, *owner)
        os.chown(stage, *owner)
    os.chmod(stage, mode)
    fsync_dir(stage)


def _swap(stage: Path, data_dir: Path, before: Path) -> None:
    """The staged directory becomes `data_dir`; the old one is renamed `before`."""
    if exchange(stage, data_dir):  # (the lock made data_dir if there was none)
        os.rename(stage, before)  # the stage path now names the old data
    else:  # no renameat2 here: two renames, the old data first out of the way
        os.rename(data_dir, before)
        os.rename(stage, data_dir)
    fsync_dir(data_dir.parent)


def _restore_outside_profiles(
    checked: CheckedBackup, profiles_path: Path | None, data_dir: Path, stamp: str, result: RestoreResult
) -> None:
    """A profiles file outside the data directory is written in place, the old one kept beside it."""
    outside = profiles_path is not None and _inside(profiles_path, data_dir) is None
    if checked.profiles is None or not outside:
        return
    if profiles_path.is_file():
        kept = profiles_path.with_name(f"{profiles_path.name}.before-restore-{stamp}")
        shutil.copy2(profiles_path, kept)
    atomic_write_bytes(profiles_path, checked.profiles.read_bytes())
    result.profiles = profiles_path


def restore(
    backup: Path,
    data_dir: Path,
    *,
    models_dir: Path | None,
    profiles_path: Path | None,
    owner: tuple[int, int] | None = None,
    allow_missing_images: bool = False,
    say: Callable[[str], None] = lambda _m: None,
) -> RestoreResult:
    data_dir = Path(os.path.abspath(data_dir))
    parent = data_dir.parent
    _check_target(data_dir)
    existed = data_dir.is_dir()
    owner = _restored_owner(data_dir, existed, owner)
    mode = data_dir.stat().st_mode & 0o7777 if existed else NEW_DATA_DIR_MODE
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with datadir_lock.holding(data_dir, "smearscope restore"):
        say(f"checking {backup} ...")
        checked = check_backup(backup)
        stage = parent / f".{data_dir.name}.restore-{stamp}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(mode=STAGE_MODE)
        try:
            result = _stage(checked, data_dir, stage, models_dir, profiles_path, allow_missing_images, say)
            _seal_stage(stage, result, owner, mode, profiles_path)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        before = parent / f"{data_dir.name}.before-restore-{stamp}"
        _swap(stage, data_dir, before)
    if existed:
        result.before = before
    else:
        shutil.rmtree(before, ignore_errors=True)  # only the lock file the restore made
    _restore_outside_profiles(checked, profiles_path, data_dir, stamp, result)
    return result


def _stage_database(checked: CheckedBackup, data_dir: Path, stage: Path, say: Callable[[str], None]) -> int:
    """An SQLite copy of the backup's database (a clean file in WAL mode), migrated forward before the
    swap; returns the schema version it reached."""
    src = open_backup_db(checked.db)
    dst = sqlite3.connect(stage / DB_NAME)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    conn = connect(stage / DB_NAME)
    try:
        schema_to = migrate(conn)
        conn.execute(
            "INSERT INTO events (at, level, source, message) VALUES (?, 'warning', 'store', ?)",
            (utc_now(), f"restored from {checked.path} (the previous data is kept beside {data_dir})"),
        )
    finally:
        conn.close()
    say(f"database: {checked.records} records, schema {checked.schema_version} -> {schema_to}")
    return schema_to


def _stage_images(
    checked: CheckedBackup, stage: Path, allow_missing: bool, say: Callable[[str], None]
) -> int:
    """Every image of the backup, checked against its name, hard-linked (else copied); refuses a
    backup missing images the database lists unless `allow_missing`. Returns the images staged."""
    images = 0
    for sha, path, data in backup_images(checked.path):
        out = stage / IMAGES_DIR / sha[:2] / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, out)
        except OSError:  # another file system (a USB disk): copy the bytes just checked
            atomic_write_bytes(out, data)
        images += 1
    (stage / IMAGES_DIR).mkdir(exist_ok=True)
    staged_images = stage / IMAGES_DIR
    missing = {sha for sha in checked.live_images if not (staged_images / sha[:2] / f"{sha}.jpg").is_file()}
    if missing and not allow_missing:
        raise BackupError(
            f"{checked.path}: {len(missing)} image(s) the database lists are not in the backup (e.g. "
            f"{sorted(missing)[0]}): restore a complete backup, or accept records without those images "
            "with --allow-missing-images"
        )
    say(f"images: {images} checked against their sha256" + (f", {len(missing)} missing" if missing else ""))
    return images


def _stage_profiles(
    checked: CheckedBackup, data_dir: Path, stage: Path, profiles_path: Path | None
) -> Path | None:
    """The backup's profiles file, when it lives inside the data directory; where it will be."""
    profiles_rel = _inside(profiles_path, data_dir)
    if checked.profiles is None or profiles_rel is None:
        return None
    target = stage / profiles_rel
    with contextlib.suppress(FileNotFoundError):
        target.unlink()  # a hard link to the old file: never write through it
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checked.profiles, target)
    return data_dir / profiles_rel


def _stage_models(checked: CheckedBackup, data_dir: Path, stage: Path, models_dir: Path | None) -> str:
    """The station's models stay; the backup's come only when the station has none. Returns which."""
    models_rel = _inside(models_dir, data_dir)
    if models_rel is None:
        return "outside" if models_dir is not None else "none"
    staged = stage / models_rel
    if staged.is_dir() and any(staged.iterdir()):
        return "station"
    if checked.models is None:
        return "none"
    shutil.rmtree(staged, ignore_errors=True)
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(checked.models, staged, symlinks=True)
    return "backup"


def _stage(
    checked: CheckedBackup,
    data_dir: Path,
    stage: Path,
    models_dir: Path | None,
    profiles_path: Path | None,
    allow_missing_images: bool,
    say: Callable[[str], None],
) -> RestoreResult:
    schema_to = _stage_database(checked, data_dir, stage, say)
    images = _stage_images(checked, stage, allow_missing_images, say)
    if checked.device_id:
        write_device_id(stage, checked.device_id)
    if data_dir.is_dir():  # everything else of the station (models, download staging) comes along
        for entry in sorted(data_dir.iterdir()):
            if entry.name not in _STORE_ENTRIES:
                _carry(entry, stage / entry.name)
    profiles = _stage_profiles(checked, data_dir, stage, profiles_path)
    models = _stage_models(checked, data_dir, stage, models_dir)
    return RestoreResult(
        backup=checked.path,
        data_dir=data_dir,
        before=None,
        device_id=checked.device_id,
        records=checked.records,
        images=images,
        schema_from=checked.schema_version,
        schema_to=schema_to,
        models=models,
        profiles=profiles,
        manifest=checked.manifest,
    )
