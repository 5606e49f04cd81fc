"""Dataset scan and the seeded, stratified train/val/test split (`<run>/split.json`).

The split file is the hand-over to conversion (calibration on val, verification on test) and to
evaluation, so it stores paths, labels and sha256 of every image. When `group_regex` extracts a group
id (e.g. C-NMC's subject id) every group stays on one side of each cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

from device.datasets.folders import Item
from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes
from training.sources import scan_sources

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


@dataclass
class Split:
    labels: list[str]
    seed: int
    fractions: dict[str, float]
    group_regex: str | None
    parts: dict[str, list[Item]] = field(default_factory=dict)
    scan_report: dict = field(default_factory=dict)
    grouping: str | None = None  # how group ids were made (None: per image)

    def paths(self, part: str) -> list[str]:
        return [str(it.path) for it in self.parts[part]]

    def label_ids(self, part: str) -> np.ndarray:
        index = {lb: i for i, lb in enumerate(self.labels)}
        return np.array([index[it.label] for it in self.parts[part]], dtype=np.int64)

    @property
    def note(self) -> str:
        if self.grouping and not self.grouping.startswith("per image"):
            return f"per-group split: {self.grouping}"
        if self.group_regex:
            return "per-group split"
        return "per-image split (file names carry no patient ids)"

    @property
    def grouped(self) -> bool:
        return self.note.startswith("per-group")

    def all_items(self) -> list[Item]:
        return [it for part in SPLITS for it in self.parts[part]]

    def to_json(self) -> dict:
        out: dict = {
            "labels": self.labels,
            "seed": self.seed,
            "fractions": self.fractions,
            "group_regex": self.group_regex,
            "grouping": self.grouping,
            "note": self.note,
        }
        if self.scan_report.get("sources"):
            out["sources"] = [
                {k: s[k] for k in ("name", "path", "kind")} for s in self.scan_report["sources"]
            ]
        for part in SPLITS:
            out[part] = [
                {
                    "path": str(it.path),
                    "label": it.label,
                    "sha256": it.sha256,
                    **({"group": it.group} if it.group else {}),
                    **({"source": it.source} if it.source else {}),
                }
                for it in self.parts[part]
            ]
        return out

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(path, (json.dumps(self.to_json(), indent=1) + "\n").encode())


def load_split(path: str | Path) -> Split:
    """Read a `split.json` written by `Split.save` (paths are used as stored)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SmearscopeError(f"{path}: cannot read split file ({exc})") from exc
    missing = [k for k in ("labels", *SPLITS) if k not in doc]
    if missing:
        raise SmearscopeError(f"{path}: split file lacks {', '.join(missing)}")
    split = Split(
        labels=list(doc["labels"]),
        seed=int(doc.get("seed", 0)),
        fractions=dict(doc.get("fractions", {})),
        group_regex=doc.get("group_regex"),
        grouping=doc.get("grouping"),
    )
    if doc.get("sources"):
        split.scan_report["sources"] = doc["sources"]
    for part in SPLITS:
        split.parts[part] = [
            Item(Path(e["path"]), e["label"], e["sha256"], e.get("group"), e.get("source")) for e in doc[part]
        ]
        unknown = {it.label for it in split.parts[part]} - set(split.labels)
        if unknown:
            raise SmearscopeError(f"{path}: {part} has labels not in 'labels': {sorted(unknown)}")
    return split


def _cut(
    idx: np.ndarray, y: np.ndarray, groups: np.ndarray | None, frac: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `idx` into (rest, held) with about `frac` of it held out, stratified, groups kept whole."""
    if frac <= 0:
        return idx, idx[:0]
    if groups is None:
        rest, held = train_test_split(idx, test_size=frac, stratify=y[idx], random_state=seed)
        return np.sort(rest), np.sort(held)
    n_groups = len(set(groups[idx].tolist()))
    n_splits = max(2, round(1 / frac))
    if n_groups >= n_splits:
        # StratifiedGroupKFold keeps groups whole and balances labels; one fold is the held-out part.
        skf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        rest, held = next(iter(skf.split(idx, y[idx], groups[idx])))
    else:
        gss = GroupShuffleSplit(n_splits=1, test_size=frac, random_state=seed)
        rest, held = next(iter(gss.split(idx, y[idx], groups[idx])))
    return np.sort(idx[rest]), np.sort(idx[held])


def read_test_list(path: str | Path) -> set[str]:
    """The `<label>/<file name>` entries of a test list: a bundle's `report/test_split.txt` (what
    `smearscope convert` writes), given as the file or as the bundle folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "report" / "test_split.txt"
    try:
        entries = set(path.read_text().split())
    except OSError as exc:
        raise SmearscopeError(f"{path}: cannot read the test list ({exc})") from exc
    if not entries:
        raise SmearscopeError(f"{path}: the test list is empty")
    return entries


def _fixed_test(items: list, entries: set[str]) -> np.ndarray:
    """Indices of the items a test list names, with every item of their groups (a group stays whole)."""
    named = [f"{Path(it.path).parent.name}/{Path(it.path).name}" in entries for it in items]
    if not any(named):
        raise SmearscopeError(
            "the test list names none of the images found (entries are <label>/<file name>)"
        )
    groups = {it.group for it, n in zip(items, named, strict=True) if n and it.group is not None}
    keep = [n or (it.group is not None and it.group in groups) for it, n in zip(items, named, strict=True)]
    return np.flatnonzero(keep)


def make_split(
    data: str | Path | list[str | Path],
    *,
    seed: int = 42,
    fractions: dict[str, float] | None = None,
    group_regex: str | None = None,
    label_map: dict[str, str] | None = None,
    drop_unknown_labels: bool = False,
    test_list: set[str] | None = None,
) -> Split:
    """Scan one or more dataset folders (duplicates dropped; see training/sources.py for how sources,
    labels and group ids combine) and split them into train/val/test, stratified by label, every group
    on one side of each cut. With `test_list` (`read_test_list`) the test part is the images it names and
    the rest of their groups (so a retrained model is measured on an earlier one's test split), and the
    rest is cut into train and val by their fractions."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    if set(fractions) != set(SPLITS) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise SmearscopeError(f"fractions must give train/val/test summing to 1, got {fractions}")
    dirs = list(data) if isinstance(data, list | tuple) else [data]
    items, labels, report = scan_sources(
        dirs, group_regex=group_regex, label_map=label_map, drop_unknown_labels=drop_unknown_labels
    )
    where = ", ".join(map(str, dirs))
    if not items:
        raise SmearscopeError(f"{where}: no images found")
    too_small = [lb for lb, n in report["per_label"].items() if n < 3]
    if too_small:
        raise SmearscopeError(f"{where}: labels with fewer than 3 images cannot be split: {too_small}")
    index = {lb: i for i, lb in enumerate(labels)}
    y = np.array([index[it.label] for it in items])
    groups = np.array([it.group for it in items]) if items[0].group is not None else None
    idx = np.arange(len(items))
    if test_list is None:
        rest, test = _cut(idx, y, groups, fractions["test"], seed)
    else:
        test = _fixed_test(items, test_list)
        rest = np.setdiff1d(idx, test)
    val_frac = fractions["val"] / max(1e-9, fractions["train"] + fractions["val"])
    train, val = _cut(rest, y, groups, val_frac, seed + 1)
    split = Split(labels=labels, seed=seed, fractions=fractions, group_regex=group_regex, scan_report=report)
    split.grouping = report["grouping"]
    split.parts = {
        "train": [items[i] for i in train],
        "val": [items[i] for i in val],
        "test": [items[i] for i in test],
    }
    return split


def source_counts(split: Split) -> dict[str, dict[str, dict[str, int]]]:
    """{source: {part: {label: n}}} — how each `--data` source landed in the split."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for part in SPLITS:
        for it in split.parts[part]:
            per = out.setdefault(it.source or "data", {p: {} for p in SPLITS})[part]
            per[it.label] = per.get(it.label, 0) + 1
    return out


def split_counts(split: Split) -> dict:
    return {
        part: {lb: sum(it.label == lb for it in split.parts[part]) for lb in split.labels} for part in SPLITS
    }


def class_weights(split: Split) -> dict[int, float]:
    """Balanced class weights on the training part: n / (K * n_k), as sklearn's 'balanced'."""
    y = split.label_ids("train")
    counts = np.bincount(y, minlength=len(split.labels))
    n, k = len(y), len(split.labels)
    return {i: float(n / (k * c)) if c else 0.0 for i, c in enumerate(counts)}
