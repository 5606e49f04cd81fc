"""Model updates flowing down from the hub (DEVELOPERS.md Contract 5, download direction).

One `ModelUpdater.check(client)` pass:

1. ask the hub for the bundle set current for this station (`GET /api/v1/models/current`);
2. if it differs from what runs (compared by each bundle's signature.json sha256, in ensemble order),
   fetch each new bundle's signature.json first and check it against the station's own `[models]
   trusted_keys` (a download is always verified, whatever `allow_unsigned` says) and the hub's file
   list against the signed one (paths, sha256, sizes, at most `MAX_ARCHIVE_MB` a bundle), so nothing
   large is fetched that the signature does not name; then download the files into
   `<data_dir>/staging/blobs/<sha256>` — through `<sha256>.part` and `Range` requests, so a cut
   download resumes where it stopped — and check each sha256;
3. assemble the bundles under `<data_dir>/staging/set-<id>/<name>/` and verify every signature again
   over the assembled folders. A failure is refused: reported to the hub and as an event, never staged;
4. a set holding an older release of a bundle than the one running (the signed manifest's version,
   `device.models.bundle.is_downgrade`) is staged but never installed by itself: only an admin's accept that
   names it a downgrade installs it, whatever `update_policy` says (a hub cannot roll stations back);
5. otherwise `update_policy = "auto"`: install at once (`apply()`); "manual": wait for an admin's
   accept on the Models page. Installing reuses `smearscope models install` (atomic switch, rollback)
   bundle by bundle; if one fails, or the reloaded ensemble does not load, every bundle of the set goes
   back to its previous version and the station keeps running what it ran;
6. report what runs to the hub (`POST /api/v1/models/installed`).

The classifier keeps running throughout: the daemon swaps the new ensemble in between two frames.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from device.errors import BundleError, SmearscopeError
from device.fsutil import atomic_write_bytes
from device.models.bundle import read_manifest, sha256_file
from device.models.bundle_archive import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MB, MAX_SIGNATURE_BYTES
from device.models.modelstore import DEFAULT_LIST, ModelStore, downgrade_problem, install
from device.models.modelstore import rollback as rollback_bundle
from device.models.signing import (
    SIGNATURE_FILE,
    SignaturePolicy,
    TrustedKeys,
    Verification,
    check_signature_doc,
    load_trusted_keys,
    verify_bundle,
)
from device.paths import models_dir as default_models_dir
from device.sync.transport import HubClient, HubError

log = logging.getLogger(__name__)

STAGING = "staging"
STATE_FILE = "state.json"


class UpdateRefused(SmearscopeError):
    """A downloaded set failed verification (or did not install): the station keeps its models."""


def installed_models(root: Path) -> list[dict[str, Any]]:
    """What the station runs, in ensemble order: name, model sha256, signature.json sha256."""
    store = ModelStore(root)
    out = []
    for name in store.ensemble_names():
        d = root / name
        entry: dict[str, Any] = {"name": name, "sha256": None, "signature_sha256": None}
        with contextlib.suppress(BundleError, OSError):
            entry["sha256"] = read_manifest(d).sha256
        if (d / SIGNATURE_FILE).is_file():
            entry["signature_sha256"] = sha256_file(d / SIGNATURE_FILE)
        out.append(entry)
    return out


def _safe_rel(path: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or any(part in ("..", "") for part in p.parts) or "\\" in path:
        raise UpdateRefused(f"the hub's file list names an unsafe path {path!r}")
    return p


class ModelUpdater:
    """Downloads, verifies, stages and installs the hub's current bundle set for this station."""

    def __init__(
        self,
        config: Any,
        store: Any,
        *,
        models_root: Path | None = None,
        on_installed: Callable[[], Any] | None = None,
    ):
        self.config = config
        self.store = store
        self.root = Path(models_root) if models_root else default_models_dir()
        self.on_installed = on_installed
        self.dir = Path(config.device.data_dir) / STAGING
        self.blobs = self.dir / "blobs"
        self._lock = threading.Lock()
        self.bytes_downloaded = 0  # over the process's life (the measurement's figure)
        self.last_check: str | None = None
        self.last_error: str | None = None

    # -- state ----------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.dir / STATE_FILE, (json.dumps(state, indent=2) + "\n").encode())

    def status(self) -> dict[str, Any]:
        st = self._state()
        return {
            "policy": self.config.models.update_policy,
            "staged": st.get("staged"),
            "last_result": st.get("last"),
            "last_check": self.last_check,
            "last_error": self.last_error,
            "bytes_downloaded": self.bytes_downloaded,
        }

    def _event(self, level: str, message: str) -> None:
        with contextlib.suppress(Exception):
            self.store.add_event(level, "models", message)

    def _report(self, client: HubClient, state: str, detail: str = "", set_id: Any = None) -> None:
        try:
            client.report_models(
                {"models": installed_models(self.root), "set_id": set_id, "state": state, "detail": detail}
            )
        except HubError as exc:
            log.info("models: could not report to the hub (%s)", exc)

    # -- one pass -------------------------------------------------------------------------------

    def check(self, client: HubClient) -> dict[str, Any]:
        """Ask, download, verify, stage (and install under the auto policy); report. Returns what
        happened: {"state": "none"|"up_to_date"|"staged"|"installed"|"refused"|"failed", ...}.
        HubError propagates (the hub went away): what was downloaded stays for the next pass."""
        with self._lock:
            self.last_check = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            try:
                out = self._check(client)
                self.last_error = None
                return out
            except HubError as exc:
                self.last_error = str(exc)[:500]
                raise

    def _check(self, client: HubClient) -> dict[str, Any]:
        cur = client.current_models()
        if not cur or not cur.get("bundles"):
            self._report(client, "no_set")
            return {"state": "none"}
        set_id = cur.get("id")
        wanted = [b.get("signature_sha256") for b in cur["bundles"]]
        running = [m["signature_sha256"] for m in installed_models(self.root)]
        state = self._state()
        if wanted == running:
            if state.get("staged"):  # the hub went back to what runs: an unaccepted set is moot
                shutil.rmtree(self.dir / f"set-{state['staged']['set_id']}", ignore_errors=True)
                state["staged"] = None
                self._save(state)
            self._report(client, "up_to_date", set_id=set_id)
            return {"state": "up_to_date", "set_id": set_id}
        trust = sorted(load_trusted_keys(self.config.models.trusted_keys).keys)
        if state.get("trust") != trust:  # new trusted keys: refused sets get another chance
            state.update(trust=trust, refused={})
            self._save(state)
        refused = state.get("refused", {})
        if str(set_id) in refused:
            self._report(client, "refused", refused[str(set_id)], set_id)
            return {"state": "refused", "set_id": set_id, "reason": refused[str(set_id)], "cached": True}
        staged = state.get("staged")
        fresh = not (staged and staged.get("set_id") == set_id)
        if fresh:
            try:
                staged = self._download_and_stage(client, cur)
            except UpdateRefused as exc:
                return self._refuse(client, set_id, str(exc))
            state = self._state()
            old = (state.get("staged") or {}).get("set_id")
            if old is not None and old != set_id:  # a newer set replaces one an admin never accepted
                shutil.rmtree(self.dir / f"set-{old}", ignore_errors=True)
            state["staged"] = staged
            self._save(state)
        if staged.get("downgrade"):
            detail = (
                "older than what this station runs (" + "; ".join(staged["downgrade"]) + "): waiting for "
                "an admin to accept it as a downgrade"
            )
            if fresh:
                self._event("warning", f"model update set #{set_id} held back: {detail}")
            self._report(client, "downgrade", detail, set_id)
            return {"state": "downgrade", "set_id": set_id, "reason": detail}
        if self.config.models.update_policy == "auto":
            return self._apply(client)
        if fresh:
            self._event(
                "warning",
                f"model update '{cur.get('name')}' (set #{set_id}) downloaded and verified; an admin can "
                "accept it on the Models page",
            )
        self._report(client, "staged", "waiting for an admin to accept it", set_id)
        return {"state": "staged", "set_id": set_id}

    def _refuse(self, client: HubClient, set_id: Any, reason: str) -> dict[str, Any]:
        state = self._state()
        state.setdefault("refused", {})[str(set_id)] = reason[:1000]
        state["last"] = {"state": "refused", "set_id": set_id, "detail": reason[:1000]}
        if (state.get("staged") or {}).get("set_id") == set_id:
            state["staged"] = None
        self._save(state)
        shutil.rmtree(self.dir / f"set-{set_id}", ignore_errors=True)
        shutil.rmtree(self.blobs, ignore_errors=True)  # nothing of a refused set is kept
        self._event("error", f"model update set #{set_id} refused, current models kept: {reason}")
        self._report(client, "refused", reason, set_id)
        return {"state": "refused", "set_id": set_id, "reason": reason}

    # -- download + verify ----------------------------------------------------------------------

    def _fetch(self, client: HubClient, sha: str, size: int) -> Path:
        """The published file in the blob cache, complete and matching its sha256."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        dest = self.blobs / sha
        if dest.is_file() and sha256_file(dest) == sha:
            return dest
        part = self.blobs / f"{sha}.part"
        self.bytes_downloaded += client.download(sha, part, size)
        if part.stat().st_size < size:
            raise UpdateRefused(f"file {sha[:12]}… ended at {part.stat().st_size} of {size} bytes")
        if part.stat().st_size > size or sha256_file(part) != sha:
            part.unlink()
            raise UpdateRefused(f"the hub sent bytes that do not match file {sha[:12]}… (sha256 differs)")
        part.replace(dest)
        return dest

    def _signed_files(
        self, client: HubClient, b: dict[str, Any], trusted: TrustedKeys
    ) -> list[dict[str, Any]]:
        """The hub's file list of bundle `b`, once its signature.json (fetched alone, small) is good
        and names exactly these files with these sha256s and sizes; nothing else is fetched before."""
        name = str(b.get("name", ""))
        files = b.get("files")
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise UpdateRefused(f"the hub's file list of {name!r} is malformed")
        listed: dict[str, dict[str, Any]] = {}
        for f in files:
            path = _safe_rel(str(f.get("path", ""))).as_posix()
            sha = str(f.get("sha256", ""))
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise UpdateRefused(f"the hub's file list has a bad sha256 {sha!r}")
            try:
                size = int(f.get("size", -1))
            except (TypeError, ValueError):
                size = -1
            if size < 0 or path in listed:
                raise UpdateRefused(f"the hub's file list of {name!r} is malformed at {path!r}")
            listed[path] = {"path": path, "sha256": sha, "size": size}
        sig = listed.pop(SIGNATURE_FILE, None)
        if sig is None:
            raise UpdateRefused(f"{name}: the hub lists no {SIGNATURE_FILE}; the bundle is unsigned")
        if sig["size"] > MAX_SIGNATURE_BYTES:
            raise UpdateRefused(f"{name}: the hub lists a {sig['size']}-byte {SIGNATURE_FILE}")
        total = sum(f["size"] for f in listed.values())
        if total > MAX_ARCHIVE_BYTES:
            raise UpdateRefused(
                f"{name}: {total >> 20} MB is more than a bundle may be ({MAX_ARCHIVE_MB} MB)"
            )
        v = Verification(Path(name))
        signed = check_signature_doc(self._fetch(client, sig["sha256"], sig["size"]).read_bytes(), trusted, v)
        if signed is None:
            raise UpdateRefused(v.problem())
        for path in sorted(set(listed) | set(signed.files)):
            if path not in listed:
                raise UpdateRefused(f"{name}: {path} was signed but the hub does not list it")
            if path not in signed.files:
                raise UpdateRefused(f"{name}: {path} was added after signing (the hub lists it)")
            ours, theirs = signed.files[path], listed[path]
            if (ours["sha256"], ours["size"]) != (theirs["sha256"], theirs["size"]):
                raise UpdateRefused(
                    f"{name}: {path} changed after signing (the hub lists sha256 {theirs['sha256'][:12]}…, "
                    f"the signature {ours['sha256'][:12]}…)"
                )
        return [*listed.values(), sig]

    def _download_and_stage(self, client: HubClient, cur: dict[str, Any]) -> dict[str, Any]:
        set_id = cur.get("id")
        running = {m["name"]: m["signature_sha256"] for m in installed_models(self.root)}
        trusted = load_trusted_keys(self.config.models.trusted_keys)
        for b in cur["bundles"]:
            if running.get(b.get("name")) == b.get("signature_sha256"):
                continue  # already runs here: staged from the installed copy, nothing downloaded
            for f in self._signed_files(client, b, trusted):
                self._fetch(client, f["sha256"], f["size"])
        set_dir = self.dir / f"set-{set_id}"
        shutil.rmtree(set_dir, ignore_errors=True)
        bundles = []
        downgrades: list[str] = []
        for b in cur["bundles"]:
            name = str(b.get("name", ""))
            bdir = set_dir / name
            if not name or "/" in name or name.startswith("."):
                raise UpdateRefused(f"the hub names a bundle {name!r}")
            local = running.get(name) == b.get("signature_sha256")
            for f in b["files"]:
                target = bdir / _safe_rel(f["path"])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(
                    (self.root / name / f["path"]) if local else (self.blobs / f["sha256"]), target
                )
            v = verify_bundle(bdir, trusted)  # downloads are always verified, allow_unsigned or not
            if not v.ok:
                raise UpdateRefused(v.problem())
            try:
                manifest = read_manifest(bdir)
            except BundleError as exc:
                raise UpdateRefused(str(exc)) from exc
            if manifest.name != name:
                raise UpdateRefused(f"{bdir}: the hub calls it {name!r}, its manifest {manifest.name!r}")
            problem = downgrade_problem(name, manifest, ModelStore(self.root).active_manifest(name))
            if problem:
                downgrades.append(problem)
            bundles.append(
                {"name": name, "dir": str(bdir), "signature_sha256": sha256_file(bdir / SIGNATURE_FILE)}
            )
        log.info("models: set #%s staged (%d bundles)", set_id, len(bundles))
        return {"set_id": set_id, "name": cur.get("name"), "bundles": bundles, "downgrade": downgrades}

    # -- install --------------------------------------------------------------------------------

    def accept(self, client: HubClient | None = None, *, allow_downgrade: bool = False) -> dict[str, Any]:
        """An admin's accept of the staged set (manual policy, or a downgrade under any policy: only
        with `allow_downgrade`, the admin's explicit word that going back is meant)."""
        with self._lock:
            staged = self._state().get("staged")
            if not staged:
                raise SmearscopeError("no model update is staged")
            if staged.get("downgrade") and not allow_downgrade:
                raise SmearscopeError(
                    "the staged set is older than what runs ("
                    + "; ".join(staged["downgrade"])
                    + "); accept it as a downgrade to install it"
                )
            return self._apply(client, allow_downgrade=allow_downgrade)

    def _apply(self, client: HubClient | None, *, allow_downgrade: bool = False) -> dict[str, Any]:
        state = self._state()
        staged = state["staged"]
        set_id = staged["set_id"]
        policy = SignaturePolicy(load_trusted_keys(self.config.models.trusted_keys), allow_unsigned=False)
        default_path = self.root / DEFAULT_LIST
        old_default = default_path.read_bytes() if default_path.is_file() else None
        done: list[dict[str, Any]] = []
        try:
            for b in staged["bundles"]:
                r = install(
                    Path(b["dir"]),
                    self.root,
                    add_to_default=False,
                    policy=policy,
                    log=log.info,
                    allow_downgrade=allow_downgrade,
                )
                done.append(r)
            names = "\n".join(b["name"] for b in staged["bundles"]) + "\n"
            atomic_write_bytes(default_path, names.encode())
            if self.on_installed is not None:
                self.on_installed()
        except (BundleError, SmearscopeError) as exc:
            self._undo(done, old_default)
            reason = f"install failed, previous models restored: {exc}"
            state = self._state()
            state["staged"] = None
            self._save(state)
            out = self._refuse_nocache(set_id, reason)
            if client is not None:
                self._report(client, "failed", reason, set_id)
            return out
        state = self._state()
        state["staged"] = None
        state["last"] = {"state": "installed", "set_id": set_id, "at": time.time()}
        self._save(state)
        shutil.rmtree(self.dir / f"set-{set_id}", ignore_errors=True)
        shutil.rmtree(self.blobs, ignore_errors=True)
        self._event(
            "info", f"model update set #{set_id} installed: {', '.join(b['name'] for b in staged['bundles'])}"
        )
        if client is not None:
            self._report(client, "installed", "", set_id)
        return {"state": "installed", "set_id": set_id, "bundles": [d["name"] for d in done]}

    def _refuse_nocache(self, set_id: Any, reason: str) -> dict[str, Any]:
        state = self._state()
        state.setdefault("refused", {})[str(set_id)] = reason[:1000]
        state["last"] = {"state": "failed", "set_id": set_id, "detail": reason[:1000]}
        self._save(state)
        self._event("error", f"model update set #{set_id}: {reason}")
        return {"state": "failed", "set_id": set_id, "reason": reason}

    def _undo(self, done: list[dict[str, Any]], old_default: bytes | None) -> None:
        """Every bundle this set switched goes back to its previous version (or away, if new)."""
        policy = SignaturePolicy(load_trusted_keys(self.config.models.trusted_keys), allow_unsigned=True)
        for r in reversed(done):
            if not r.get("changed"):
                continue
            if r.get("previous"):
                try:
                    rollback_bundle(r["name"], self.root, policy=policy)
                except SmearscopeError as exc:
                    log.error("models: rollback of %s failed: %s", r["name"], exc)
            else:
                with contextlib.suppress(OSError):
                    (self.root / r["name"]).unlink()
        default_path = self.root / DEFAULT_LIST
        if old_default is not None:
            atomic_write_bytes(default_path, old_default)
        if self.on_installed is not None:
            try:
                self.on_installed()  # back to the restored bundles
            except Exception as exc:  # noqa: BLE001 - the old ensemble keeps serving in any case
                log.error("models: reload after the rollback failed: %s", exc)
