"""Where things are: the shipped models and sample slides, relative to the source tree."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SAMPLES_DIR = PACKAGE_DIR / "samples"  # <= 16 dataset images for the replay camera, with CITATION.md


def models_dir() -> Path:
    """SMEARSCOPE_MODELS_DIR, else the repository's models/ folder."""
    env = os.environ.get("SMEARSCOPE_MODELS_DIR")
    return Path(env) if env else REPO_ROOT / "models"


def _listing(name: str) -> list[Path] | None:
    """The bundle dirs named in models/<name> (one per line, # comments), None without the file."""
    root = models_dir()
    listing = root / name
    if not listing.is_file():
        return None
    lines = (ln.strip() for ln in listing.read_text().splitlines())
    return [root / n for n in lines if n and not n.startswith("#")]


def second_reading_dirs() -> list[Path]:
    """The field bundles that read again a field the cells leave uncertain: models/SECOND_READING."""
    return _listing("SECOND_READING") or []


def default_bundle_dirs() -> list[Path]:
    """The default ensemble: bundles named in models/DEFAULT (one per line), else every bundle."""
    from device.models.bundle import find_bundles

    named = _listing("DEFAULT")
    return named if named is not None else find_bundles(models_dir())
