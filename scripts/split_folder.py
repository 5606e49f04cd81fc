"""One part of a split file as a folder of label folders (symlinks), for `smearscope evaluate --data`.

    python scripts/split_folder.py runs/split-all4-seed42.json test /tmp/ball-test \\
        [--data ../shared/datasets/all-4class]

A split file lists each image's path, label and SHA-256 as it was when the split was made; `--data` finds
the same file under `<data>/<label>/<name>` on this machine, and its hash is checked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("split", type=Path)
    p.add_argument("part", choices=("train", "val", "test"))
    p.add_argument("out", type=Path)
    p.add_argument("--data", type=Path, help="the dataset's folder here (default: the paths in the split)")
    args = p.parse_args(argv)
    entries = json.loads(args.split.read_text())[args.part]
    bad = 0
    for e in entries:
        src = Path(e["path"])
        if args.data is not None:
            src = args.data / e["label"] / src.name
        if not src.is_file() or hashlib.sha256(src.read_bytes()).hexdigest() != e["sha256"]:
            print(f"missing or changed: {src}", file=sys.stderr)
            bad += 1
            continue
        dst = args.out / e["label"] / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src.resolve())
    print(f"{len(entries) - bad} images in {args.out}" + (f"; {bad} missing or changed" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
