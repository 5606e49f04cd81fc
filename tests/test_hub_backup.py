"""`smearscope-hub backup OUT` / `restore IN` on SQLite and PostgreSQL: a round trip brings back the
rows and image bytes, the replaced database is kept as a backup of its own; a backup from a newer
hub schema and a damaged backup are refused with the database untouched."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from hubkit import hub_db, pg_server  # noqa: F401 - fixtures
from sqlalchemy import select, text

from hub import db, tokens
from hub.cli import main
from hub.models import Device, Image


def hub_state(url: str) -> tuple[list[str], dict[str, bytes]]:
    """(device names, image sha256 -> bytes)."""
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            names = sorted(s.scalars(select(Device.name)))
            images = {i.sha256: i.data for i in s.scalars(select(Image))}
        return names, images
    finally:
        engine.dispose()


def populate(url: str, *names: str) -> None:
    engine = db.make_engine(url)
    db.upgrade(engine)
    try:
        with db.session_factory(engine)() as s:
            for name in names:
                tokens.add_device(s, name)
            data = ("image of " + ",".join(names)).encode()
            s.add(
                Image(
                    sha256=hashlib.sha256(data).hexdigest(),
                    size=len(data),
                    data=data,
                    received_at=datetime.now(UTC),
                )
            )
            s.commit()
    finally:
        engine.dispose()


def set_revision(url: str, rev: str) -> str:
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            old = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": rev})
        return old
    finally:
        engine.dispose()


def test_round_trip_and_the_replaced_database_is_kept(hub_db, tmp_path, capsys):  # noqa: F811
    populate(hub_db, "scope-1", "scope-2")
    saved = hub_state(hub_db)
    out = tmp_path / "hub-backup"
    assert main(["--db", hub_db, "backup", str(out)]) == 0
    info = json.loads((out / "BACKUP.json").read_text())
    assert info["format"] == "smearscope-hub-backup/1" and info["revisions"]
    populate(hub_db, "scope-later")  # after the backup
    after = hub_state(hub_db)
    assert after != saved
    assert main(["--db", hub_db, "restore", "--check", str(out)]) == 0
    assert main(["--db", hub_db, "restore", "--keep-before", str(tmp_path / "kept"), str(out)]) == 0
    assert hub_state(hub_db) == saved
    assert "previous database is kept in" in capsys.readouterr().out
    assert main(["--db", hub_db, "restore", str(tmp_path / "kept")]) == 0  # the kept one restores too
    assert hub_state(hub_db) == after


def test_backup_from_a_newer_hub_is_refused(hub_db, tmp_path, capsys):  # noqa: F811
    populate(hub_db, "scope-1")
    current = set_revision(hub_db, "9999_from_the_future")
    assert main(["--db", hub_db, "backup", str(tmp_path / "newer")]) == 0
    set_revision(hub_db, current)
    populate(hub_db, "scope-2")
    before = hub_state(hub_db)
    assert main(["--db", hub_db, "restore", str(tmp_path / "newer")]) == 2
    assert "newer smearscope hub" in capsys.readouterr().err
    assert hub_state(hub_db) == before
    assert not list(tmp_path.glob("newer.before-restore-*"))


def test_damaged_backup_is_refused(hub_db, tmp_path, capsys):  # noqa: F811
    populate(hub_db, "scope-1")
    out = tmp_path / "b"
    assert main(["--db", hub_db, "backup", str(out)]) == 0
    info = json.loads((out / "BACKUP.json").read_text())
    f = out / info["file"]
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    before = hub_state(hub_db)
    assert main(["--db", hub_db, "restore", str(out)]) == 2
    assert "does not match its sha256" in capsys.readouterr().err
    assert hub_state(hub_db) == before


def test_backup_refuses_an_existing_folder_and_a_missing_database(tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    assert main(["--db", url, "backup", str(tmp_path / "exists")]) == 2
    assert main(["--db", url, "backup", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "nothing to back up" in err
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new.partial"))
