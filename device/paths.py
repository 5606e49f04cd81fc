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


def default_bundle_dirs() -> list[Path]:
    """The default ensemble: bundles named in models/DEFAULT (one per line), else every bundle."""
    from device.models.bundle import find_bundles

    root = models_dir()
    listing = root / "DEFAULT"
    if listing.is_file():
        lines = (ln.strip() for ln in listing.read_text().splitlines())
        names = [ln for ln in lines if ln and not ln.startswith("#")]
        return [root / n for n in names]
    return find_bundles(root)
