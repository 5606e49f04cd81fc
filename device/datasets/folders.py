"""A dataset is any folder of class folders: `root/<label>/*.jpg`. Labels are the folder names.

Shared by training (splits) and `smearscope evaluate` (which must run without TensorFlow).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from device.errors import SmearscopeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    sha256: str
    group: str | None = None
    source: str | None = None  # which `--data` folder it came from (training with several sources)


def list_class_folders(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise SmearscopeError(f"{root}: dataset folder does not exist")
    labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not labels:
        raise SmearscopeError(f"{root}: no class folders (expected {root}/<label>/<image files>)")
    return labels


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scan(
    root: str | Path,
    *,
    labels: list[str] | None = None,
    group_regex: str | None = None,
    dedupe: bool = True,
) -> tuple[list[Item], dict]:
    """List the images under `root`, dropping exact duplicates (same bytes).

    `group_regex` extracts a group id (e.g. a patient/subject id) from the file name: its first
    capture group, or the whole match. Returns (items, report) where the report counts what was
    kept and dropped per label.
    """
    root = Path(root)
    labels = labels or list_class_folders(root)
    pattern = re.compile(group_regex) if group_regex else None
    seen: dict[str, Item] = {}
    items: list[Item] = []
    report: dict = {"per_label": {}, "duplicates_dropped": 0, "conflicting_duplicates": []}
    for label in labels:
        folder = root / label
        if not folder.is_dir():
            raise SmearscopeError(f"{root}: no folder for label {label!r}")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        kept = 0
        for path in files:
            digest = _sha256(path)
            if dedupe and digest in seen:
                report["duplicates_dropped"] += 1
                if seen[digest].label != label:
                    report["conflicting_duplicates"].append([str(seen[digest].path), str(path)])
                continue
            group = None
            if pattern:
                m = pattern.search(path.name)
                if m:
                    group = m.group(1) if m.groups() else m.group(0)
            item = Item(path, label, digest, group)
            seen[digest] = item
            items.append(item)
            kept += 1
        report["per_label"][label] = kept
    report["total"] = len(items)
    return items, report


def fingerprint(items: list[Item]) -> str:
    """A stable hash of the dataset's content and labels (order-independent)."""
    h = hashlib.sha256()
    for line in sorted(f"{it.label}\t{it.sha256}" for it in items):
        h.update(line.encode() + b"\n")
    return h.hexdigest()
