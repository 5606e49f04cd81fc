"""Which code is running: the git commit a build or checkout carries (station and hub report it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def build_commit() -> str:
    """`$SMEARSCOPE_GIT_COMMIT` (set by whoever builds an image), else the checkout's HEAD when running
    from one, else "unknown" (an installed copy has no .git)."""
    commit = os.environ.get("SMEARSCOPE_GIT_COMMIT", "").strip()
    if commit:
        return commit[:40]
    if not (_ROOT / ".git").exists():
        return "unknown"
    try:
        out = subprocess.run(
            ["git", "-C", str(_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
