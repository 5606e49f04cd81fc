"""`smearscope restore BACKUP`: put one `smearscope backup` folder back (device/store/restore.py).

Checked first (checksums, integrity, schema not newer than this smearscope), staged beside the data
directory, swapped in by rename; the old data directory is kept as `<data_dir>.before-restore-<time>`.
Refused while the daemon runs (it holds the data directory's lock). `--check` only checks the backup.
"""

from __future__ import annotations

import argparse
import pwd
from pathlib import Path

from device.camera.profiles import profiles_path
from device.config import add_config_args, config_from_args
from device.errors import SmearscopeError
from device.paths import models_dir
from device.store.backup_format import backup_images, check_backup
from device.store.restore import restore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore the store from a `smearscope backup` folder (daemon stopped)")
    add_config_args(p, web=False)
    p.add_argument(
        "backup", metavar="BACKUP", help="one backup folder, e.g. /var/backups/smearscope/smearscope-<time>"
    )
    p.add_argument("--check", action="store_true", help="only check the backup (changes nothing)")
    p.add_argument(
        "--owner",
        metavar="USER",
        help="owner of the restored files when run as root (default: the data directory's, else smearscope)",
    )
    p.add_argument(
        "--allow-missing-images",
        action="store_true",
        help="restore even though images the database lists are not in the backup",
    )
    p.set_defaults(func=run)


def _owner(name: str | None) -> tuple[int, int] | None:
    if not name:
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise SmearscopeError(f"--owner {name}: no such user") from None
    return pw.pw_uid, pw.pw_gid


def check_only(backup: Path) -> int:
    checked = check_backup(backup)
    shas = {sha for sha, _path, _data in backup_images(backup)}
    missing = checked.live_images - shas
    how = "checksums of BACKUP.json" if checked.manifest else "no checksum list (an older backup)"
    print(
        f"backup {backup}: station {checked.device_id}, {checked.records} records, schema "
        f"{checked.schema_version}, {len(shas)} images match their sha256, {how}; database integrity ok"
    )
    if missing:
        print(f"  {len(missing)} image(s) the database lists are not in the backup")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    backup = Path(args.backup)
    if args.check:
        return check_only(backup)
    cfg = config_from_args(args)
    result = restore(
        backup,
        cfg.data_dir,
        models_dir=models_dir(),
        profiles_path=profiles_path(cfg),
        owner=_owner(args.owner),
        allow_missing_images=args.allow_missing_images,
        say=print,
    )
    models = {
        "station": "kept the station's",
        "backup": "taken from the backup (the station had none)",
        "none": "none in the station or the backup",
        "outside": "left alone (outside the data directory)",
    }[result.models]
    print(f"restored {result.records} records and {result.images} images into {result.data_dir}")
    schema = f"{result.schema_from} -> {result.schema_to}"
    print(f"  station id {result.device_id}; schema {schema}; models: {models}")
    if result.profiles is not None:
        print(f"  calibration profiles: {result.profiles}")
    if result.before is not None:
        print(f"  the previous data is kept in {result.before} (delete it once the station works)")
    config = sorted(p.name for p in backup.glob("*.toml") if p.name != "profiles.toml")
    if config:
        names = ", ".join(config)
        print(f"  the backup's config ({names}) was not copied: put it in /etc/smearscope by hand if lost")
    print("start the station: sudo systemctl start smearscope && sudo smearscope doctor")
    return 0
