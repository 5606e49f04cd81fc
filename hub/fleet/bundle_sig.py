"""Checking a model bundle's `signature.json` on the hub (the format is written by the device's
`smearscope models sign`, device/models/signing.py; the hub never imports device internals, so the few lines
that read it are repeated here, and tests/test_fleet_hub.py checks both sides agree).

The payload is the exact signed text: {"bundle": name, "files": [{"path", "sha256", "size"}]}, every
file of the folder except signature.json. `release()` reads what publishing needs from the signed
manifest.json: its `model_file` (a plain name, as on the device) and its release order (`version`, else
`provenance.converted_at`; the device's `Manifest.release_order`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.release import parse_version

SIGNATURE_FILE = "signature.json"
MANIFEST = "manifest.json"
FORMAT = "smearscope-bundle-signature/1"
PUB_PREFIX = "smearscope-ed25519"


class SignatureError(ValueError):
    """The bundle is unsigned, signed by an unknown key, or a file differs from the signed list."""


def parse_public_key(text: str) -> Ed25519PublicKey:
    parts = text.strip().split()
    if not parts:
        raise SignatureError("empty public key")
    b64 = parts[1] if parts[0] == PUB_PREFIX and len(parts) > 1 else parts[0]
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("not a base64 Ed25519 public key") from exc
    if len(raw) != 32:
        raise SignatureError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def public_key_b64(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@dataclass
class SignedBundle:
    name: str
    key_id: str
    files: list[dict[str, Any]]  # [{path, sha256, size}] as signed (signature.json not included)
    signature_bytes: bytes  # signature.json as it is, shipped to the stations unchanged


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify_signature_doc(data: bytes, trusted: dict[str, Ed25519PublicKey]) -> SignedBundle:
    """Check the signature document alone (no files): known key, valid Ed25519 over the payload."""
    try:
        doc = json.loads(data)
        payload_text = doc["payload"]
        signature = base64.b64decode(doc["signature"], validate=True)
        kid = str(doc["key_id"])
        payload = json.loads(payload_text)
        files = [
            {"path": str(f["path"]), "sha256": str(f["sha256"]).lower(), "size": int(f["size"])}
            for f in payload["files"]
        ]
        name = str(payload["bundle"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(f"{SIGNATURE_FILE} is unreadable or malformed ({exc})") from exc
    if doc.get("format") != FORMAT:
        raise SignatureError(f"{SIGNATURE_FILE}: format {doc.get('format')!r} is not supported")
    pub = trusted.get(kid)
    if pub is None:
        raise SignatureError(f"signed by key {kid}, which is not one of the hub's trusted keys")
    try:
        pub.verify(signature, payload_text.encode("utf-8"))
    except InvalidSignature as exc:
        raise SignatureError("the Ed25519 signature does not match the signed file list") from exc
    for f in files:
        parts = f["path"].split("/")
        if (
            any(part in ("", ".", "..") for part in parts)
            or "\\" in f["path"]
            or "\x00" in f["path"]
            or ":" in parts[0]
            or len(f["sha256"]) != 64
        ):
            raise SignatureError(f"signed file entry {f['path']!r} is not a safe relative path")
    if len({f["path"] for f in files}) != len(files):
        raise SignatureError("the signed file list names a file twice")
    return SignedBundle(name, kid, files, data)


def verify_dir(bundle_dir: str | Path, trusted: dict[str, Ed25519PublicKey]) -> SignedBundle:
    """The signature document plus every file of the folder against it (changed, added, missing)."""
    bundle_dir = Path(bundle_dir)
    sig = bundle_dir / SIGNATURE_FILE
    if not sig.is_file():
        raise SignatureError(f"{bundle_dir}: no {SIGNATURE_FILE}: the bundle is unsigned")
    signed = verify_signature_doc(sig.read_bytes(), trusted)
    listed = {f["path"]: f for f in signed.files}
    for p in bundle_dir.rglob("*"):
        if p.is_symlink():
            raise SignatureError(
                f"{bundle_dir}: {p.relative_to(bundle_dir)} is a symbolic link; a bundle holds files"
            )
    present = {
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if p.is_file() and p.relative_to(bundle_dir).as_posix() != SIGNATURE_FILE
    }
    for path in sorted(set(listed) | present):
        if path not in present:
            raise SignatureError(f"{bundle_dir}: {path} was signed but is missing")
        if path not in listed:
            raise SignatureError(f"{bundle_dir}: {path} was added after signing")
        if _sha256(bundle_dir / path) != listed[path]["sha256"]:
            raise SignatureError(f"{bundle_dir}: {path} changed after signing")
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
