"""What the models page shows: installed bundles, their model cards, hash check state, and which
ones form the ensemble in service."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from device.errors import BundleError
from device.models.bundle import read_manifest, sha256_file
from device.paths import default_bundle_dirs, models_dir
from device.web.markdown import render

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")


def _cached_sha(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = sha256_file(path)
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def in_service_dirs(config, services) -> list[Path]:
    """Bundle directories the daemon serves: from services.ensemble_info() when it names them,
    else [classifier] models, else the defaults."""
    try:
        info = services.ensemble_info() or []
    except Exception:  # noqa: BLE001
        info = []
    dirs = [Path(b["path"]).resolve() for b in info if b.get("path")]
    if dirs:
        return dirs
    return [Path(d).resolve() for d in (config.classifier.models or default_bundle_dirs())]


def report_images(bundle_dir: Path) -> list[str]:
    """Relative paths of plots under report/ (confusion matrix first)."""
    report = bundle_dir / "report"
    if not report.is_dir():
        return []
    files = [p for p in report.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    files.sort(key=lambda p: (0 if "confusion" in p.name.lower() else 1, p.name))
    return [str(p.relative_to(bundle_dir)) for p in files]


def bundle_info(bundle_dir: Path, serving: set[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dir": bundle_dir.name,
        "path": str(bundle_dir),
        "in_ensemble": bundle_dir.resolve() in serving,
        "error": None,
    }
    try:
        manifest = read_manifest(bundle_dir)
    except BundleError as exc:
        out.update(name=bundle_dir.name, hash_state="unreadable", error=str(exc))
        return out
    model = bundle_dir / manifest.model_file
    if not model.is_file():
        state = "missing"
    else:
        state = "ok" if _cached_sha(model) == manifest.sha256 else "mismatch"
    card = bundle_dir / "MODEL.md"
    out.update(
        name=manifest.name,
        manifest=manifest.to_dict(),
        hash_state=state,
        card_html=render(card.read_text(encoding="utf-8", errors="replace")) if card.is_file() else None,
        images=report_images(bundle_dir),
        size_bytes=model.stat().st_size if model.is_file() else None,
    )
    return out


def installed_bundles(config, services) -> list[dict[str, Any]]:
    serving = set(in_service_dirs(config, services))
    dirs = {p.resolve() for p in serving}
    root = models_dir()
    if root.is_dir():
        dirs |= {p.resolve() for p in root.iterdir() if (p / "manifest.json").is_file()}
    return [bundle_info(d, serving) for d in sorted(dirs, key=lambda p: (p not in serving, p.name))]


def find_bundle_dir(config, services, name: str) -> Path | None:
    for b in installed_bundles(config, services):
        if b["dir"] == name:
            return Path(b["path"])
    return None
