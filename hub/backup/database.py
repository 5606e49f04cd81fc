"""Back up and restore the hub's database (everything the hub keeps is in it: records, images, bundle
blobs, tokens), for SQLite and PostgreSQL.

A backup is a folder: `hub.sqlite` (SQLite's online backup API, `PRAGMA integrity_check`ed) or
`hub.pgdump` (`pg_dump --format=custom`, read back with `pg_restore --list`), plus `BACKUP.json`
{format, backend, created, revisions (Alembic), file, sha256, size}.

Restore checks first (sha256, the dump readable, the Alembic revision one this code knows: a backup
from a newer hub is refused), keeps the current database (`--keep-before`, default
`<backup>.before-restore-<time>`), then replaces it in one transaction: SQLite's backup API into the
live file (journaled: a crash leaves the old one), PostgreSQL `DROP SCHEMA public CASCADE` + the dump's
SQL in one `psql --single-transaction`. Then the schema is migrated forward (`alembic upgrade heads`).
Stop the hub first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from hub import db

FORMAT = "smearscope-hub-backup/1"
INFO_NAME = "BACKUP.json"
SQLITE_FILE = "hub.sqlite"
PG_FILE = "hub.pgdump"


class HubBackupError(Exception):
    """A backup or restore was refused or failed; str() says why and what to do."""


@dataclass
class HubBackup:
    path: Path
    backend: str  # sqlite | postgresql
    revisions: list[str]
    file: Path
    sha256: str
    created: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _url(url: str) -> URL:
    return make_url(db.normalize_url(url))


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise HubBackupError(
            f"{name} not found: install PostgreSQL's client tools (apt-get install postgresql-client)"
        )
    return found


def _pg_conn(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password (that goes in PGPASSWORD, not on a command line `ps` shows)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    uri = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return uri, env


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise HubBackupError(f"{Path(cmd[0]).name} failed: {(res.stderr or res.stdout).strip()[-2000:]}")
    return res.stdout


def _sqlite_revisions(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))
    except sqlite3.DatabaseError as exc:
        raise HubBackupError(f"{path}: no readable Alembic revision ({exc}): not a hub database") from exc
    finally:
        conn.close()


def _dump_revisions(dump: Path) -> list[str]:
    """The alembic_version rows inside a custom-format dump (what the dump restores, not the server)."""
    out = _run([_pg_tool("pg_restore"), "--data-only", "--table=alembic_version", "--file=-", str(dump)])
    lines, revs, inside = out.splitlines(), [], False
    for line in lines:
        if line.startswith("COPY ") and "alembic_version" in line:
            inside = True
        elif inside and line == "\\.":
            break
        elif inside and line.strip():
            revs.append(line.strip())
    if not revs:
        raise HubBackupError(f"{dump}: no Alembic revision in the dump: not a hub database")
    return sorted(revs)


def backup(url: str, out: Path) -> HubBackup:
    """Write a backup folder `out` (must not exist yet; made under a .partial name, renamed when done)."""
    u = _url(url)
    if out.exists():
        raise HubBackupError(f"{out} exists: give a new folder name (e.g. with the date)")
    work = out.with_name(f".{out.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)
    try:
        if u.get_backend_name() == "sqlite":
            live = Path(u.database or "")
            if not live.is_file():
                raise HubBackupError(f"{live} does not exist: nothing to back up (wrong --db?)")
            file = work / SQLITE_FILE
            src, dst = sqlite3.connect(live, timeout=30), sqlite3.connect(file)
            try:
                src.backup(dst)  # one step: one consistent snapshot while the hub writes
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                dst.close()
                src.close()
            if check != "ok":
                raise HubBackupError(f"the copy of {live} fails its integrity check ({check})")
            revisions, backend = _sqlite_revisions(file), "sqlite"
        else:
            file = work / PG_FILE
            uri, env = _pg_conn(u)
            _run(
                [_pg_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={file}", f"--dbname={uri}"],
                env,
            )
            _run([_pg_tool("pg_restore"), "--list", str(file)])  # the dump reads back
            revisions, backend = _dump_revisions(file), "postgresql"
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        info = {
            "format": FORMAT,
            "backend": backend,
            "created": created,
            "revisions": revisions,
            "file": file.name,
            "sha256": _sha256(file),
            "size": file.stat().st_size,
        }
        (work / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return HubBackup(out, backend, revisions, out / file.name, info["sha256"], created)


def known_revisions(url: str) -> set[str]:
    script = ScriptDirectory.from_config(db.alembic_config(url))
    return {rev.revision for rev in script.walk_revisions()}


def check(path: Path, url: str) -> HubBackup:
    """The backup folder is complete, undamaged and not from a newer hub than this one."""
    try:
        info = json.loads((path / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HubBackupError(f"{path / INFO_NAME}: {exc}: not a complete hub backup folder") from exc
    if info.get("format") != FORMAT:
        raise HubBackupError(f"{path}: format {info.get('format')!r} is not {FORMAT}")
    file = path / str(info.get("file"))
    if not file.is_file() or file.stat().st_size != info.get("size") or _sha256(file) != info.get("sha256"):
        raise HubBackupError(
            f"{file} is missing or does not match its sha256 in {INFO_NAME}: the backup is damaged"
        )
    backend = _url(url).get_backend_name()
    if info.get("backend") != backend:
        kind = info.get("backend")
        raise HubBackupError(
            f"{path} is a {kind} backup and --db is {backend}: restore it into a {kind} database "
            "(moving between SQLite and PostgreSQL is not a restore)"
        )
    if backend == "sqlite":
        conn = sqlite3.connect(f"file:{file}?mode=ro&immutable=1", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            result = str(exc)
        finally:
            conn.close()
        if result != "ok":
            raise HubBackupError(f"{file} fails its integrity check ({result}): the backup is damaged")
        revisions = _sqlite_revisions(file)
    else:
        _run([_pg_tool("pg_restore"), "--list", str(file)])
        revisions = _dump_revisions(file)
    unknown = sorted(set(revisions) - known_revisions(url))
    if unknown:
        raise HubBackupError(
            f"{path} is at schema revision {', '.join(unknown)}, which this hub does not know: it was made "
            "by a newer smearscope hub. Upgrade this hub first, then restore"
        )
    return HubBackup(path, backend, revisions, file, info["sha256"], str(info.get("created")))


def _has_schema(url: str) -> bool:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                q = "SELECT count(*) FROM sqlite_master WHERE name = 'alembic_version'"
            else:
                q = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alembic_version'"
            return bool(conn.execute(text(q)).scalar())
    finally:
        engine.dispose()


def restore(path: Path, url: str, keep_before: Path | None = None) -> tuple[HubBackup, Path | None]:
    """Replace the hub's database with the backup's; returns (backup, where the old database was kept)."""
    checked = check(path, url)
    u = _url(url)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    before = keep_before or path.with_name(f"{path.name}.before-restore-{stamp}")
    kept: Path | None = None
    if checked.backend == "sqlite":
        live = Path(u.database or "")
        if live.is_file() and _has_schema(url):
            kept = backup(url, before).path
        live.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{checked.file}?mode=ro&immutable=1", uri=True)
        dst = sqlite3.connect(live, timeout=30)
        try:
            src.backup(dst)  # page by page in one journaled write transaction on the live file
        finally:
            dst.close()
            src.close()
    else:
        if _has_schema(url):
            kept = backup(url, before).path
        uri, env = _pg_conn(u)
        script = subprocess.Popen(
            [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--file=-", str(checked.file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            res = subprocess.run(
                [
                    _pg_tool("psql"),
                    "--quiet",
                    "--no-psqlrc",
                    "--single-transaction",
                    "--set=ON_ERROR_STOP=1",
                    "--command=DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
                    "--file=-",
                    f"--dbname={uri}",
                ],
                stdin=script.stdout,
                capture_output=True,
                text=True,
                env=env,
            )
        finally:
            script.stdout.close()
            script_err = script.stderr.read().decode(errors="replace")
            script.wait()
        if script.returncode != 0 or res.returncode != 0:
            why = (res.stderr or script_err or res.stdout).strip()[-2000:]
            raise HubBackupError(f"restore failed, the database is as it was (one transaction): {why}")
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)  # an older backup: its schema migrated forward to this hub's
    finally:
        engine.dispose()
    return checked, kept
