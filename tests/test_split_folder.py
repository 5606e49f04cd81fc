"""scripts/split_folder.py: a split part as label folders, each file found and its hash checked."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "split_folder.py"


def test_a_split_part_becomes_label_folders_and_a_changed_file_is_refused(tmp_path):
    data = tmp_path / "data"
    entries = []
    for label, name, body in (("Benign", "a.jpg", b"a"), ("Pre", "b.jpg", b"b")):
        (data / label).mkdir(parents=True)
        (data / label / name).write_bytes(body)
        entries.append(
            {"path": f"/elsewhere/{label}/{name}", "label": label, "sha256": hashlib.sha256(body).hexdigest()}
        )
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": [], "test": entries}))
    out = tmp_path / "out"
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, str(SCRIPT), str(split), "test", str(out), "--data", str(data)],
        capture_output=True,
        text=True,
    )
    r = run()
    assert r.returncode == 0 and "2 images" in r.stdout
    assert (out / "Pre" / "b.jpg").read_bytes() == b"b"
    (data / "Pre" / "b.jpg").write_bytes(b"changed")
    r = run()
    assert r.returncode == 1 and "missing or changed" in r.stderr
