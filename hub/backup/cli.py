"""`smearscope-hub backup OUT` and `smearscope-hub restore IN` (hub/backup/database.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hub.backup import database as hub_backup


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "backup", help="back up the hub's database into a new folder OUT (SQLite or PostgreSQL)"
    )
    b.add_argument(
        "out", metavar="OUT", help="the backup folder to create, e.g. /var/backups/smearscope-hub/2026-12-07"
    )
    b.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser(
        "restore", help="replace the hub's database with a backup folder IN (stop the hub first)"
    )
    r.add_argument("backup", metavar="IN", help="a folder made by `smearscope-hub backup`")
    r.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    r.add_argument("--check", action="store_true", help="only check the backup (changes nothing)")
    r.add_argument(
        "--keep-before",
        metavar="DIR",
        help="where the current database is backed up first (default: IN.before-restore-<time>)",
    )
    r.set_defaults(func=cmd_restore)


def cmd_backup(args: argparse.Namespace) -> int:
    made = hub_backup.backup(args.db, Path(args.out))
    print(
        f"backup {made.path}: {made.backend}, schema {', '.join(made.revisions)}, sha256 {made.sha256[:16]}"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    path = Path(args.backup)
    if args.check:
        checked = hub_backup.check(path, args.db)
        schema = ", ".join(checked.revisions)
        print(f"backup {path}: {checked.backend}, schema {schema}, checksum and contents ok")
        return 0
    checked, kept = hub_backup.restore(path, args.db, Path(args.keep_before) if args.keep_before else None)
    print(f"restored {path} (schema {', '.join(checked.revisions)}, then migrated to this hub's)")
    if kept is not None:
        print(f"  the previous database is kept in {kept} (restorable the same way)")
    return 0
