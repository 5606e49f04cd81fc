"""Training on a hub export and on several `--data` sources: group ids from the export manifest keep a
slide on one side of the split; labels must agree (or be mapped/dropped); duplicates across sources go."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fleetkit import make_export
from make_tiny_bundle import write_dataset

from device.errors import SmearscopeError
from training.data import load_split, make_split, source_counts
from training.sources import parse_label_map


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("fleet"), slides=20, fields=4, size=48)


@pytest.fixture
def hub_with_reviews(export: Path, tmp_path: Path) -> Path:
    """The fixture hub's database, copied under tmp_path/hub."""
    (tmp_path / "hub").mkdir()
    shutil.copy(export.parent / "hub.db", tmp_path / "hub" / "hub.db")
    return tmp_path / "hub" / "hub.db"


def _sides(split) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = {}
    for part in ("train", "val", "test"):
        for it in split.parts[part]:
            sides.setdefault(it.group, set()).add(part)
    return sides


def test_an_export_splits_by_sample(export: Path) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    split = make_split(export, seed=1)
    sample_of = {e["path"]: e["sample_id"] for e in manifest["images"]}
    sides = _sides(split)
    assert len(sides) == manifest["counts"]["groups"] and all(len(s) == 1 for s in sides.values())
    assert all(split.parts[p] for p in ("train", "val", "test"))
    for it in split.all_items():  # the group is the export's sample id, prefixed by the source
        assert it.group == f"export:{sample_of[it.path.relative_to(export).as_posix()]}"
    assert split.note.startswith("per-group split") and "export manifest" in split.note


def test_two_sources_combine_with_groups_sources_and_a_round_trip(export: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path / "original", 10, seed=3, size=48)
    split = make_split([tmp_path / "original", export], seed=2)
    assert split.labels == ["Benign", "Early", "Pre", "Pro"]
    counts = source_counts(split)
    assert set(counts) == {"original", "export"}
    n_export = json.loads((export / "manifest.json").read_text())["counts"]["images"]
    assert sum(sum(v.values()) for v in counts["export"].values()) == n_export
    assert sum(sum(v.values()) for v in counts["original"].values()) == 40
    assert all(len(s) == 1 for s in _sides(split).values())
    originals = [it for it in split.all_items() if it.source == "original"]
    assert all(it.group == f"original:image:{it.sha256}" for it in originals)  # per image
    split.save(tmp_path / "split.json")
    again = load_split(tmp_path / "split.json")
    assert again.to_json() == split.to_json() and again.grouped
    assert [s["name"] for s in json.loads((tmp_path / "split.json").read_text())["sources"]] == [
        "original",
        "export",
    ]
    assert make_split([tmp_path / "original", export], seed=2).to_json() == split.to_json()


def test_labels_must_agree_or_be_mapped_or_dropped(export: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 6, seed=1, size=32, labels=("Benign", "Early", "Pre", "Pro"))
    write_dataset(tmp_path / "b", 6, seed=2, size=32, labels=("Benign", "Pre"))
    (tmp_path / "b" / "Benign").rename(tmp_path / "b" / "hem")
    with pytest.raises(SmearscopeError, match=r"\['hem'\] are not among the first source's labels"):
        make_split([tmp_path / "a", tmp_path / "b"])
    mapped = make_split([tmp_path / "a", tmp_path / "b"], label_map=parse_label_map(["hem=Benign"]))
    assert sum(it.label == "Benign" and it.source == "b" for it in mapped.all_items()) == 6
    dropped = make_split([tmp_path / "a", tmp_path / "b"], drop_unknown_labels=True)
    info = {s["name"]: s for s in dropped.scan_report["sources"]}
    assert info["b"]["unknown_labels_dropped"] == {"hem": 6} and info["b"]["images"] == 6
    assert {it.label for it in dropped.all_items() if it.source == "b"} == {"Pre"}
    # A later source may lack labels: the first one's labels stay the model's labels.
    lacking = make_split([tmp_path / "a", export])
    assert lacking.labels == ["Benign", "Early", "Pre", "Pro"]
    with pytest.raises(SmearscopeError, match="FROM=TO"):
        parse_label_map(["hem"])


def test_an_image_in_two_sources_is_kept_once(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 10, seed=1, size=32)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    split = make_split([tmp_path / "a", tmp_path / "b"])
    assert len(split.all_items()) == 40 and {it.source for it in split.all_items()} == {"a"}
    assert split.scan_report["sources"][1]["duplicates_of_earlier_sources"] == 40


def test_unreviewed_images_of_an_export_are_counted(hub_with_reviews: Path, tmp_path: Path) -> None:
    from hub.cli import main as hub_main

    url = f"sqlite:///{tmp_path / 'hub' / 'hub.db'}"
    assert (
        hub_main(["--db", url, "export-dataset", "--out", str(tmp_path / "all"), "--include-unreviewed"]) == 0
    )
    manifest = json.loads((tmp_path / "all" / "manifest.json").read_text())
    split = make_split(tmp_path / "all", seed=0)
    assert split.scan_report["sources"][0]["unreviewed_model_calls"] == manifest["counts"]["unreviewed"] > 0


def test_a_changed_export_is_refused(export: Path, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    first = sorted(copy.rglob("*.jpg"))[0]
    (first.parent / "extra.jpg").write_bytes(sorted(copy.rglob("*.jpg"))[1].read_bytes()[:-3] + b"xyz")
    with pytest.raises(SmearscopeError, match="does not list"):
        make_split(copy)
    (first.parent / "extra.jpg").unlink()
    first.write_bytes(first.read_bytes() + b"\0")
    with pytest.raises(SmearscopeError, match="bytes changed since the export"):
        make_split(copy)


def test_convert_reads_a_run_trained_on_several_sources(export: Path, tmp_path: Path) -> None:
    """`smearscope convert` finds each test image under its own source and keeps the per-group caveat."""
    from convert.pipeline import SPLIT_NOTE, RunDir, split_note

    write_dataset(tmp_path / "original", 10, seed=3, size=32)
    split = make_split([tmp_path / "original", export], seed=2)
    doc = split.to_json()
    for part in ("train", "val", "test"):  # paths relative to their source, as on another machine
        for r in doc[part]:
            root = tmp_path / "original" if r["source"] == "original" else export
            r["path"] = str(Path(r["path"]).relative_to(root))
    run = RunDir(tmp_path, {"data": [str(tmp_path / "original"), str(export)], "size": 32}, doc)
    paths, y = run.part("test")
    assert len(paths) == len(doc["test"]) and all(p.is_file() for p in paths)
    assert {p.parent.parent for p in paths} == {tmp_path / "original", export}
    assert split_note(doc).startswith("Held-out test split drawn per group (sample ids from the hub export")
    assert split_note({"note": "per-image split"}) == SPLIT_NOTE
