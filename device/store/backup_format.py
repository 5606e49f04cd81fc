"""What a station backup folder is (written by `smearscope backup`, read by `smearscope restore`).

`smearscope-<UTC time>/`: `smearscope.db` (SQLite online backup, integrity-checked),
`images/<aa>/<sha256>.jpg` (each named by the sha256 of its bytes: its own checksum), optionally
`models/`, the config file and `profiles.toml`, and `BACKUP.json`: counts and times, plus (format 2)
`format`, `schema_version`, `device_id` and `files` = {relative path: {sha256, size}} of every file
that is not an image. Backups made before format 2 have no `files`: they are checked by the database's
integrity check and the images' names alone.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from device.errors import SmearscopeError
from device.store.guard import SQLITE_HEADER
from device.store.migrations import MIGRATIONS
from device.store.store import DB_NAME, IMAGES_DIR

FORMAT = "smearscope-backup/2"
INFO_NAME = "BACKUP.json"
PREFIX = "smearscope-"
PROFILES_NAME = "profiles.toml"
MODELS_NAME = "models"


class BackupError(SmearscopeError):
    """The backup cannot be restored as it is (incomplete, damaged, from a newer smearscope)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entries(root: Path) -> dict[str, dict[str, object]]:
    """{relative path: {sha256, size}} of every regular file under `root` outside images/ (symlinks,
    e.g. the models' active-version links, are not files of their own)."""
    out: dict[str, dict[str, object]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file() or rel == INFO_NAME or rel.startswith(f"{IMAGES_DIR}/"):
            continue
        out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


@dataclass
class CheckedBackup:
    """A backup folder whose manifest, database and schema were checked (`check_backup`)."""

    path: Path
    info: dict
    schema_version: int
    device_id: str | None
    records: int
    live_images: set[str] = field(default_factory=set)  # images rows not removed by retention
    manifest: bool = False  # format 2: every non-image file matched its listed sha256

    @property
    def db(self) -> Path:
        return self.path / DB_NAME

    @property
    def models(self) -> Path | None:
        p = self.path / MODELS_NAME
        return p if p.is_dir() else None

    @property
    def profiles(self) -> Path | None:
        p = self.path / PROFILES_NAME
        return p if p.is_file() else None


def open_backup_db(db: Path) -> sqlite3.Connection:
    """Read-only and immutable: nothing is written beside the backup (no -shm, no checkpoint)."""
    return sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)


def check_backup(path: Path) -> CheckedBackup:
    """Everything but the images (see `backup_images`); raises `BackupError` with the reason."""
    if not path.is_dir():
        raise BackupError(f"{path} is not a backup folder")
    if path.name.endswith(".partial"):
        raise BackupError(f"{path} is an unfinished backup (its .partial name says so): use another one")
    db = path / DB_NAME
    if not db.is_file():
        raise BackupError(f"{path} has no {DB_NAME}: not a backup folder (pick one smearscope-<time>/)")
    if (path / f"{DB_NAME}-wal").exists():
        raise BackupError(f"{path} has a {DB_NAME}-wal: a copied live database, not a finished backup")
    info: dict = {}
    if (path / INFO_NAME).is_file():
        try:
            info = json.loads((path / INFO_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackupError(f"{path / INFO_NAME} is unreadable ({exc}): the backup is damaged") from exc
    files = info.get("files") if isinstance(info, dict) else None
    for rel, want in (files or {}).items():
        p = path / rel
        if not p.is_file():
            raise BackupError(f"{p} is listed in {INFO_NAME} but missing: the backup is incomplete")
        if p.stat().st_size != want.get("size") or sha256_file(p) != want.get("sha256"):
            raise BackupError(f"{p} does not match its checksum in {INFO_NAME}: the backup is damaged")
    with db.open("rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise BackupError(f"{db} is not an SQLite database (garbled header): the backup is damaged")
    try:
        conn = open_backup_db(db)
        try:
            check = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
            if check != ["ok"]:
                why = "; ".join(check)
                raise BackupError(f"{db} fails SQLite's integrity check ({why}): the backup is damaged")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise BackupError(
                    f"{db} has schema version {version}, newer than this smearscope's {len(MIGRATIONS)}: "
                    "it was made by a newer smearscope. Upgrade this station's smearscope first, then restore"
                )
            if version < 1:
                raise BackupError(f"{db} holds no smearscope schema (user_version 0)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'device_id'").fetchone()
            records = int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
            live = {r[0] for r in conn.execute("SELECT sha256 FROM images WHERE deleted_at IS NULL")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{db} cannot be read ({exc}): the backup is damaged") from exc
    return CheckedBackup(
        path=path,
        info=info,
        schema_version=version,
        device_id=row[0] if row else None,
        records=records,
        live_images=live,
        manifest=bool(files),
    )


def backup_images(path: Path) -> Iterator[tuple[str, Path, bytes]]:
    """(sha256, file, bytes) of each image in the backup, each checked against its name; a file whose
    bytes do not hash to its name raises `BackupError`."""
    root = path / IMAGES_DIR
    if not root.is_dir():
        return
    for p in sorted(root.rglob("*.jpg")):
        sha = p.stem
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha or p.parent.name != sha[:2]:
            raise BackupError(f"{p}: its bytes do not match its name (sha256): the backup is damaged")
        yield sha, p, data
