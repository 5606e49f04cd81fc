"""`smearscope backup DEST`: a consistent copy of a station while it runs.

DEST/smearscope-<UTC time>/ gets: `smearscope.db` from SQLite's online backup API (consistent while
the daemon writes; integrity-checked), then `images/` (taken after the database, so every image the
copied database refers to is there — images are written before their record and never change; an
image already in the previous backup is hard-linked, not copied again), `models/`, the config
file and the calibration profiles (`profiles.toml`), and `BACKUP.json` with the checksum of every
file that is not an image (format: `device.store.backup_format`). `--keep N` deletes all but the newest
N backups. Restore: `smearscope restore` (docs/admin-guide.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from device.camera.profiles import profiles_path
from device.config import add_config_args, config_from_args
from device.errors import SmearscopeError
from device.fsutil import TMP_PREFIX, atomic_write_bytes
from device.paths import models_dir
from device.store.backup_format import FORMAT, INFO_NAME, PREFIX, PROFILES_NAME, file_entries
from device.store.store import DB_NAME, IMAGES_DIR

__all__ = ["PREFIX", "PROFILES_NAME", "backup_db", "backups", "copy_images", "run_backup"]


def backup_db(src: Path, dest: Path) -> int:
    """Online backup of `src` into `dest`; returns the number of result rows. Raises on corruption."""
    return _backup_db(src, dest)[0]


def _backup_db(src: Path, dest: Path) -> tuple[int, int, str | None]:
    """(result rows, schema version, device id) of the online copy of `src` in `dest`."""
    source = sqlite3.connect(src, timeout=30)
    target = sqlite3.connect(dest)
    try:
        # one step: a WAL reader sees one snapshot and does not block the daemon's writes, whereas a
        # stepwise backup restarts whenever another connection writes (never ends on a busy station)
        source.backup(target)
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise SmearscopeError(f"{dest}: the copied database fails its integrity check ({check})")
        records = int(target.execute("SELECT count(*) FROM results").fetchone()[0])
        version = int(target.execute("PRAGMA user_version").fetchone()[0])
        row = target.execute("SELECT value FROM meta WHERE key = 'device_id'").fetchone()
        return records, version, row[0] if row else None
    finally:
        target.close()
        source.close()


def copy_images(src: Path, dest: Path, previous: Path | None) -> tuple[int, int]:
    """Copy the image tree; files already in `previous` (same name = same content) are hard-linked.
    Returns (copied, linked)."""
    copied = linked = 0
    for path in sorted(src.rglob("*.jpg")):
        if path.name.startswith(TMP_PREFIX):
            continue
        rel = path.relative_to(src)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        old = previous / rel if previous else None
        if old is not None and old.is_file():
            try:
                os.link(old, out)
                linked += 1
                continue
            except OSError:
                pass  # another file system: copy
        shutil.copy2(path, out)
        copied += 1
    return copied, linked


def backups(dest: Path) -> list[Path]:
    return sorted(p for p in dest.glob(f"{PREFIX}*") if p.is_dir() and (p / INFO_NAME).is_file())


def run_backup(
    data_dir: Path,
    dest: Path,
    *,
    config_file: Path | None,
    models: Path | None,
    keep: int,
    profiles: Path | None = None,
) -> dict:
    db = data_dir / DB_NAME
    if not db.is_file():
        raise SmearscopeError(f"{db} does not exist: nothing to back up (wrong --data-dir?)")
    dest.mkdir(parents=True, exist_ok=True)
    previous = (backups(dest) or [None])[-1]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = dest / f".{PREFIX}{stamp}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.monotonic()
    records, schema, device_id = _backup_db(db, work / DB_NAME)  # 1. the database first ...
    images_dir = data_dir / IMAGES_DIR
    copied, linked = (
        copy_images(images_dir, work / IMAGES_DIR, previous and previous / IMAGES_DIR)  # 2. ... then images
        if images_dir.is_dir()
        else (0, 0)
    )
    if models is not None and models.is_dir():
        shutil.copytree(
            models, work / "models", symlinks=True, ignore=shutil.ignore_patterns(".lock", ".incoming-*")
        )
    if config_file is not None and config_file.is_file():
        shutil.copy2(config_file, work / config_file.name)
    if profiles is not None and profiles.is_file():  # calibration profiles (maybe outside data_dir)
        shutil.copy2(profiles, work / PROFILES_NAME)
    info: dict[str, Any] = {
        "format": FORMAT,
        "created": stamp,
        "schema_version": schema,
        "device_id": device_id,
        "data_dir": str(data_dir),
        "records": records,
        "images_copied": copied,
        "images_linked": linked,
        "config": str(config_file) if config_file else None,
        "profiles": str(profiles) if profiles is not None and profiles.is_file() else None,
        "seconds": round(time.monotonic() - started, 2),
        "files": file_entries(work),  # images are their own checksum (named by sha256)
    }
    atomic_write_bytes(work / INFO_NAME, (json.dumps(info, indent=2) + "\n").encode())
    final, n = dest / f"{PREFIX}{stamp}", 1
    while final.exists():  # two backups within one second
        n += 1
        final = dest / f"{PREFIX}{stamp}-{n}"
    os.replace(work, final)  # a backup folder without the .partial name is complete
    for old in backups(dest)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    info["path"] = str(final)
    return info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="consistent backup of the store (database, images, models, config)")
    add_config_args(p, web=False)
    p.add_argument("dest", metavar="DEST", help="folder that receives smearscope-<time>/ backups")
    p.add_argument("--keep", type=int, default=7, help="keep the newest N backups in DEST (0: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    config_file = (
        Path(args.config) if args.config else (Path(cfg.source) if cfg.source != "defaults" else None)
    )
    info = run_backup(
        cfg.data_dir,
        Path(args.dest),
        config_file=config_file,
        models=models_dir(),
        keep=args.keep,
        profiles=profiles_path(cfg),
    )
    print(
        f"backup {info['path']}: {info['records']} records, {info['images_copied']} images copied, "
        f"{info['images_linked']} linked from the previous backup ({info['seconds']} s)"
    )
    return 0
