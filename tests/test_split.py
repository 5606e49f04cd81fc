"""The dataset split: stable for a seed, stratified, duplicates dropped, groups kept on one side."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.errors import SmearscopeError
from training.data import class_weights, load_split, make_split, split_counts


def _write_images(root: Path, per_label: dict[str, int], *, groups: int = 0) -> None:
    rng = np.random.default_rng(0)
    for li, (label, n) in enumerate(per_label.items()):
        (root / label).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            name = f"UID_{li * 100 + i % groups}_{i}.png" if groups else f"img_{i}.png"
            cv2.imwrite(str(root / label / name), img)


def test_split_is_stable_for_a_seed_and_stratified(tmp_path: Path) -> None:
    _write_images(tmp_path / "d", {"A": 40, "B": 20, "C": 30})
    a = make_split(tmp_path / "d", seed=7)
    b = make_split(tmp_path / "d", seed=7)
    c = make_split(tmp_path / "d", seed=8)
    assert a.to_json() == b.to_json()
    assert a.to_json()["test"] != c.to_json()["test"]
    counts = split_counts(a)
    assert counts["test"] == {"A": 8, "B": 4, "C": 6}  # 20 % of each class
    assert sum(sum(v.values()) for v in counts.values()) == 90
    paths = [p for part in ("train", "val", "test") for p in a.paths(part)]
    assert len(paths) == len(set(paths))


def test_exact_duplicates_are_dropped(tmp_path: Path) -> None:
    _write_images(tmp_path / "d", {"A": 10, "B": 10})
    first = tmp_path / "d" / "A" / "img_0.png"
    (tmp_path / "d" / "A" / "copy.png").write_bytes(first.read_bytes())
    (tmp_path / "d" / "B" / "copy_in_b.png").write_bytes(first.read_bytes())
    split = make_split(tmp_path / "d", seed=1)
    assert split.scan_report["duplicates_dropped"] == 2
    assert len(split.scan_report["conflicting_duplicates"]) == 1
    assert len(split.all_items()) == 20


def test_groups_stay_on_one_side(tmp_path: Path) -> None:
    _write_images(tmp_path / "d", {"A": 60, "B": 60}, groups=10)
    split = make_split(tmp_path / "d", seed=3, group_regex=r"UID_(\d+)_")
    sides: dict[str, set[str]] = {}
    for part in ("train", "val", "test"):
        for it in split.parts[part]:
            sides.setdefault(it.group, set()).add(part)
    assert len(sides) == 20
    assert all(len(s) == 1 for s in sides.values())
    assert all(split.parts[p] for p in ("train", "val", "test"))
    assert make_split(tmp_path / "d", seed=3, group_regex=r"UID_(\d+)_").to_json() == split.to_json()


def test_group_regex_that_does_not_match_is_an_error(tmp_path: Path) -> None:
    _write_images(tmp_path / "d", {"A": 6, "B": 6})
    with pytest.raises(SmearscopeError, match="does not match"):
        make_split(tmp_path / "d", group_regex=r"UID_(\d+)_")


def test_split_file_round_trip_and_class_weights(tmp_path: Path) -> None:
    _write_images(tmp_path / "d", {"A": 30, "B": 10})
    split = make_split(tmp_path / "d", seed=42)
    split.save(tmp_path / "split.json")
    doc = json.loads((tmp_path / "split.json").read_text())
    assert doc["labels"] == ["A", "B"] and doc["seed"] == 42 and doc["group_regex"] is None
    assert set(doc["train"][0]) >= {"path", "label", "sha256"}
    again = load_split(tmp_path / "split.json")
    assert again.to_json() == split.to_json()
    w = class_weights(again)
    assert w[1] > w[0]  # the rarer class weighs more
    n = np.bincount(again.label_ids("train"))
    assert abs(sum(w[i] * n[i] for i in range(2)) - n.sum()) < 1e-6  # balanced: weighted total = n


def test_bad_split_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "split.json").write_text('{"labels": ["A"], "train": []}')
    with pytest.raises(SmearscopeError, match="lacks"):
        load_split(tmp_path / "split.json")


def test_an_earlier_bundles_test_list_is_kept_whole_with_its_groups(tmp_path: Path) -> None:
    """`--keep-test`: the test part is the listed images and every image of their groups; the rest is cut
    into train and val, groups whole."""
    from training.data import read_test_list

    _write_images(tmp_path / "d", {"A": 60, "B": 60}, groups=10)
    first = make_split(tmp_path / "d", seed=3, group_regex=r"UID_(\d+)_")
    # a bundle lists one image of each of three groups (e.g. the original crop, not its stain copies)
    picked = {}
    for it in first.parts["test"]:
        picked.setdefault(it.group, it)
    listed = [f"{it.label}/{Path(it.path).name}" for it in list(picked.values())[:3]]
    bundle = tmp_path / "bundle"
    (bundle / "report").mkdir(parents=True)
    (bundle / "report" / "test_split.txt").write_text("\n".join(listed) + "\n")

    entries = read_test_list(bundle)
    assert entries == set(listed) == read_test_list(bundle / "report" / "test_split.txt")
    again = make_split(tmp_path / "d", seed=9, group_regex=r"UID_(\d+)_", test_list=entries)
    groups = {it.group for it in list(picked.values())[:3]}
    assert {it.group for it in again.parts["test"]} == groups
    assert len(again.parts["test"]) == sum(it.group in groups for it in first.all_items())  # whole groups
    sides: dict[str, set[str]] = {}
    for part in ("train", "val", "test"):
        for it in again.parts[part]:
            sides.setdefault(it.group, set()).add(part)
    assert all(len(s) == 1 for s in sides.values()) and again.parts["val"] and again.parts["train"]
    assert len(again.all_items()) == len(first.all_items())

    (bundle / "report" / "test_split.txt").write_text("A/not_here.png\n")
    with pytest.raises(SmearscopeError, match="names none of the images"):
        make_split(tmp_path / "d", test_list=read_test_list(bundle))
    with pytest.raises(SmearscopeError, match="cannot read the test list"):
        read_test_list(tmp_path / "nothing")
