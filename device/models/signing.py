"""Ed25519 signatures over whole model bundles, and the station's list of trusted keys.

A signed bundle holds `signature.json`::

    {"format": "smearscope-bundle-signature/1", "algorithm": "ed25519",
     "key_id": "<sha256 of the raw public key, 32 hex>", "signed_at": "...",
     "payload": "<canonical JSON text: {bundle, files: [{path, sha256, size}]}>",
     "signature": "<base64 Ed25519 signature of the payload's UTF-8 bytes>"}

The payload lists every file of the bundle folder except `signature.json` itself (manifest, model,
card, report/...), so a file changed, added or removed after signing is caught, not just the model.
The payload is kept as the exact text that was signed (no re-serialisation on the checking side).
Private keys are PEM (PKCS#8) files, mode 0600, never inside a bundle; public keys are one line,
``smearscope-ed25519 <base64 of the 32 raw bytes> <comment>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device.errors import BundleError, SmearscopeError
from device.fsutil import atomic_write_bytes
from device.models.bundle import sha256_file

SIGNATURE_FILE = "signature.json"
FORMAT = "smearscope-bundle-signature/1"
ALGORITHM = "ed25519"
PUB_PREFIX = "smearscope-ed25519"
PROJECT_KEYS_DIR = Path(__file__).resolve().parent / "keys"
#: The first project release key (2026-11). Its private half was lost on 2026-12-01 (not leaked: no
#: bundle it did not sign exists); bundles signed since are by the successor in the same folder.
PROJECT_KEY = PROJECT_KEYS_DIR / "smearscope-project.pub"
#: `[models] trusted_keys` entry meaning the project keys shipped with the code: every
#: `device/models/keys/*.pub` (a key rotation adds a file; bundles signed by the older key stay valid).
PROJECT_ALIAS = "project"


def project_keys() -> list[Path]:
    """The shipped project public keys, sorted by file name."""
    return sorted(PROJECT_KEYS_DIR.glob("*.pub"))


#: Extra trusted keys from the environment (os.pathsep-separated paths or inline keys), added to the
#: config's list: for a systemd drop-in, and for the test suite's fixture key.
ENV_TRUSTED_KEYS = "SMEARSCOPE_TRUSTED_KEYS"
#: base64 of 32 bytes: 43 characters and one "=" (may contain "/", so it is matched before paths)
INLINE_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")


# ------------------------------------------------------------------------------------------ keys


#: The PEM armour of a private key (split so that this file itself holds no key marker).
_PEM_PRIVATE = b"PRIVATE" + b" KEY-----"


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    """The key's fingerprint: first 32 hex digits of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(_raw(pub)).hexdigest()[:32]


def public_key_line(pub: Ed25519PublicKey, comment: str = "") -> str:
    return f"{PUB_PREFIX} {base64.b64encode(_raw(pub)).decode()} {comment}".rstrip() + "\n"


def parse_public_key(text: str, *, where: str = "public key") -> Ed25519PublicKey:
    """A `.pub` line (`smearscope-ed25519 BASE64 [comment]`) or a bare base64 key."""
    parts = text.strip().split()
    if not parts:
        raise SmearscopeError(f"{where}: empty")
    b64 = parts[1] if parts[0] == PUB_PREFIX and len(parts) > 1 else parts[0]
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SmearscopeError(f"{where}: not a base64 Ed25519 public key") from exc
    if len(raw) != 32:
        raise SmearscopeError(f"{where}: an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def generate_keypair(out: str | Path, comment: str = "") -> tuple[Path, Path, str]:
    """Write a new private key to `out` (0600, refusing to overwrite) and its public half to
    `out.pub` (or `out` with .key replaced by .pub). Returns (private, public, key_id)."""
    out = Path(out)
    pub_path = out.with_suffix(".pub") if out.suffix == ".key" else Path(str(out) + ".pub")
    for p in (out, pub_path):
        if p.exists():
            raise SmearscopeError(f"{p} exists; refusing to overwrite a key (move it away first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    pub = priv.public_key()
    atomic_write_bytes(pub_path, public_key_line(pub, comment or out.stem).encode())
    return out, pub_path, key_id(pub)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SmearscopeError(f"{path}: cannot read the private key ({exc.strerror or exc})") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SmearscopeError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SmearscopeError(f"{path}: not an Ed25519 key")
    return key


@dataclass
class TrustedKeys:
    """Public keys a station runs bundles from, by key id (with where each came from)."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, pub: Ed25519PublicKey, source: str) -> str:
        kid = key_id(pub)
        self.keys[kid] = pub
        self.sources.setdefault(kid, source)
        return kid

    def describe(self) -> list[str]:
        return [f"{kid} ({self.sources[kid]})" for kid in self.keys]


def load_trusted_keys(entries: Iterable[str], *, env: dict[str, str] | None = None) -> TrustedKeys:
    """Each entry: `project` (the shipped keys, `project_keys()`), a path to a `.pub` file, or an inline
    key; then the entries of $SMEARSCOPE_TRUSTED_KEYS. A bad entry is an error, never silently skipped."""
    env = dict(os.environ) if env is None else env
    extra = [e for e in env.get(ENV_TRUSTED_KEYS, "").split(os.pathsep) if e.strip()]
    trust = TrustedKeys()
    for entry in [*entries, *extra]:
        entry = entry.strip()
        if entry == PROJECT_ALIAS:
            for path in project_keys():
                trust.add(parse_public_key(path.read_text(encoding="utf-8"), where=str(path)), str(path))
            continue
        if entry.startswith(PUB_PREFIX + " ") or INLINE_KEY_RE.fullmatch(entry):
            trust.add(parse_public_key(entry, where="[models] trusted_keys inline key"), "inline")
            continue
        path = Path(entry)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SmearscopeError(
                f"[models] trusted_keys: cannot read {path} ({exc.strerror or exc})"
            ) from exc
        trust.add(parse_public_key(text, where=str(path)), str(path))
    return trust


# ---------------------------------------------------------------------------------- sign / verify


def bundle_files(bundle_dir: Path) -> list[Path]:
    """Every file below the bundle folder except the signature, as relative POSIX paths, sorted.
    A symlink is refused: the signed bytes must be the bytes in the folder."""
    out = []
    for p in sorted(bundle_dir.rglob("*")):
        rel = p.relative_to(bundle_dir)
        if p.is_symlink():
            raise BundleError(f"{bundle_dir}: {rel.as_posix()} is a symbolic link; a bundle holds only files")
        if p.is_file() and rel.as_posix() != SIGNATURE_FILE:
            out.append(rel)
    return out


def signature_key_id(bundle_dir: Path) -> str | None:
    """The key id a bundle's signature.json names (not verified: `verify_bundle` does that), or None
    when the bundle has no readable signature."""
    try:
        doc = json.loads((Path(bundle_dir) / SIGNATURE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kid = doc.get("key_id") if isinstance(doc, dict) else None
    return kid if isinstance(kid, str) and re.fullmatch(r"[0-9a-f]{1,64}", kid) else None


def file_listing(bundle_dir: Path) -> list[dict[str, Any]]:
    return [
        {
            "path": rel.as_posix(),
            "sha256": sha256_file(bundle_dir / rel),
            "size": (bundle_dir / rel).stat().st_size,
        }
        for rel in bundle_files(bundle_dir)
    ]


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sign_bundle(bundle_dir: str | Path, private_key: Ed25519PrivateKey | str | Path) -> dict[str, Any]:
    """Write `signature.json` over every other file of the bundle; returns the signature document."""
    from device.models.bundle import read_manifest

    bundle_dir = Path(bundle_dir)
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    name = read_manifest(bundle_dir).name  # refuse to sign something that is not a bundle
    for rel in bundle_files(bundle_dir):
        p = bundle_dir / rel
        if p.stat().st_size < 16_384 and _PEM_PRIVATE in p.read_bytes():
            raise SmearscopeError(
                f"{p} is a private key: a private key never goes into a bundle; move it out and sign again"
            )
    payload = canonical({"bundle": name, "files": file_listing(bundle_dir)})
    doc = {
        "format": FORMAT,
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "payload": payload,
        "signature": base64.b64encode(key.sign(payload.encode("utf-8"))).decode(),
    }
    atomic_write_bytes(bundle_dir / SIGNATURE_FILE, (json.dumps(doc, indent=2) + "\n").encode())
    return doc


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verification:
    """Every check run on one bundle, in order; `ok` when all passed."""

    bundle: Path
    checks: list[Check] = field(default_factory=list)
    key_id: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def problem(self) -> str:
        """One line naming the first failed check (for errors and events)."""
        bad = self.failures
        if not bad:
            return ""
        first = bad[0]
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        return (
            f"{self.bundle}: signature check '{first.name}' failed: {first.detail}{more} — reinstall a "
            "bundle signed by a trusted key (`smearscope models verify DIR` shows every check)"
        )

    def raise_for_failure(self) -> None:
        if not self.ok:
            raise BundleError(self.problem())


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


@dataclass
class SignedListing:
    """A signature document that passed: who signed it and the files it lists."""

    bundle: str
    key_id: str
    files: dict[str, dict[str, Any]]  # path -> {"sha256", "size"}


def check_signature_doc(data: bytes, trusted: TrustedKeys, v: Verification) -> SignedListing | None:
    """Run the checks on `signature.json` alone (format, trusted key, Ed25519 over the payload, safe
    paths) into `v`; the signed listing when they pass. Archives and downloads run this before any
    large file is unpacked or fetched."""
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
        listed = {
            check_signed_path(f["path"]): {"sha256": str(f["sha256"]).lower(), "size": int(f["size"])}
            for f in payload["files"]
        }
        if len(listed) != len(payload["files"]):
            raise ValueError("the signed file list names a file twice")
        bundle = str(payload["bundle"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        v.add("signature file", False, f"{SIGNATURE_FILE} is unreadable or malformed ({exc})")
        return None
    v.key_id = kid
    pub = trusted.keys.get(kid)
    if not v.add(
        "trusted key",
        pub is not None,
        f"signed by key {kid} ({trusted.sources[kid]})"
        if pub is not None
        else f"signed by key {kid}, which is not in [models] trusted_keys "
        f"(trusted: {', '.join(trusted.keys) or 'none'})",
    ):
        return None
    try:
        pub.verify(signature, payload_text.encode("utf-8"))
        good = True
    except InvalidSignature:
        good = False
    if not v.add(
        "signature",
        good,
        "Ed25519 signature over the file list is valid"
        if good
        else f"the Ed25519 signature does not match {SIGNATURE_FILE}'s file list (it was edited or forged)",
    ):
        return None
    return SignedListing(bundle, kid, listed)


def verify_bundle(bundle_dir: str | Path, trusted: TrustedKeys) -> Verification:
    """Check `signature.json` against the trusted keys and every file against the signed listing."""
    bundle_dir = Path(bundle_dir)
    v = Verification(bundle_dir)
    sig_path = bundle_dir / SIGNATURE_FILE
    if not v.add(
        "signed",
        sig_path.is_file(),
        f"{SIGNATURE_FILE} present"
        if sig_path.is_file()
        else f"no {SIGNATURE_FILE}: the bundle is unsigned (sign it with `smearscope models sign`)",
    ):
        return v
    try:
        data = sig_path.read_bytes()
    except OSError as exc:
        v.add("signature file", False, f"{SIGNATURE_FILE} is unreadable ({exc.strerror or exc})")
        return v
    signed = check_signature_doc(data, trusted, v)
    if signed is None:
        return v
    listed = signed.files
    try:
        present = {rel.as_posix() for rel in bundle_files(bundle_dir)}
    except BundleError as exc:
        v.add("files", False, str(exc))
        return v
    for path in sorted(set(listed) | present):
        if path not in present:
            v.add(f"file {path}", False, f"{path} was signed but is missing")
        elif path not in listed:
            v.add(f"file {path}", False, f"{path} was added after signing")
        else:
            actual = sha256_file(bundle_dir / path)
            signed_sha = str(listed[path]["sha256"])
            same = actual == signed_sha
            changed = f"{path} changed after signing (sha256 {actual[:12]}…, signed {signed_sha[:12]}…)"
            v.add(f"file {path}", same, f"sha256 {actual[:12]}… matches" if same else changed)
    return v


# ----------------------------------------------------------------------------- station's policy


@dataclass
class SignaturePolicy:
    """`[models] trusted_keys` + `allow_unsigned`, resolved once."""

    trusted: TrustedKeys
    allow_unsigned: bool = False

    @classmethod
    def from_config(cls, config: Any) -> SignaturePolicy:
        mc = config.models
        return cls(load_trusted_keys(mc.trusted_keys), bool(mc.allow_unsigned))

    def check(self, bundle_dirs: Iterable[str | Path]) -> list[Verification]:
        """Verify each bundle; raise BundleError on the first failure unless unsigned bundles are
        allowed, in which case the failed verifications are returned for the status page."""
        failed = []
        for d in bundle_dirs:
            v = verify_bundle(d, self.trusted)
            if not v.ok:
                if not self.allow_unsigned:
                    v.raise_for_failure()
                failed.append(v)
        return failed
