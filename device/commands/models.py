"""`smearscope models install|list|rollback`: ship a new model bundle to a device safely.

Layout of the models directory (SMEARSCOPE_MODELS_DIR, /var/lib/smearscope/models on a device)::

    DEFAULT                               bundle names forming the ensemble, one per line
    mobilenetv2-all4-int8 -> .versions/mobilenetv2-all4-int8/20261122T020304Z-3f2a9c1b2d3e
    .versions/mobilenetv2-all4-int8/
        20261122T020304Z-3f2a9c1b2d3e/    model.tflite, manifest.json, MODEL.md, report/
        history.json                      activation order, the last one is active

A new bundle is checked (manifest, sha256, the interpreter loads it with the tensor shapes of the
manifest, one inference runs, labels match the rest of the ensemble) before anything changes, copied
into its own version directory, and made active by renaming a new symlink over the old one — one
atomic step, so a reader sees the old bundle or the new one, never half. If the bundle does not load
through the switched link, the link goes back to the previous version. Older versions are kept
(`--keep`) so `models rollback NAME` can return to them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from device.bundle import MANIFEST, Bundle, load_bundle, read_manifest
from device.errors import BundleError, SmearscopeError
from device.fsutil import atomic_write_bytes, fsync_dir
from device.paths import models_dir as default_models_dir
from device.signing import SignaturePolicy

VERSIONS = ".versions"
HISTORY = "history.json"
DEFAULT_LIST = "DEFAULT"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_ARCHIVE_BYTES = 1 << 30  # uncompressed: a bundle is a few MB; refuse archive bombs
MAX_ARCHIVE_MEMBERS = 10_000
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


# ---------------------------------------------------------------------------------------- checks


def check_loads(path: Path, *, others: list[Path] | None = None) -> Bundle:
    """Everything the daemon will do at start-up, so a bundle that passes cannot stop it: manifest,
    hash, interpreter + tensor shapes, one inference, same labels as the other ensemble members."""
    from device.model import TFLiteModel

    bundle = load_bundle(path)
    model = TFLiteModel(bundle, num_threads=1)
    h, w = bundle.manifest.input.height, bundle.manifest.input.width
    try:
        out = model.predict(np.full((h, w, 3), 128, np.uint8), with_cam=False)
    except Exception as exc:  # the runtime's own errors are not typed
        raise BundleError(f"{path}: the model loads but an inference fails ({exc})") from exc
    if not np.all(np.isfinite(out.probabilities)):
        raise BundleError(f"{path}: the model's output is not finite (NaN/inf)")
    for other in others or []:
        try:
            theirs = read_manifest(other)
        except BundleError:
            continue  # a broken neighbour is reported by `models list`/doctor, not blamed on this one
        if theirs.label_ids != bundle.manifest.label_ids:
            raise BundleError(
                f"{path}: labels {bundle.manifest.label_ids} differ from {theirs.name}'s {theirs.label_ids} "
                f"in the ensemble ({DEFAULT_LIST}); an ensemble needs the same labels in the same order. "
                "Remove the other bundle from DEFAULT first, or install this one with --no-default."
            )
    return bundle


# -------------------------------------------------------------------------------------- archives


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"{archive}: member {name!r} has an absolute path; refusing the archive")
    if any(part == ".." for part in p.parts):
        raise BundleError(f"{archive}: member {name!r} leaves the archive folder (..); refusing the archive")
    return p


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{archive}: not a readable tar archive ({exc})") from exc
    with tf:
        members = tf.getmembers()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise BundleError(f"{archive}: {len(members)} members is too many for a model bundle")
        total = 0
        for m in members:
            _safe_member_path(m.name, archive)
            if not (m.isfile() or m.isdir()):
                raise BundleError(
                    f"{archive}: member {m.name!r} is a link or special file; a bundle holds only files"
                )
            total += m.size
            if total > MAX_ARCHIVE_BYTES:
                raise BundleError(f"{archive}: unpacks to more than {MAX_ARCHIVE_BYTES >> 20} MB; refusing")
        for m in members:
            target = dest / _safe_member_path(m.name, archive)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:
                raise BundleError(f"{archive}: cannot read member {m.name!r}")
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{archive}: not a readable zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise BundleError(f"{archive}: {len(infos)} members is too many for a model bundle")
        total = 0
        for info in infos:
            _safe_member_path(info.filename, archive)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no file type
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise BundleError(
                    f"{archive}: member {info.filename!r} is a link or special file; "
                    "a bundle holds only files"
                )
            total += info.file_size
            if total > MAX_ARCHIVE_BYTES:
                raise BundleError(f"{archive}: unpacks to more than {MAX_ARCHIVE_BYTES >> 20} MB; refusing")
        for info in infos:
            target = dest / _safe_member_path(info.filename, archive)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
            except (zipfile.BadZipFile, OSError) as exc:  # CRC errors: a damaged download
                raise BundleError(f"{archive}: member {info.filename!r} is damaged ({exc})") from exc


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, dest: Path) -> Path:
    """Unpack `archive` into `dest` without letting it write outside; return the bundle folder inside
    (the top level, or the single folder at the top level)."""
    if archive.name.lower().endswith(".zip"):
        _extract_zip(archive, dest)
    else:
        _extract_tar(archive, dest)
    if (dest / MANIFEST).is_file():
        return dest
    subdirs = [p for p in dest.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    raise BundleError(f"{archive}: no {MANIFEST} at the top of the archive or in its single folder")


# -------------------------------------------------------------------------------- the store dir


class ModelStore:
    """The models directory: active links, versions, history, DEFAULT."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def versions_dir(self, name: str) -> Path:
        return self.root / VERSIONS / name

    def history(self, name: str) -> list[str]:
        path = self.versions_dir(name) / HISTORY
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, json.JSONDecodeError) as exc:
            raise SmearscopeError(f"{path}: unreadable ({exc}); fix or delete it") from exc
        return [str(v) for v in data.get("activated", [])]

    def _write_history(self, name: str, history: list[str]) -> None:
        text = json.dumps({"activated": history}, indent=2) + "\n"
        atomic_write_bytes(self.versions_dir(name) / HISTORY, text.encode())

    def active_version(self, name: str) -> str | None:
        link = self.root / name
        if link.is_symlink():
            return Path(os.readlink(link)).name
        return None

    def names(self) -> list[str]:
        """Every active bundle name: links into .versions, and plain bundle folders."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".") and (p.is_symlink() or (p / MANIFEST).is_file())
        )

    def default_names(self) -> list[str] | None:
        path = self.root / DEFAULT_LIST
        if not path.is_file():
            return None
        lines = (ln.strip() for ln in path.read_text(encoding="utf-8").splitlines())
        return [ln for ln in lines if ln and not ln.startswith("#")]

    def ensemble_names(self) -> list[str]:
        listed = self.default_names()
        return (
            listed
            if listed is not None
            else [n for n in self.names() if (self.root / n / MANIFEST).is_file()]
        )

    def add_default(self, name: str) -> None:
        listed = self.default_names()
        if listed is None or name in listed:
            return  # no DEFAULT: every bundle is in the ensemble already
        text = "\n".join([*listed, name]) + "\n"
        atomic_write_bytes(self.root / DEFAULT_LIST, text.encode())

    def switch(self, name: str, version: str) -> None:
        """Point `name` at `.versions/name/version` in one rename (relative link: survives a move)."""
        link = self.root / name
        target = Path(VERSIONS) / name / version
        tmp = self.root / f".tmp-link-{name}-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
        fsync_dir(self.root)

    def adopt_plain_dir(self, name: str) -> str | None:
        """A bundle folder copied in by hand (or by an older installer) becomes version 0 so the
        switch can be a rename and a rollback can return to it."""
        path = self.root / name
        if path.is_symlink() or not path.is_dir():
            return None
        version = "00000000T000000Z-adopted"
        vdir = self.versions_dir(name)
        vdir.mkdir(parents=True, exist_ok=True)
        os.replace(path, vdir / version)
        self.switch(name, version)
        self._write_history(name, [*self.history(name), version])
        return version

    def prune(self, name: str, keep: int) -> list[str]:
        """Delete versions beyond the newest `keep` in the history (never the active one)."""
        history = self.history(name)
        active = self.active_version(name)
        keep_set = set(history[-keep:]) | ({active} if active else set())
        removed = []
        for p in sorted(self.versions_dir(name).iterdir()):
            if p.is_dir() and p.name not in keep_set:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        if removed:
            self._write_history(name, [v for v in history if v not in removed])
        return removed


def _version_id(sha256: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + sha256[:12]


def _same_bundle(a: Path, b: Path) -> bool:
    """Same manifest bytes (a recalibrated manifest is a new version) and the same signature (a
    bundle re-signed with another key is a new version too)."""
    from device.signing import SIGNATURE_FILE

    def sig(p: Path) -> bytes | None:
        try:
            return (p / SIGNATURE_FILE).read_bytes()
        except FileNotFoundError:
            return None

    try:
        return (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes() and sig(a) == sig(b)
    except OSError:
        return False


def _copy_bundle(src: Path, dest: Path) -> None:
    """Copy the bundle folder, fsync every file, so a power cut after the switch finds whole files."""
    shutil.copytree(src, dest, symlinks=False)
    for p in dest.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            os.chmod(p, 0o755)
    os.chmod(dest, 0o755)
    fsync_dir(dest)
    fsync_dir(dest.parent)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One install/rollback at a time per models directory; clears what a killed one left behind."""
    (root / VERSIONS).mkdir(parents=True, exist_ok=True)
    with open(root / VERSIONS / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in (root / VERSIONS).glob(".incoming-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.glob(".tmp-link-*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield


def install(
    source: str | Path,
    root: str | Path,
    *,
    name: str | None = None,
    add_to_default: bool = True,
    keep: int = 3,
    check: Callable[..., Bundle] = check_loads,
    log: Callable[[str], None] = print,
    policy: SignaturePolicy | None = None,
) -> dict[str, Any]:
    """Install a bundle folder or archive into the models directory `root` and make it active.

    Raises BundleError (nothing changed, or the switch undone) when the bundle's signature is not
    good under `policy` (default: the station's `[models]` config) or it does not load.
    """
    policy = policy or default_policy()
    with _locked(Path(root)):
        return _install(Path(source), ModelStore(root), name, add_to_default, keep, check, log, policy)


def default_policy() -> SignaturePolicy:
    """The signature policy of this station's config (/etc/smearscope/config.toml or defaults)."""
    from device.config import load_config

    return SignaturePolicy.from_config(load_config())


def _check_signature(path: Path, policy: SignaturePolicy, log: Callable[[str], None]) -> None:
    for v in policy.check([path]):  # raises unless unsigned bundles are allowed
        log(f"WARNING: {v.problem()} — installed anyway because [models] allow_unsigned = true")


def _install(
    source: Path,
    store: ModelStore,
    name: str | None,
    add_to_default: bool,
    keep: int,
    check: Callable[..., Bundle],
    log: Callable[[str], None],
    policy: SignaturePolicy,
) -> dict[str, Any]:
    if not source.exists():
        raise BundleError(f"{source}: no such bundle folder or archive")
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=store.root / VERSIONS) as tmp:
        if source.is_dir():
            bundle_dir = source
        elif is_archive(source):
            bundle_dir = extract_archive(source, Path(tmp) / "unpacked")
        else:
            raise BundleError(f"{source}: neither a bundle folder nor a {'/'.join(ARCHIVE_SUFFIXES)} archive")
        _check_signature(bundle_dir, policy, log)  # first: nothing unsigned is parsed or loaded
        manifest = read_manifest(bundle_dir)
        name = name or manifest.name
        if not NAME_RE.match(name):
            raise BundleError(
                f"bundle name {name!r} is not usable as a folder name (letters, digits, . _ -; "
                "max 64); pass --name"
            )
        in_ensemble = add_to_default or name in store.ensemble_names()
        others = [store.root / n for n in store.ensemble_names() if n != name] if in_ensemble else []
        log(f"checking {bundle_dir} …")
        bundle = check(bundle_dir, others=others)
        sha = bundle.manifest.sha256

        store.adopt_plain_dir(name)
        previous = store.active_version(name)
        if previous and _same_bundle(store.root / name, bundle_dir):
            log(f"{name}: this bundle ({sha[:12]}) is already active; nothing to do")
            return {"name": name, "version": previous, "previous": previous, "changed": False}

        version = _version_id(sha)
        n = 1
        while (store.versions_dir(name) / version).exists():  # two installs within one second
            n += 1
            version = f"{_version_id(sha)}-{n}"
        vpath = store.versions_dir(name) / version
        _copy_bundle(bundle_dir, vpath)
    try:
        policy.check([vpath])  # the copy, as it will be read (a failing SD card shows here)
        check(vpath, others=others)
    except BundleError:
        shutil.rmtree(vpath, ignore_errors=True)
        raise

    store.switch(name, version)
    try:
        check(store.root / name, others=others)
    except BundleError as exc:
        if previous:
            store.switch(name, previous)
        else:
            (store.root / name).unlink()
        shutil.rmtree(vpath, ignore_errors=True)
        raise BundleError(
            f"{exc}\nrolled back: {name} is {'back at ' + previous if previous else 'not installed'}"
        ) from exc
    store._write_history(name, [*store.history(name), version])
    if add_to_default:
        store.add_default(name)
    removed = store.prune(name, keep)
    log(
        f"{name}: {version} is active"
        + (
            f" (previous {previous} kept; `smearscope models rollback {name}` returns to it)"
            if previous
            else ""
        )
    )
    return {"name": name, "version": version, "previous": previous, "changed": True, "pruned": removed}


def rollback(
    name: str,
    root: str | Path,
    *,
    check: Callable[..., Bundle] = check_loads,
    policy: SignaturePolicy | None = None,
) -> dict[str, Any]:
    """Make the version activated before the current one active again (its signature re-checked)."""
    policy = policy or default_policy()
    with _locked(Path(root)):
        return _rollback(name, ModelStore(root), check, policy)


def _rollback(
    name: str, store: ModelStore, check: Callable[..., Bundle], policy: SignaturePolicy
) -> dict[str, Any]:
    history = store.history(name)
    active = store.active_version(name)
    if active is None or active not in history:
        raise SmearscopeError(f"{name}: not installed with `smearscope models install`; nothing to roll back")
    earlier = [v for v in history[: history.index(active)] if (store.versions_dir(name) / v).is_dir()]
    if not earlier:
        raise SmearscopeError(f"{name}: no earlier version is kept (active {active})")
    target = earlier[-1]
    _check_signature(store.versions_dir(name) / target, policy, lambda _m: None)
    check(store.versions_dir(name) / target)
    store.switch(name, target)
    # drop the rolled-back version from the history, so a second rollback goes further back; its
    # folder stays until the next install prunes it
    store._write_history(name, [v for v in history if v != active])
    return {"name": name, "version": target, "previous": active}


def list_bundles(root: str | Path, *, verify: bool = True) -> list[dict[str, Any]]:
    store = ModelStore(root)
    ensemble = set(store.ensemble_names())
    out = []
    for name in store.names():
        row: dict[str, Any] = {
            "name": name,
            "active_version": store.active_version(name),
            "versions": store.history(name),
            "in_ensemble": name in ensemble,
        }
        try:
            b = load_bundle(store.root / name, check_hash=verify)
            m = b.manifest
            row.update(
                ok=True,
                sha256=m.sha256,
                architecture=m.architecture,
                quantization=m.quantization,
                labels=m.label_ids,
                input=f"{m.input.width}x{m.input.height} {m.input.dtype}",
                accuracy=m.metrics.get("accuracy"),
            )
        except BundleError as exc:
            row.update(ok=False, error=str(exc))
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="install, list and roll back model bundles")
    p.add_argument(
        "--models-dir",
        metavar="DIR",
        help="models directory (default: $SMEARSCOPE_MODELS_DIR, else the repository's models/)",
    )
    p.add_argument(
        "--config", metavar="FILE", help="station config with [models] trusted_keys / allow_unsigned"
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    pi = msub.add_parser("install", help="verify a bundle folder or archive and make it active")
    pi.add_argument("source", metavar="BUNDLE_DIR|ARCHIVE", help="bundle folder, .tar.gz/.tgz/.tar or .zip")
    pi.add_argument("--name", help="install under this name (default: the manifest's name)")
    pi.add_argument("--no-default", action="store_true", help="do not add it to the ensemble (DEFAULT)")
    pi.add_argument("--keep", type=int, default=3, help="versions kept per bundle for rollback (default 3)")
    pi.add_argument("--restart", action="store_true", help="then `systemctl try-restart smearscope`")
    pi.set_defaults(func=_run_install)

    pl = msub.add_parser("list", help="installed bundles, their versions and hash check")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    pl.set_defaults(func=_run_list)

    pr = msub.add_parser("rollback", help="return a bundle to the version active before")
    pr.add_argument("name")
    pr.add_argument("--restart", action="store_true", help="then `systemctl try-restart smearscope`")
    pr.set_defaults(func=_run_rollback)

    from device.commands._signing_cli import register_actions

    register_actions(msub)


def policy_from_args(args: argparse.Namespace) -> SignaturePolicy:
    from device.config import load_config

    return SignaturePolicy.from_config(load_config(getattr(args, "config", None)))


def _root(args: argparse.Namespace) -> Path:
    return Path(args.models_dir) if args.models_dir else default_models_dir()


def _restart_hint(args: argparse.Namespace) -> None:
    if getattr(args, "restart", False):
        import subprocess

        rc = subprocess.call(["systemctl", "try-restart", "smearscope.service"])
        print("restarted smearscope.service" if rc == 0 else "could not restart smearscope.service")
    else:
        print("the running daemon still uses the old model: sudo systemctl restart smearscope")


def _run_install(args: argparse.Namespace) -> int:
    if args.keep < 1:
        raise SmearscopeError("--keep must be at least 1")
    result = install(
        args.source,
        _root(args),
        name=args.name,
        add_to_default=not args.no_default,
        keep=args.keep,
        policy=policy_from_args(args),
    )
    if result["changed"]:
        _restart_hint(args)
    return 0


def _run_list(args: argparse.Namespace) -> int:
    rows = list_bundles(_root(args), verify=not args.no_verify)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0 if all(r["ok"] for r in rows) else 1
    if not rows:
        print(f"no bundles in {_root(args)}")
        return 1
    for r in rows:
        mark = "*" if r["in_ensemble"] else " "
        if r["ok"]:
            acc = f" accuracy {r['accuracy']:.4f}" if isinstance(r.get("accuracy"), int | float) else ""
            print(
                f"{mark} {r['name']}  {r['sha256'][:12]}  {r['architecture']} {r['quantization']} "
                f"{r['input']}  labels {','.join(r['labels'])}{acc}"
            )
        else:
            print(f"{mark} {r['name']}  BROKEN: {r['error']}")
        if r["versions"]:
            print(f"    versions: {', '.join(r['versions'])} (active {r['active_version']})")
    print("* = in the ensemble")
    return 0 if all(r["ok"] for r in rows) else 1


def _run_rollback(args: argparse.Namespace) -> int:
    result = rollback(args.name, _root(args), policy=policy_from_args(args))
    print(f"{result['name']}: back at {result['version']} (was {result['previous']})")
    _restart_hint(args)
    return 0
