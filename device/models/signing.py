"""Signing model bundles, the station's trusted keys and its check of a bundle folder.

The signature format and the check itself are `common/bundle_signature.py` (the hub checks with the
same code). Private keys are PEM (PKCS#8) files, mode 0600, never inside a bundle; public keys are one
line, ``smearscope-ed25519 <base64 of the 32 raw bytes> <comment>``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common import bundle_signature as sig
from common.bundle_signature import (
    ALGORITHM,
    BAD_SIGNATURE_DETAIL,
    FORMAT,
    PUB_PREFIX,
    SIGNATURE_FILE,
    SignatureError,
    key_id,
)
from device.errors import BundleError, SmearscopeError
from device.fsutil import atomic_write_bytes
from device.models.bundle import sha256_file

PROJECT_KEYS_DIR = Path(__file__).resolve().parent / "keys"
#: The first project key file, for tools that name one project key. A station trusts every file in
#: PROJECT_KEYS_DIR, not this one alone (PROJECT_ALIAS).
PROJECT_KEY = PROJECT_KEYS_DIR / "smearscope-project.pub"
#: `[models] trusted_keys` entry meaning the project keys shipped with the code: every
#: `device/models/keys/*.pub`. A key rotation adds a file there; bundles signed by the older keys stay
#: valid.
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


def public_key_line(pub: Ed25519PublicKey, comment: str = "") -> str:
    return f"{PUB_PREFIX} {sig.public_key_b64(pub)} {comment}".rstrip() + "\n"


def parse_public_key(text: str, *, where: str = "public key") -> Ed25519PublicKey:
    """A `.pub` line (`smearscope-ed25519 BASE64 [comment]`) or a bare base64 key."""
    try:
        return sig.decode_public_key(text)
    except SignatureError as exc:
        raise SmearscopeError(f"{where}: {exc}") from exc


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
    try:
        return sig.bundle_files(bundle_dir)
    except SignatureError as exc:
        raise BundleError(str(exc)) from exc


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
        doc = sig.parse_signature_doc(data)
    except SignatureError as exc:
        v.add("signature file", False, str(exc))
        return None
    v.key_id = kid = doc.key_id
    pub = trusted.keys.get(kid)
    if not v.add(
        "trusted key",
        pub is not None,
        f"signed by key {kid} ({trusted.sources[kid]})"
        if pub is not None
        else sig.untrusted_key_detail(kid, trusted.keys, "[models] trusted_keys"),
    ):
        return None
    good = doc.signed_by(pub)
    if not v.add(
        "signature", good, "Ed25519 signature over the file list is valid" if good else BAD_SIGNATURE_DETAIL
    ):
        return None
    return SignedListing(doc.bundle, kid, doc.files)


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
    try:
        checks = sig.check_files(bundle_dir, signed.files)
    except SignatureError as exc:
        v.add("files", False, str(exc))
        return v
    for check in checks:
        v.add(f"file {check.path}", check.ok, check.detail)
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
