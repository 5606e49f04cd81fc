"""One or more `--data` folders as one labelled dataset, with group ids for the split.

Each source is a folder of class folders. A hub export (`smearscope-hub export-dataset`) also carries
`manifest.json`: its `group` per image (the sample id) keeps one slide's fields on one side of every
cut. For plain folders `--group-regex` takes a group id from file names; otherwise each image is its
own group. Group ids are prefixed with the source's name, so two sources never share a group.

Labels: the FIRST source (after `--label-map FROM=TO`) defines the model's labels. A later source may
lack some of them (it then adds nothing to those labels; its per-source figures show it). A later
source's label that the first lacks is an error naming it, unless it is mapped (`--label-map`) or its
images are dropped (`--drop-unknown-labels`, counted in the dataset report). An image whose bytes
already came from an earlier source is dropped (the same image on both sides of a split would leak).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from device.datasets.folders import Item, scan
from device.errors import SmearscopeError

EXPORT_FORMAT = "smearscope-dataset"
log = logging.getLogger("smearscope.train")


def parse_label_map(pairs: list[str] | None) -> dict[str, str]:
    """`["Benign=hem", ...]` → {"Benign": "hem"}; the same FROM twice is an error."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        src, sep, dst = pair.partition("=")
        src, dst = src.strip(), dst.strip()
        if not sep or not src or not dst:
            raise SmearscopeError(f"--label-map {pair!r}: expected FROM=TO")
        if src in out and out[src] != dst:
            raise SmearscopeError(f"--label-map: {src!r} mapped twice ({out[src]!r}, {dst!r})")
        out[src] = dst
    return out


def read_export_manifest(root: Path) -> dict[str, dict[str, Any]] | None:
    """Entries of a hub export's manifest.json by relative path, or None for a plain folder."""
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SmearscopeError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        return None
    return {e["path"]: e for e in doc.get("images", [])}


def source_names(dirs: list[str | Path]) -> list[str]:
    """A short, unique name per source: the folder's name (`-2`, `-3` for repeats)."""
    names: list[str] = []
    for d in dirs:
        base = Path(d).resolve().name or "data"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


@dataclass
class _Merged:
    """The sources scanned so far: their labels (the first source's), items, duplicates and reports."""

    label_map: dict[str, str]
    group_regex: str | None
    drop_unknown_labels: bool
    labels: list[str] | None = None
    seen: dict[str, Item] = field(default_factory=dict)  # sha256 -> the first item with those bytes
    items: list[Item] = field(default_factory=list)
    report: dict[str, Any] = field(
        default_factory=lambda: {"per_label": {}, "duplicates_dropped": 0, "conflicting_duplicates": []}
    )
    sources: list[dict[str, Any]] = field(default_factory=list)
    grouped: bool = False


def _unknown_labels(d: str | Path, found: list[Item], m: _Merged) -> dict[str, int]:
    """A later source's labels the first lacks: an error unless they are dropped."""
    assert m.labels is not None
    unknown = Counter(it.label for it in found if it.label not in m.labels)
    if unknown and not m.drop_unknown_labels:
        raise SmearscopeError(
            f"--data {d}: label(s) {sorted(unknown)} are not among the first source's labels "
            f"{m.labels}: map them (--label-map FROM=TO) or drop their images (--drop-unknown-labels)"
        )
    return dict(sorted(unknown.items()))


def _check_groups(root: Path, found: list[Item], manifest: dict | None, m: _Merged) -> None:
    """An export's files match its manifest; with --group-regex every file name has a group."""
    if manifest is not None:
        m.grouped = True
        _check_manifest(root, found, manifest, m.label_map)
    elif m.group_regex:
        m.grouped = True
        missing = [str(it.path) for it in found if it.group is None]
        if missing:
            raise SmearscopeError(
                f"--group-regex {m.group_regex!r} does not match {len(missing)} file(s), e.g. {missing[0]}"
            )


def _keep_new(
    name: str, root: Path, found: list[Item], manifest: dict | None, info: dict, m: _Merged
) -> None:
    """Add the source's items of known labels whose bytes no earlier image had, with their group."""
    assert m.labels is not None
    kept = 0
    for it in found:
        if it.label not in m.labels:
            continue
        if it.sha256 in m.seen:
            info["duplicates_of_earlier_sources"] += 1
            m.report["duplicates_dropped"] += 1
            if m.seen[it.sha256].label != it.label:
                m.report["conflicting_duplicates"].append([str(m.seen[it.sha256].path), str(it.path)])
            continue
        group = it.group
        if manifest is not None:
            entry = manifest[it.path.relative_to(root).as_posix()]
            group = entry.get("group")
            if entry.get("reviewed") is False:
                info["unreviewed_model_calls"] = info.get("unreviewed_model_calls", 0) + 1
        it = replace(it, group=f"{name}:{group}" if group else None)
        m.seen[it.sha256] = it
        m.items.append(it)
        kept += 1
        info["per_label"][it.label] = info["per_label"].get(it.label, 0) + 1
    info["images"] = kept


def _scan_source(name: str, d: str | Path, m: _Merged) -> None:
    root = Path(d)
    found, rep = scan(root, group_regex=None if (root / "manifest.json").is_file() else m.group_regex)
    manifest = read_export_manifest(root)
    m.report["duplicates_dropped"] += rep["duplicates_dropped"]
    m.report["conflicting_duplicates"] += rep["conflicting_duplicates"]
    found = [replace(it, label=m.label_map.get(it.label, it.label), source=name) for it in found]
    if m.labels is None:
        m.labels = sorted({it.label for it in found} | {m.label_map.get(lb, lb) for lb in rep["per_label"]})
    info: dict[str, Any] = {
        "name": name,
        "path": str(d),
        "kind": "hub export (manifest.json)" if manifest is not None else "folder of class folders",
        "per_label": {},
        "unknown_labels_dropped": _unknown_labels(d, found, m),
        "duplicates_of_earlier_sources": 0,
    }
    _check_groups(root, found, manifest, m)
    _keep_new(name, root, found, manifest, info, m)
    if info.get("unreviewed_model_calls"):
        log.warning(
            "%s: %d image(s) carry the model's own call, not a review (--include-unreviewed export)",
            d,
            info["unreviewed_model_calls"],
        )
    m.sources.append(info)


def scan_sources(
    dirs: list[str | Path],
    *,
    group_regex: str | None = None,
    label_map: dict[str, str] | None = None,
    drop_unknown_labels: bool = False,
) -> tuple[list[Item], list[str], dict[str, Any]]:
    """(items, labels, report). Items carry `source` and, when known, a `group` (see module doc)."""
    if not dirs:
        raise SmearscopeError("give --data DIR (or --split FILE)")
    m = _Merged(label_map or {}, group_regex, drop_unknown_labels)
    for name, d in zip(source_names(dirs), dirs, strict=True):
        _scan_source(name, d, m)
    assert m.labels is not None
    items = m.items
    if m.grouped:
        # Images without a group id (a plain source beside an export) are each their own group.
        items = [it if it.group else replace(it, group=f"{it.source}:image:{it.sha256}") for it in items]
    report = m.report
    report["per_label"] = {lb: sum(it.label == lb for it in items) for lb in m.labels}
    report["total"] = len(items)
    report["sources"] = m.sources
    report["grouping"] = _grouping(m.sources, group_regex, m.grouped)
    return items, m.labels, report


def _check_manifest(
    root: Path, found: list[Item], manifest: dict[str, dict[str, Any]], label_map: dict[str, str]
) -> None:
    """The export as written: every image listed, with the bytes the hub exported."""
    for it in found:
        rel = it.path.relative_to(root).as_posix()
        entry = manifest.get(rel)
        if entry is None:
            raise SmearscopeError(
                f"{root}/manifest.json does not list {rel}: add images to a hub export only through the "
                "hub (or remove manifest.json to train on the folder as a plain one, split per image)"
            )
        if entry.get("image_sha256") != it.sha256:
            raise SmearscopeError(f"{root}/{rel}: its bytes changed since the export (sha256 differs)")


def _grouping(sources: list[dict[str, Any]], group_regex: str | None, grouped: bool) -> str:
    if not grouped:
        return "per image (no group ids: the same slide or patient can sit on both sides of the split)"
    how = []
    if any(s["kind"].startswith("hub export") for s in sources):
        how.append("sample ids from the hub export manifest")
    if group_regex:
        how.append(f"--group-regex {group_regex!r} on file names")
    return "per group (" + "; ".join(how) + "; any other image is its own group)"
