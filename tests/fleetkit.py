"""The fleet loop's test data: a hub filled with generated, reviewed slides (scripts/demo_reviewed_hub.py)
and its `smearscope-hub export-dataset` folder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "demo_reviewed_hub.py"


def demo_module() -> Any:
    if "demo_reviewed_hub" not in sys.modules:
        spec = importlib.util.spec_from_file_location("demo_reviewed_hub", SCRIPT)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["demo_reviewed_hub"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["demo_reviewed_hub"]


def make_export(root: Path, *, slides: int = 12, fields: int = 4, seed: int = 0, size: int = 64) -> Path:
    """A hub at root/hub.db with reviewed slides, exported to root/export; returns the export folder."""
    from hub.cli import main as hub_main

    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'hub.db'}"
    demo_module().populate(url, slides=slides, fields=fields, seed=seed, size=size)
    assert hub_main(["--db", url, "export-dataset", "--out", str(root / "export")]) == 0
    return root / "export"
