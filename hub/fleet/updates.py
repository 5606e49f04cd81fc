"""Updates flowing down: publishing signed bundles, bundle sets per group, what each station runs.

`publish()` checks each bundle folder's signature against the hub's trusted keys (table
`trusted_keys`, `smearscope-hub keys add`) and its signed manifest (`model_file` a plain name, release
order), refuses a bundle older than the one of the same name in a set it would replace unless the admin
says `allow_downgrade`, stores every file by its sha256 and records a bundle set as current for every
station or for one group. A station's current set is the newest set made for its group or for all
stations (so a set published for all later replaces a group's older one). Stations check the order
again themselves and install an older set only on their own admin's accept.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from common.bundle_signature import decode_public_key, key_id, public_key_b64
from hub.fleet.bundle_sig import (
    MANIFEST,
    SIGNATURE_FILE,
    Release,
    SignatureError,
    SignedBundle,
    is_downgrade,
    release,
    verify_dir,
)
from hub.fleet.tables import BundleBlob, BundleSet, DeviceFleet, PublishedBundle, TrustedKey
from hub.models import Device

GROUP_MAX = 100


class DowngradeRefused(ValueError):
    """A bundle is an older release than the one of its name in a set it would replace."""


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------- keys


def add_key(s: Session, text: str, comment: str = "") -> str:
    pub = decode_public_key(text)
    kid = key_id(pub)
    if s.get(TrustedKey, kid) is None:
        s.add(TrustedKey(key_id=kid, public_key=public_key_b64(pub), comment=comment[:200], added_at=_now()))
        s.commit()
    return kid


def remove_key(s: Session, kid: str) -> None:
    row = s.get(TrustedKey, kid)
    if row is None:
        raise ValueError(f"no trusted key {kid}")
    s.delete(row)
    s.commit()


def trusted_keys(s: Session) -> dict[str, Any]:
    return {k.key_id: decode_public_key(k.public_key) for k in s.scalars(select(TrustedKey))}


# ------------------------------------------------------------------------------------- publish


def _store_blob(s: Session, sha: str, data: bytes) -> None:
    if s.get(BundleBlob, sha) is None:
        s.add(BundleBlob(sha256=sha, size=len(data), data=data, created_at=_now()))


def _stored_release(s: Session, row: PublishedBundle) -> Release | None:
    """The release facts of a published bundle, from its stored manifest (None if unreadable)."""
    files = json.loads(row.files_json)
    entry = next((f for f in files if f["path"] == MANIFEST), None)
    if entry is None:
        return None
    data = s.scalar(select(BundleBlob.data).where(BundleBlob.sha256 == entry["sha256"]))
    signed = SignedBundle(row.name, row.key_id, [f for f in files if f["path"] != SIGNATURE_FILE], b"")
    try:
        return release(bytes(data or b""), signed)
    except SignatureError:
        return None


def _sets_replaced(s: Session, group: str | None) -> list[BundleSet]:
    """The sets in force that a new set for `group` replaces somewhere: that group's current set, or
    for every station (None) the current set of stations without a group and of every group."""
    groups: set[str | None] = {group}
    if group is None:
        groups |= set(s.scalars(select(BundleSet.group_name).distinct()))
        groups |= set(s.scalars(select(DeviceFleet.group_name).distinct()))
    out: list[BundleSet] = []
    for g in sorted(groups, key=lambda x: (x is not None, x or "")):
        cond = BundleSet.group_name.is_(None)
        if g is not None:
            cond = or_(cond, BundleSet.group_name == g)
        row = s.scalar(select(BundleSet).where(cond).order_by(BundleSet.id.desc()).limit(1))
        if row is not None and row not in out:
            out.append(row)
    return out


def downgrades(s: Session, releases: dict[str, Release], group: str | None) -> list[str]:
    """Each bundle of `releases` older than the bundle of its name in a set it would replace."""
    problems = []
    for bset in _sets_replaced(s, group):
        for bid in json.loads(bset.bundle_ids_json):
            row = s.get(PublishedBundle, bid)
            new = releases.get(row.name) if row is not None else None
            current = _stored_release(s, row) if new is not None else None
            if new is not None and current is not None and is_downgrade(new, current):
                problems.append(
                    f"{row.name}: {new.label} is older than {current.label} in set #{bset.id} "
                    f"({bset.group_name or 'every station'})"
                )
    return problems


def _verified_releases(
    s: Session, bundle_dirs: list[str | Path]
) -> tuple[list[tuple[Path, SignedBundle]], dict[str, Release]]:
    """Each bundle folder checked against the hub's trusted keys, and its signed manifest's release
    facts; SignatureError/ValueError before anything is stored."""
    trusted = trusted_keys(s)
    if not trusted:
        raise SignatureError(
            "the hub trusts no signing key yet: `smearscope-hub keys add PUBFILE` "
            "(e.g. the release key's .pub)"
        )
    signed = [(Path(d), verify_dir(d, trusted)) for d in bundle_dirs]
    names = [sb.name for _, sb in signed]
    if len(set(names)) != len(names):
        raise ValueError(f"two bundles named the same in one set: {names}")
    releases: dict[str, Release] = {}
    for d, sb in signed:
        data = (d / MANIFEST).read_bytes()
        listed = {f["path"]: f["sha256"] for f in sb.files}
        if hashlib.sha256(data).hexdigest() != listed.get(MANIFEST):
            raise SignatureError(f"{d}: {MANIFEST} is not the signed one")
        releases[sb.name] = release(data, sb)
    return signed, releases


def _stored_bundle(s: Session, d: Path, sb: SignedBundle) -> PublishedBundle:
    """The published row of a signed bundle: the one already stored for its signature, else its files
    stored by sha256 (each re-checked as it is read) and a new row."""
    sig_sha = hashlib.sha256(sb.signature_bytes).hexdigest()
    row = s.scalar(select(PublishedBundle).where(PublishedBundle.signature_sha256 == sig_sha))
    if row is not None:
        return row
    for f in sb.files:
        data = (d / f["path"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != f["sha256"]:  # changed since verify_dir
            raise SignatureError(f"{d}: {f['path']} changed while publishing")
        _store_blob(s, f["sha256"], data)
    _store_blob(s, sig_sha, sb.signature_bytes)
    files = [*sb.files, {"path": SIGNATURE_FILE, "sha256": sig_sha, "size": len(sb.signature_bytes)}]
    row = PublishedBundle(
        name=sb.name,
        key_id=sb.key_id,
        signature_sha256=sig_sha,
        files_json=json.dumps(files),
        published_at=_now(),
    )
    s.add(row)
    s.flush()
    return row


def publish(
    s: Session,
    bundle_dirs: list[str | Path],
    *,
    group: str | None = None,
    set_name: str | None = None,
    allow_downgrade: bool = False,
) -> dict[str, Any]:
    """Verify and store the bundles, then make them (in this order) the current set for `group`
    (None: every station). Raises SignatureError before anything is stored if one bundle fails, and
    DowngradeRefused when one is older than what it replaces and `allow_downgrade` is false."""
    if group is not None and not (0 < len(group) <= GROUP_MAX):
        raise ValueError(f"group name must be 1..{GROUP_MAX} characters")
    signed, releases = _verified_releases(s, bundle_dirs)
    names = [sb.name for _, sb in signed]
    problems = downgrades(s, releases, group)
    if problems and not allow_downgrade:
        raise DowngradeRefused(
            "older than what the stations are given now: "
            + "; ".join(problems)
            + " — publish it with --allow-downgrade if that is meant (each station's admin still has "
            "to accept a downgrade)"
        )
    ids = [_stored_bundle(s, d, sb).id for d, sb in signed]
    bset = BundleSet(
        name=set_name or "+".join(names),
        group_name=group,
        bundle_ids_json=json.dumps(ids),
        created_at=_now(),
    )
    s.add(bset)
    s.commit()
    return {"set_id": bset.id, "name": bset.name, "group": group, "bundles": names, "downgrade": problems}


# ------------------------------------------------------------------------------- devices/groups


def fleet_row(s: Session, device_id: int) -> DeviceFleet:
    row = s.get(DeviceFleet, device_id)
    if row is None:
        row = DeviceFleet(device_id=device_id)
        s.add(row)
    return row


def set_group(s: Session, device_name: str, group: str | None) -> None:
    dev = s.scalar(select(Device).where(Device.name == device_name))
    if dev is None:
        raise ValueError(f"no device {device_name!r}")
    if group is not None and not (0 < len(group) <= GROUP_MAX):
        raise ValueError(f"group name must be 1..{GROUP_MAX} characters")
    fleet_row(s, dev.id).group_name = group
    s.commit()


def current_set(s: Session, device_id: int) -> BundleSet | None:
    row = s.get(DeviceFleet, device_id)
    group = row.group_name if row is not None else None
    cond = BundleSet.group_name.is_(None)
    if group is not None:
        cond = or_(cond, BundleSet.group_name == group)
    return s.scalar(select(BundleSet).where(cond).order_by(BundleSet.id.desc()).limit(1))


def set_json(s: Session, bset: BundleSet | None) -> dict[str, Any] | None:
    """The set as a station reads it: bundles in ensemble order, each with its files."""
    if bset is None:
        return None
    bundles = []
    for bid in json.loads(bset.bundle_ids_json):
        b = s.get(PublishedBundle, bid)
        if b is None:
            continue
        files = json.loads(b.files_json)
        bundles.append(
            {
                "name": b.name,
                "key_id": b.key_id,
                "signature_sha256": b.signature_sha256,
                "files": files,
                "bytes": sum(int(f["size"]) for f in files),
            }
        )
    return {
        "id": bset.id,
        "name": bset.name,
        "group": bset.group_name,
        "created_at": bset.created_at.isoformat() if bset.created_at else None,
        "bundles": bundles,
    }


def record_report(s: Session, device_id: int, body: dict[str, Any]) -> None:
    """A station's report: the models it runs and how its last update went."""
    models = body.get("models")
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ValueError("'models' must be a list of objects")
    clean = [
        {
            "name": str(m.get("name", ""))[:64],
            "sha256": str(m.get("sha256", ""))[:64],
            "signature_sha256": str(m.get("signature_sha256") or "")[:64],
        }
        for m in models[:32]
    ]
    row = fleet_row(s, device_id)
    row.installed_json = json.dumps({"models": clean, "set_id": body.get("set_id")})
    row.update_state = str(body.get("state") or "")[:40] or None
    row.update_detail = str(body.get("detail") or "")[:2000] or None
    row.reported_at = _now()
    s.commit()


def fleet_overview(s: Session) -> list[dict[str, Any]]:
    """Per device: group, what it reports running, the set current for it and whether it runs it."""
    out = []
    for dev in s.scalars(select(Device).order_by(Device.name)):
        row = s.get(DeviceFleet, dev.id)
        installed = json.loads(row.installed_json) if row is not None and row.installed_json else None
        cur = set_json(s, current_set(s, dev.id))
        running = {m.get("signature_sha256") for m in (installed or {}).get("models", [])}
        wanted = {b["signature_sha256"] for b in cur["bundles"]} if cur else set()
        out.append(
            {
                "device": dev.name,
                "group": row.group_name if row is not None else None,
                "installed": (installed or {}).get("models", []),
                "reported_at": row.reported_at.isoformat() if row is not None and row.reported_at else None,
                "update_state": row.update_state if row is not None else None,
                "update_detail": row.update_detail if row is not None else None,
                "current_set": {"id": cur["id"], "name": cur["name"]} if cur else None,
                "up_to_date": (running == wanted) if cur and installed is not None else None,
            }
        )
    return out
