"""Unpacking a bundle archive (`.tar.gz`/`.tgz`/`.tar`/`.zip`) without trusting it.

Order of the checks, cheapest first and nothing big written before the signature is known good:

1. the archive file's size (`MAX_ARCHIVE_MB`);
2. its member list, read from the headers: only plain files and folders, relative paths that stay
   inside, no name twice, no name that is both a file and a folder, at most `MAX_ARCHIVE_MEMBERS`
   members unpacking to at most `MAX_ARCHIVE_MB`, all of them in the bundle folder (the top level or
   its single folder);
3. with trusted keys: `signature.json` alone (trusted key, valid Ed25519), and the member list against
   the signed file list (same paths, same sizes);
4. unpacking, each file hashed as it is written and compared with its signed sha256: the first file
   that differs stops the unpacking.

A truncated or corrupt archive is one `BundleError` naming the archive, never a traceback.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from device.errors import BundleError
from device.models.bundle import MANIFEST
from device.models.signing import (
    SIGNATURE_FILE,
    SignedListing,
    TrustedKeys,
    Verification,
    check_signature_doc,
)

#: Cap on the archive file and on what it unpacks to: a bundle is a few MB (the shipped ones 5-6 MB).
MAX_ARCHIVE_MB = 256
MAX_ARCHIVE_BYTES = MAX_ARCHIVE_MB << 20
MAX_ARCHIVE_MEMBERS = 10_000
#: signature.json is read into memory before anything is unpacked: a few KB in practice.
MAX_SIGNATURE_BYTES = 1 << 20
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
#: What a damaged archive raises from the standard library's readers.
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    """One archive entry: normalised relative path, folder or file, declared size, reader's handle."""

    path: PurePosixPath
    is_dir: bool
    size: int
    ref: Any


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """The member's path relative to the archive top; absolute paths, drives and `..` refused."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"{archive}: member {name!r} has an absolute path; refusing the archive")
    if any(part == ".." for part in p.parts):
        raise BundleError(f"{archive}: member {name!r} leaves the archive folder (..); refusing the archive")
    if "\x00" in name:
        raise BundleError(f"{archive}: member {name!r} has a NUL byte in its name; refusing the archive")
    return p


def _not_a_file(archive: Path, name: str) -> BundleError:
    return BundleError(f"{archive}: member {name!r} is a link or special file; a bundle holds only files")


# ----------------------------------------------------------------------------------------- readers


class _TarReader:
    def __init__(self, archive: Path):
        self.archive = archive
        self.tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by close()

    def members(self) -> Iterator[Member]:
        for m in self.tf:  # headers one by one: a huge archive stops at the first limit crossed
            if not (m.isfile() or m.isdir()):
                raise _not_a_file(self.archive, m.name)
            yield Member(safe_member_path(m.name, self.archive), m.isdir(), int(m.size), m)

    def open(self, member: Member) -> IO[bytes]:
        src = self.tf.extractfile(member.ref)
        if src is None:
            raise BundleError(f"{self.archive}: cannot read member {member.ref.name!r}")
        return src

    def close(self) -> None:
        self.tf.close()


class _ZipReader:
    def __init__(self, archive: Path):
        self.archive = archive
        self.zf = zipfile.ZipFile(archive)

    def members(self) -> Iterator[Member]:
        for info in self.zf.infolist():
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no file type
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise _not_a_file(self.archive, info.filename)
            path = safe_member_path(info.filename, self.archive)
            yield Member(path, info.is_dir(), int(info.file_size), info)

    def open(self, member: Member) -> IO[bytes]:
        return self.zf.open(member.ref)

    def close(self) -> None:
        self.zf.close()


@contextmanager
def _damage_is_an_error(archive: Path, what: str) -> Iterator[None]:
    try:
        yield
    except BundleError:
        raise
    except _DAMAGED as exc:
        raise BundleError(
            f"{archive}: {what}: the archive is truncated or corrupt ({exc or type(exc).__name__}); "
            "copy or download it again"
        ) from exc


# ------------------------------------------------------------------------------------------ checks


def read_members(reader: _TarReader | _ZipReader, archive: Path) -> list[Member]:
    """Every member, checked for count, size, duplicates and file/folder clashes before any is read."""
    members: list[Member] = []
    total = 0
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    for m in reader.members():
        if len(members) >= MAX_ARCHIVE_MEMBERS:
            raise BundleError(f"{archive}: more than {MAX_ARCHIVE_MEMBERS} members; not a model bundle")
        total += m.size
        if total > MAX_ARCHIVE_BYTES:
            raise BundleError(f"{archive}: unpacks to more than {MAX_ARCHIVE_MB} MB; refusing")
        if not m.path.parts:  # "." or "./": the archive's own top folder
            continue
        if m.is_dir:
            if m.path in files:
                raise BundleError(f"{archive}: {m.path} is both a file and a folder; refusing the archive")
            folders.add(m.path)
        else:
            if m.path in files:
                raise BundleError(f"{archive}: {m.path} appears twice; refusing the archive")
            if m.path in folders:
                raise BundleError(f"{archive}: {m.path} is both a folder and a file; refusing the archive")
            files.add(m.path)
        for parent in m.path.parents:
            if parent.parts and parent in files:
                raise BundleError(
                    f"{archive}: {parent} is a file and also the folder of {m.path}; refusing the archive"
                )
            folders.add(parent)
        members.append(m)
    return members


def bundle_root(members: list[Member], archive: Path) -> PurePosixPath:
    """Where manifest.json is: the top level, or the archive's single top-level folder. Every member
    must lie inside it."""
    files = {m.path for m in members if not m.is_dir}
    tops = {m.path.parts[0] for m in members}
    if PurePosixPath(MANIFEST) in files:
        return PurePosixPath()
    if len(tops) == 1:
        root = PurePosixPath(next(iter(tops)))
        if root / MANIFEST in files:
            return root
    raise BundleError(f"{archive}: no {MANIFEST} at the top of the archive or in its single folder")


def _rel(m: Member, root: PurePosixPath) -> str:
    return m.path.relative_to(root).as_posix()


def check_against_signature(
    reader: _TarReader | _ZipReader,
    members: list[Member],
    root: PurePosixPath,
    archive: Path,
    trusted: TrustedKeys,
) -> SignedListing:
    """signature.json alone, then the member list against its signed file list, before unpacking."""
    by_rel = {_rel(m, root): m for m in members if not m.is_dir and m.path != root}
    sig = by_rel.pop(SIGNATURE_FILE, None)
    if sig is None:
        raise BundleError(
            f"{archive}: no {SIGNATURE_FILE}: the bundle is unsigned; refusing it before unpacking "
            "(sign it with `smearscope models sign`)"
        )
    if sig.size > MAX_SIGNATURE_BYTES:
        raise BundleError(f"{archive}: {SIGNATURE_FILE} is {sig.size} bytes; not a bundle signature")
    with reader.open(sig) as src:
        data = src.read(MAX_SIGNATURE_BYTES + 1)
    v = Verification(archive)
    signed = check_signature_doc(data, trusted, v)
    if signed is None:
        raise BundleError(f"{v.problem()} (refused before unpacking)")
    for rel in sorted(set(by_rel) | set(signed.files)):
        if rel not in by_rel:
            raise BundleError(
                f"{archive}: {rel} was signed but is not in the archive (a truncated archive?); refusing it"
            )
        if rel not in signed.files:
            raise BundleError(f"{archive}: {rel} was added after signing; refusing the archive")
        if by_rel[rel].size != signed.files[rel]["size"]:
            raise BundleError(
                f"{archive}: {rel} is {by_rel[rel].size} bytes, signed as {signed.files[rel]['size']}; "
                "refusing the archive"
            )
    return signed


# ---------------------------------------------------------------------------------------- extract


def _write_member(reader: _TarReader | _ZipReader, m: Member, target: Path, archive: Path) -> str:
    """Copy one member to `target` (new file), returning its sha256; a short member is an error."""
    h = hashlib.sha256()
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "xb")  # noqa: SIM115 - closed below; a new file, never an overwrite
    except OSError as exc:
        raise BundleError(f"cannot unpack {archive} into {target.parent} ({exc.strerror or exc})") from exc
    with out, reader.open(m) as src:
        while block := src.read(_COPY_CHUNK):
            written += len(block)
            if written > m.size:
                raise BundleError(f"{archive}: member {m.path} is longer than its header says")
            h.update(block)
            try:
                out.write(block)
            except OSError as exc:  # a full disk is the station's problem, not the archive's
                raise BundleError(
                    f"cannot unpack {archive} into {target.parent} ({exc.strerror or exc})"
                ) from exc
    if written != m.size:
        raise BundleError(
            f"{archive}: member {m.path} ends after {written} of {m.size} bytes: the archive is "
            "truncated; copy or download it again"
        )
    return h.hexdigest()


def extract_archive(archive: Path, dest: Path, *, trusted: TrustedKeys | None = None) -> Path:
    """Unpack `archive` into `dest` (checks in the module docstring) and return the bundle folder in
    it. With `trusted`, the signature is checked before unpacking and every file while unpacking."""
    archive = Path(archive)
    try:
        size = archive.stat().st_size
    except OSError as exc:
        raise BundleError(f"{archive}: cannot read the archive ({exc.strerror or exc})") from exc
    if size > MAX_ARCHIVE_BYTES:
        raise BundleError(
            f"{archive}: {size / (1 << 20):.1f} MB is more than a model bundle archive may be "
            f"({MAX_ARCHIVE_MB} MB)"
        )
    kind = "zip" if archive.name.lower().endswith(".zip") else "tar"
    try:
        reader: _TarReader | _ZipReader = _ZipReader(archive) if kind == "zip" else _TarReader(archive)
    except _DAMAGED as exc:
        raise BundleError(f"{archive}: not a readable {kind} archive ({exc})") from exc
    try:
        with _damage_is_an_error(archive, "reading its member list"):
            members = read_members(reader, archive)
        root = bundle_root(members, archive)
        signed = None
        if trusted is not None:
            with _damage_is_an_error(archive, f"reading {SIGNATURE_FILE}"):
                signed = check_against_signature(reader, members, root, archive, trusted)
        for m in members:
            target = dest / m.path
            if m.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            with _damage_is_an_error(archive, f"unpacking {m.path}"):
                digest = _write_member(reader, m, target, archive)
            rel = _rel(m, root)
            if signed is not None and rel in signed.files and digest != signed.files[rel]["sha256"]:
                raise BundleError(
                    f"{archive}: {rel} changed after signing (sha256 {digest[:12]}…, signed "
                    f"{signed.files[rel]['sha256'][:12]}…); refusing the archive"
                )
    finally:
        reader.close()
    return dest / root
