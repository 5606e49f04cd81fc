"""A model bundle's `signature.json`, read and checked one way by the station and the hub.

A signed bundle holds `signature.json`::

    {"format": "smearscope-bundle-signature/1", "algorithm": "ed25519",
     "key_id": "<sha256 of the raw public key, 32 hex>", "signed_at": "...",
     "payload": "<canonical JSON text: {bundle, files: [{path, sha256, size}]}>",
     "signature": "<base64 Ed25519 signature of the payload's UTF-8 bytes>"}

The payload lists every file of the bundle folder except `signature.json` itself, so a file changed,
added or removed after signing is caught, not just the model. The payload is kept as the exact text
that was signed: the checking side never re-serialises it. Public keys are one line,
``smearscope-ed25519 <base64 of the 32 raw bytes> <comment>``, or the bare base64.

Signing, key files and the station's trust policy live in `device/models/signing.py`; the hub's
publishing in `hub/fleet/`. Both read and check signatures only through this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_FILE = "signature.json"
FORMAT = "smearscope-bundle-signature/1"
ALGORITHM = "ed25519"
PUB_PREFIX = "smearscope-ed25519"
#: An Ed25519 public key's raw length, in bytes.
PUBLIC_KEY_BYTES = 32
#: Hex digits of a key id (the start of the sha256 of the raw public key).
KEY_ID_HEX = 32
#: Hex digits of a file's sha256 in the signed listing.
SHA256_HEX = 64
#: Bytes read at a time when hashing a file.
HASH_BLOCK_BYTES = 1 << 20


class SignatureError(ValueError):
    """The bundle is unsigned, its signature document is malformed, or a key is unusable."""


# ------------------------------------------------------------------------------------------ keys


def raw_public_key(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    """The key's fingerprint: first 32 hex digits of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(raw_public_key(pub)).hexdigest()[:KEY_ID_HEX]


def public_key_b64(pub: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public_key(pub)).decode()


def decode_public_key(text: str) -> Ed25519PublicKey:
    """A `.pub` line (`smearscope-ed25519 BASE64 [comment]`) or a bare base64 key."""
    parts = text.strip().split()
    if not parts:
        raise SignatureError("empty public key")
    b64 = parts[1] if parts[0] == PUB_PREFIX and len(parts) > 1 else parts[0]
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("not a base64 Ed25519 public key") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SignatureError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


# ------------------------------------------------------------------------------ the signed document


def check_signed_path(path: Any) -> str:
    """A path in a signed file list is relative, inside the bundle, in POSIX form: no absolute path,
    no `.`/`..`/empty component, no backslash or drive (so no listing can name a file outside)."""
    parts = path.split("/") if isinstance(path, str) else []
    if (
        not parts
        or any(part in ("", ".", "..") for part in parts)
        or "\\" in path
        or "\x00" in path
        or ":" in parts[0]
    ):
        raise ValueError(f"the signed file list names an unsafe path {path!r}")
    return path


def _listed_file(entry: Any) -> tuple[str, dict[str, Any]]:
    path = check_signed_path(entry["path"])
    sha = str(entry["sha256"]).lower()
    if len(sha) != SHA256_HEX:
        raise ValueError(f"the signed file list gives {path!r} a sha256 that is not {SHA256_HEX} hex digits")
    return path, {"sha256": sha, "size": int(entry["size"])}


@dataclass(frozen=True)
class SignatureDoc:
    """A well-formed `signature.json` (not yet checked against any key)."""

    bundle: str
    key_id: str
    files: dict[str, dict[str, Any]]  # path -> {"sha256", "size"}, signature.json not included
    payload_text: str
    signature: bytes
    raw: bytes  # the document as it is, shipped to stations unchanged

    def signed_by(self, pub: Ed25519PublicKey) -> bool:
        """The Ed25519 signature over the payload's exact text is valid for `pub`."""
        try:
            pub.verify(self.signature, self.payload_text.encode("utf-8"))
        except InvalidSignature:
            return False
        return True


def parse_signature_doc(data: bytes) -> SignatureDoc:
    """Read `signature.json`: format, algorithm, safe and unique paths; SignatureError otherwise."""
    try:
        doc = json.loads(data)
        payload_text = doc["payload"]
        signature = base64.b64decode(doc["signature"], validate=True)
        kid = str(doc["key_id"])
        if doc.get("format") != FORMAT or doc.get("algorithm") != ALGORITHM:
            raise ValueError(
                f"format {doc.get('format')!r} / algorithm {doc.get('algorithm')!r} not supported"
            )
        payload = json.loads(payload_text)
        listed = dict(_listed_file(f) for f in payload["files"])
        if len(listed) != len(payload["files"]):
            raise ValueError("the signed file list names a file twice")
        bundle = str(payload["bundle"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise SignatureError(f"{SIGNATURE_FILE} is unreadable or malformed ({exc})") from exc
    return SignatureDoc(bundle, kid, listed, payload_text, signature, bytes(data))


def untrusted_key_detail(kid: str, trusted: Mapping[str, Any], where: str) -> str:
    return f"signed by key {kid}, which is not in {where} (trusted: {', '.join(trusted) or 'none'})"


BAD_SIGNATURE_DETAIL = (
    f"the Ed25519 signature does not match {SIGNATURE_FILE}'s file list (it was edited or forged)"
)


# ----------------------------------------------------------------------------------- the folder


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            h.update(block)
    return h.hexdigest()


def bundle_files(bundle_dir: Path) -> list[Path]:
    """Every file below the bundle folder except the signature, as relative paths, sorted.
    A symlink is refused: the signed bytes must be the bytes in the folder."""
    out = []
    for p in sorted(bundle_dir.rglob("*")):
        rel = p.relative_to(bundle_dir)
        if p.is_symlink():
            raise SignatureError(
                f"{bundle_dir}: {rel.as_posix()} is a symbolic link; a bundle holds only files"
            )
        if p.is_file() and rel.as_posix() != SIGNATURE_FILE:
            out.append(rel)
    return out


@dataclass(frozen=True)
class FileCheck:
    """One file of the folder against the signed listing."""

    path: str
    ok: bool
    detail: str


def check_files(bundle_dir: Path, listed: Mapping[str, Mapping[str, Any]]) -> list[FileCheck]:
    """Every file signed or present, sorted by path: missing, added after signing, changed, or matching.
    Raises SignatureError for a symbolic link in the folder."""
    present = {rel.as_posix() for rel in bundle_files(bundle_dir)}
    checks = []
    for path in sorted(set(listed) | present):
        if path not in present:
            checks.append(FileCheck(path, False, f"{path} was signed but is missing"))
        elif path not in listed:
            checks.append(FileCheck(path, False, f"{path} was added after signing"))
        else:
            actual = sha256_file(bundle_dir / path)
            signed_sha = str(listed[path]["sha256"])
            if actual == signed_sha:
                checks.append(FileCheck(path, True, f"sha256 {actual[:12]}… matches"))
            else:
                changed = f"{path} changed after signing (sha256 {actual[:12]}…, signed {signed_sha[:12]}…)"
                checks.append(FileCheck(path, False, changed))
    return checks
