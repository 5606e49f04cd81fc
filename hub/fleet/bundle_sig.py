"""Checking a model bundle's `signature.json` on the hub, and the release facts publishing reads.

The signature format and its check are `common/bundle_signature.py`, the code the station runs too.
`release()` reads what publishing needs from the signed manifest.json: its `model_file` (a plain name,
as on the device) and its release order (`version`, else `provenance.converted_at`; the device's
`Manifest.release_order`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common import bundle_signature as sig
from common.bundle_signature import SIGNATURE_FILE, SignatureError
from common.release import parse_version

MANIFEST = "manifest.json"

__all__ = ["SIGNATURE_FILE", "SignatureError"]


@dataclass
class SignedBundle:
    name: str
    key_id: str
    files: list[dict[str, Any]]  # [{path, sha256, size}] as signed (signature.json not included)
    signature_bytes: bytes  # signature.json as it is, shipped to the stations unchanged


def verify_signature_doc(data: bytes, trusted: dict[str, Ed25519PublicKey]) -> SignedBundle:
    """Check the signature document alone (no files): known key, valid Ed25519 over the payload."""
    doc = sig.parse_signature_doc(data)
    pub = trusted.get(doc.key_id)
    if pub is None:
        raise SignatureError(f"signed by key {doc.key_id}, which is not one of the hub's trusted keys")
    if not doc.signed_by(pub):
        raise SignatureError(sig.BAD_SIGNATURE_DETAIL)
    files = [{"path": path, **entry} for path, entry in doc.files.items()]
    return SignedBundle(doc.bundle, doc.key_id, files, data)


def verify_dir(bundle_dir: str | Path, trusted: dict[str, Ed25519PublicKey]) -> SignedBundle:
    """The signature document plus every file of the folder against it (changed, added, missing)."""
    bundle_dir = Path(bundle_dir)
    sig_path = bundle_dir / SIGNATURE_FILE
    if not sig_path.is_file():
        raise SignatureError(f"{bundle_dir}: no {SIGNATURE_FILE}: the bundle is unsigned")
    signed = verify_signature_doc(sig_path.read_bytes(), trusted)
    listed = {f["path"]: f for f in signed.files}
    for check in sig.check_files(bundle_dir, listed):
        if not check.ok:
            raise SignatureError(f"{bundle_dir}: {check.detail}")
    return signed


@dataclass(frozen=True)
class Release:
    """What publishing reads from a bundle's signed manifest.json."""

    name: str
    model_file: str
    order: datetime | None  # None: the manifest says nothing about its release order
    label: str


def release(manifest_bytes: bytes, signed: SignedBundle) -> Release:
    """The manifest's release facts; refuses a `model_file` that is not a plain name of a signed file."""
    try:
        m = json.loads(manifest_bytes)
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureError(f"{MANIFEST} is unreadable ({exc})") from exc
    model_file = m.get("model_file", "model.tflite")
    if (
        not isinstance(model_file, str)
        or model_file in ("", ".", "..")
        or any(c in model_file for c in "/\\\x00")
        or model_file[1:2] == ":"
    ):
        raise SignatureError(
            f"{MANIFEST}: model_file {model_file!r} is not a plain file name inside the bundle"
        )
    if model_file not in {f["path"] for f in signed.files}:
        raise SignatureError(f"{MANIFEST}: model_file {model_file!r} is not one of the signed files")
    version = m.get("version")
    if version is not None and parse_version(version) is None:
        raise SignatureError(f"{MANIFEST}: version {version!r} is not a UTC time like 2026-12-01T13:37:38Z")
    provenance = m.get("provenance") if isinstance(m.get("provenance"), dict) else {}
    order = parse_version(version) or parse_version(provenance.get("converted_at"))
    label = str(version or provenance.get("converted_at") or "unversioned")
    return Release(str(m.get("name", signed.name)), model_file, order, label)


def is_downgrade(new: Release, current: Release) -> bool:
    """`new` is older than `current`, or cannot be shown newer (the device's rule,
    device/models/bundle.py)."""
    if current.order is None:
        return False
    return new.order is None or new.order < current.order
