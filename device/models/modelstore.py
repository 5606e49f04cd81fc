"""The device's model store: install, roll back and list signed bundles safely (used by `smearscope
models` and the update worker `device/sync/updates.py`).

Layout of the models directory (SMEARSCOPE_MODELS_DIR, /var/lib/smearscope/models on a device)::

    DEFAULT                               bundle names forming the ensemble, one per line
    mobilenetv2-all4-int8 -> .versions/mobilenetv2-all4-int8/20261122T020304Z-3f2a9c1b2d3e
    .versions/mobilenetv2-all4-int8/
        20261122T020304Z-3f2a9c1b2d3e/              model.tflite, manifest.json, MODEL.md, report/
        20261122T020304Z-3f2a9c1b2d3e.history.json  activation order while that version is active

A new bundle is checked (signature, manifest, release order, sha256, the interpreter loads it with the
tensor shapes of the manifest, one inference runs, labels match the rest of the ensemble) before
anything changes, copied into its own version directory, and made active by renaming a new symlink over
the old one. The history of activations belongs to the version it ends with and is written before the
rename, so the rename alone switches both the model and its history: a process killed at any point
leaves the old or the new version active, each with its own history, and `models rollback` works from
either. If the bundle does not load through the switched link, the link goes back to the previous
version. Older versions are kept (`keep`) so `models rollback NAME` can return to them. A bundle whose
signed release version is older than the active one is refused unless `allow_downgrade` is given.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import BundleError, SmearscopeError
from device.fsutil import atomic_write_bytes, fsync_dir
from device.models.bundle import MANIFEST, Bundle, Manifest, is_downgrade, load_bundle, read_manifest
from device.models.bundle_archive import ARCHIVE_SUFFIXES, extract_archive, is_archive
from device.models.signing import SignaturePolicy

VERSIONS = ".versions"
#: The history file of stores made before each version carried its own (read, never written).
LEGACY_HISTORY = "history.json"
HISTORY_SUFFIX = ".history.json"
#: Marks a hand-copied folder being moved into `.versions` (finished by the next locked command).
ADOPTING = ".adopting"
ADOPTED_VERSION = "00000000T000000Z-adopted"
DEFAULT_LIST = "DEFAULT"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _after_step(step: str) -> None:
    """Called after every durable step of install/rollback/adoption; tests replace it to kill the
    process there and check that what is left on disk still serves and rolls back."""


# ---------------------------------------------------------------------------------------- checks


def check_loads(path: Path, *, others: list[Path] | None = None) -> Bundle:
    """Everything the daemon will do at start-up, so a bundle that passes cannot stop it: manifest,
    hash, interpreter + tensor shapes, one inference, same labels as the other ensemble members."""
    from device.models.model import TFLiteModel

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


# -------------------------------------------------------------------------------- the store dir


class ModelStore:
    """The models directory: active links, versions, each version's activation history, DEFAULT."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def versions_dir(self, name: str) -> Path:
        return self.root / VERSIONS / name

    def _history_file(self, name: str, version: str) -> Path:
        return self.versions_dir(name) / f"{version}{HISTORY_SUFFIX}"

    def _read_list(self, path: Path) -> list[str] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SmearscopeError(f"{path}: unreadable ({exc}); fix or delete it") from exc
        if not isinstance(data, dict) or not isinstance(data.get("activated", []), list):
            raise SmearscopeError(f"{path}: not an activation history; fix or delete it")
        return [str(v) for v in data.get("activated", [])]

    def history(self, name: str) -> list[str]:
        """Versions in activation order, the active one last, only those still on disk. It is the
        history the active version was switched in with; a store from before per-version histories
        is read from its `history.json`, with the active version added when a killed install left it
        out."""
        active = self.active_version(name)
        listed = self._read_list(self._history_file(name, active)) if active else None
        if listed is None:
            listed = self._read_list(self.versions_dir(name) / LEGACY_HISTORY) or []
            if active and active not in listed:
                listed.append(active)
        return [v for v in listed if (self.versions_dir(name) / v).is_dir()]

    def _write_history(self, name: str, version: str, history: list[str]) -> None:
        text = json.dumps({"activated": history}, indent=2) + "\n"
        atomic_write_bytes(self._history_file(name, version), text.encode())

    def activate(self, name: str, version: str, history: list[str]) -> None:
        """Make `version` active with `history` (ending with it): the history file first, then the
        link rename, which switches both at once."""
        self._write_history(name, version, history)
        _after_step("history written")
        self.switch(name, version)
        _after_step("switched")
        with contextlib.suppress(OSError):  # superseded by the per-version histories
            (self.versions_dir(name) / LEGACY_HISTORY).unlink()

    def active_version(self, name: str) -> str | None:
        link = self.root / name
        if link.is_symlink():
            return Path(os.readlink(link)).name
        return None

    def active_manifest(self, name: str) -> Manifest | None:
        """The manifest of what `name` runs now (None when nothing, or nothing readable)."""
        try:
            return read_manifest(self.root / name)
        except BundleError:
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
        """A bundle folder copied in by hand (or by an older installer) becomes a version so the
        switch can be a rename and a rollback can return to it. A folder cannot be replaced by a link
        in one rename, so a marker names the move first and `repair()` finishes it after a kill."""
        path = self.root / name
        if path.is_symlink() or not path.is_dir():
            return None
        vdir = self.versions_dir(name)
        vdir.mkdir(parents=True, exist_ok=True)
        version, n = ADOPTED_VERSION, 1
        while (vdir / version).exists():
            n += 1
            version = f"{ADOPTED_VERSION}-{n}"
        self._write_history(name, version, [version])
        atomic_write_bytes(vdir / ADOPTING, (version + "\n").encode())
        _after_step("adoption marked")
        self._finish_adoption(name)
        return version

    def _finish_adoption(self, name: str) -> None:
        vdir = self.versions_dir(name)
        marker = vdir / ADOPTING
        try:
            version = marker.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return
        path, target = self.root / name, vdir / version
        if version and not path.is_symlink() and path.is_dir() and not target.exists():
            os.replace(path, target)
            fsync_dir(vdir)
            fsync_dir(self.root)
            _after_step("adopted folder moved")
        if version and target.is_dir() and not path.exists() and not path.is_symlink():
            self.switch(name, version)
            _after_step("adopted folder linked")
        marker.unlink()
        fsync_dir(vdir)

    def repair(self) -> None:
        """Finish what a killed command left half done (an adoption between its two renames)."""
        for marker in sorted((self.root / VERSIONS).glob(f"*/{ADOPTING}")):
            self._finish_adoption(marker.parent.name)

    def prune(self, name: str, keep: int) -> list[str]:
        """Delete versions beyond the newest `keep` in the history (never the active one), and the
        history files of versions that are gone."""
        history = self.history(name)
        active = self.active_version(name)
        keep_set = set(history[-keep:]) | ({active} if active else set())
        removed = []
        for p in sorted(self.versions_dir(name).iterdir()):
            if p.is_dir() and p.name not in keep_set:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        for p in self.versions_dir(name).glob(f"*{HISTORY_SUFFIX}"):
            if not (self.versions_dir(name) / p.name[: -len(HISTORY_SUFFIX)]).is_dir():
                with contextlib.suppress(OSError):
                    p.unlink()
        return removed


def _version_id(sha256: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + sha256[:12]


def _same_bundle(a: Path, b: Path) -> bool:
    """Same manifest bytes (a recalibrated manifest is a new version) and the same signature (a
    bundle re-signed with another key is a new version too)."""
    from device.models.signing import SIGNATURE_FILE

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
        ModelStore(root).repair()
        yield


class DowngradeRefused(BundleError):
    """The bundle is an older release than the active one, and no downgrade was asked for."""


def downgrade_problem(name: str, new: Manifest, installed: Manifest | None) -> str | None:
    """Why installing `new` over `installed` is a downgrade, or None when it is not."""
    if installed is None or not is_downgrade(new, installed):
        return None
    if new.release_order is None:
        return (
            f"{name}: this bundle has no release version and the active one is "
            f"{installed.release_label}, so it cannot be shown to be newer"
        )
    return (
        f"{name}: this bundle ({new.release_label}) is an older release than the active one "
        f"({installed.release_label})"
    )


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
    allow_downgrade: bool = False,
) -> dict[str, Any]:
    """Install a bundle folder or archive into the models directory `root` and make it active.

    Raises BundleError (nothing changed, or the switch undone) when the bundle's signature is not
    good under `policy` (default: the station's `[models]` config), it does not load, or it is an
    older release than the active one (`DowngradeRefused`) and `allow_downgrade` is false.
    """
    policy = policy or default_policy()
    with _locked(Path(root)):
        return _install(
            Path(source), ModelStore(root), name, add_to_default, keep, check, log, policy, allow_downgrade
        )


def default_policy() -> SignaturePolicy:
    """The signature policy of this station's config (/etc/smearscope/config.toml or defaults)."""
    from device.config import load_config

    return SignaturePolicy.from_config(load_config())


def _check_signature(path: Path, policy: SignaturePolicy, log: Callable[[str], None]) -> None:
    for v in policy.check([path]):  # raises unless unsigned bundles are allowed
        log(f"WARNING: {v.problem()} — installed anyway because [models] allow_unsigned = true")


def _bundle_folder(source: Path, tmp: Path, policy: SignaturePolicy) -> Path:
    """The bundle folder of `source`: the folder itself, or an archive unpacked into `tmp`."""
    if source.is_dir():
        return source
    if is_archive(source):
        # with signatures required, signature.json is checked before the payload is unpacked
        trusted = None if policy.allow_unsigned else policy.trusted
        return extract_archive(source, tmp / "unpacked", trusted=trusted)
    raise BundleError(f"{source}: neither a bundle folder nor a {'/'.join(ARCHIVE_SUFFIXES)} archive")


def _install_name(
    name: str | None, manifest: Manifest, store: ModelStore, allow_downgrade: bool, log: Callable[[str], None]
) -> str:
    """The name to install under (usable as a folder name), refusing a downgrade unless allowed."""
    name = name or manifest.name
    if not NAME_RE.match(name):
        raise BundleError(
            f"bundle name {name!r} is not usable as a folder name (letters, digits, . _ -; "
            "max 64); pass --name"
        )
    problem = downgrade_problem(name, manifest, store.active_manifest(name))
    if problem and not allow_downgrade:
        raise DowngradeRefused(
            f"{problem}; refusing a downgrade. To go back on purpose: `smearscope models rollback "
            f"{name}` (to the version active before), or install this bundle with --allow-downgrade"
        )
    if problem:
        log(f"WARNING: {problem}; installing it as asked (--allow-downgrade)")
    return name


def _new_version(store: ModelStore, name: str, sha: str) -> str:
    version = _version_id(sha)
    n = 1
    while (store.versions_dir(name) / version).exists():  # two installs within one second
        n += 1
        version = f"{_version_id(sha)}-{n}"
    return version


def _activate_checked(
    store: ModelStore,
    name: str,
    version: str,
    previous: str | None,
    others: list[Path],
    check: Callable[..., Bundle],
) -> None:
    """Make `version` active and load it from there; on failure the previous version comes back."""
    vpath = store.versions_dir(name) / version
    store.activate(name, version, [*store.history(name), version])
    try:
        check(store.root / name, others=others)
    except BundleError as exc:
        if previous:
            store.switch(name, previous)  # its own history file still says what it was
        else:
            (store.root / name).unlink()
        shutil.rmtree(vpath, ignore_errors=True)
        raise BundleError(
            f"{exc}\nrolled back: {name} is {'back at ' + previous if previous else 'not installed'}"
        ) from exc


def _install(
    source: Path,
    store: ModelStore,
    name: str | None,
    add_to_default: bool,
    keep: int,
    check: Callable[..., Bundle],
    log: Callable[[str], None],
    policy: SignaturePolicy,
    allow_downgrade: bool,
) -> dict[str, Any]:
    if not source.exists():
        raise BundleError(f"{source}: no such bundle folder or archive")
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=store.root / VERSIONS) as tmp:
        bundle_dir = _bundle_folder(source, Path(tmp), policy)
        _check_signature(bundle_dir, policy, log)  # first: nothing unsigned is parsed or loaded
        manifest = read_manifest(bundle_dir)
        name = _install_name(name, manifest, store, allow_downgrade, log)
        in_ensemble = add_to_default or name in store.ensemble_names()
        others = [store.root / n for n in store.ensemble_names() if n != name] if in_ensemble else []
        log(f"checking {bundle_dir} …")
        bundle = check(bundle_dir, others=others)
        sha = bundle.manifest.sha256

        store.adopt_plain_dir(name)
        previous = store.active_version(name)
        if previous and _same_bundle(store.root / name, bundle_dir):
            if add_to_default:
                store.add_default(name)
            log(f"{name}: this bundle ({sha[:12]}) is already active; nothing to do")
            return {"name": name, "version": previous, "previous": previous, "changed": False}

        version = _new_version(store, name, sha)
        vpath = store.versions_dir(name) / version
        _copy_bundle(bundle_dir, vpath)
        _after_step("copied")
    try:
        policy.check([vpath])  # the copy, as it will be read (a failing SD card shows here)
        check(vpath, others=others)
    except BundleError:
        shutil.rmtree(vpath, ignore_errors=True)
        raise
    _activate_checked(store, name, version, previous, others, check)
    if add_to_default:
        store.add_default(name)
        _after_step("default listed")
    removed = store.prune(name, keep)
    _after_step("pruned")
    kept = (
        f" (previous {previous} kept; `smearscope models rollback {name}` returns to it)" if previous else ""
    )
    log(f"{name}: {version} is active{kept}")
    return {"name": name, "version": version, "previous": previous, "changed": True, "pruned": removed}


def rollback(
    name: str,
    root: str | Path,
    *,
    check: Callable[..., Bundle] = check_loads,
    policy: SignaturePolicy | None = None,
) -> dict[str, Any]:
    """Make the version activated before the current one active again (its signature re-checked).
    An admin's explicit step back: no release-order check."""
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
    earlier = history[: history.index(active)]
    if not earlier:
        raise SmearscopeError(f"{name}: no earlier version is kept (active {active})")
    target = earlier[-1]
    _check_signature(store.versions_dir(name) / target, policy, lambda _m: None)
    check(store.versions_dir(name) / target)
    # the rolled-back version leaves the history, so a second rollback goes further back; its folder
    # stays until the next install prunes it
    store.activate(name, target, earlier)
    return {"name": name, "version": target, "previous": active}


def _repair_if_free(root: Path) -> None:
    """Finish a killed command's half-done step when this process may write and no command runs
    (`models list` run by an admin); otherwise leave it to the next install/rollback."""
    lock_path = root / VERSIONS / ".lock"
    if not lock_path.is_file():
        return
    try:
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            ModelStore(root).repair()
    except OSError:
        pass


def list_bundles(root: str | Path, *, verify: bool = True) -> list[dict[str, Any]]:
    _repair_if_free(Path(root))
    store = ModelStore(root)
    ensemble = set(store.ensemble_names())
    out = []
    for name in store.names():
        row: dict[str, Any] = {
            "name": name,
            "active_version": store.active_version(name),
            "versions": [],
            "in_ensemble": name in ensemble,
        }
        try:
            row["versions"] = store.history(name)
        except SmearscopeError as exc:  # a damaged history file is reported, the rest still listed
            row.update(ok=False, error=str(exc))
            out.append(row)
            continue
        try:
            b = load_bundle(store.root / name, check_hash=verify)
            m = b.manifest
            row.update(
                ok=True,
                sha256=m.sha256,
                release=m.release_label,
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
