"""scripts/cell_test_folder.py: the pictures a cell bundle's test crops came from, as label folders,
optionally only those a split file's part holds too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cell_test_folder.py"


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_tested_pictures_are_linked_in_their_folders_and_a_split_narrows_them(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "report").mkdir(parents=True)
    listed = [
        "blast_pre/ball.WBC-Malignant-Pre-001.0.png",
        "blast_pre/ball.WBC-Malignant-Pre-001.3.png",  # a second cell of one picture
        "hematogone/ball.WBC-Benign-007.1.png",
        "monocyte/pbc.MO_12.0.png",
    ]
    (bundle / "report" / "test_split.txt").write_text("\n".join(listed) + "\n")
    data = tmp_path / "data"
    for rel in (
        "Pre/WBC-Malignant-Pre-001.jpg",
        "Pre/WBC-Malignant-Pre-002.jpg",
        "Benign/WBC-Benign-007.jpg",
    ):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(rel.encode())

    out = tmp_path / "out"
    r = _run(bundle, data, out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "Benign/WBC-Benign-007.jpg",
        "Pre/WBC-Malignant-Pre-001.jpg",
    ]
    assert (out / "Pre" / "WBC-Malignant-Pre-001.jpg").read_bytes() == b"Pre/WBC-Malignant-Pre-001.jpg"
    assert (
        "2 pictures" in r.stdout and "1 tested pictures are not in" in r.stdout
    )  # the PBC picture is not in this dataset

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": [{"path": "/x/Pre/WBC-Malignant-Pre-001.jpg"}], "train": []}))
    narrow = tmp_path / "narrow"
    r = _run(bundle, data, narrow, "--split", split, "--part", "test")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in narrow.rglob("*.jpg")] == ["WBC-Malignant-Pre-001.jpg"]


def test_a_bundle_without_its_test_list_is_a_clear_error(tmp_path: Path) -> None:
    r = _run(tmp_path, tmp_path, tmp_path / "out")
    assert r.returncode == 2 and "report/test_split.txt" in r.stderr
