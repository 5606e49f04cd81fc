"""The pictures a cell bundle was tested on, as a folder of label folders (symlinks) for `smearscope
evaluate --data`.

    python scripts/cell_test_folder.py models/cells-mobilenetv2-96-int8 ../shared/datasets/pbc-normal /tmp/pbc
    python scripts/cell_test_folder.py models/cells-mobilenetv2-96-int8 ../shared/datasets/all-4class \\
        /tmp/ball-both --split runs/split-all4-seed42.json --part test

A cell bundle lists its test crops in `report/test_split.txt` (`<label>/<lab>.<picture>.<n>.png`, as
`training.cells.build_crops` names them): every picture of `data` (`<folder>/<picture>.<ext>`) with a
crop there is linked, in its own folder. With `--split` only the pictures that part of a split file also
holds are kept (e.g. the field classifiers' test split: pictures that neither reader saw in training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from device.errors import SmearscopeError
from training.data import read_test_list


def tested_pictures(bundle: Path) -> set[str]:
    """The picture names (file stems) the bundle's test crops were cut from."""
    stems = set()
    for rel in read_test_list(bundle):
        parts = Path(rel).name.split(".")
        if len(parts) < 4:  # <lab>.<picture>.<n>.png
            raise SmearscopeError(f"{bundle}: test crop {rel} is not named <label>/<lab>.<picture>.<n>.png")
        stems.add(".".join(parts[1:-2]))
    return stems


def split_pictures(split: Path, part: str) -> set[str]:
    return {Path(e["path"]).stem for e in json.loads(split.read_text())[part]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="a cell bundle with report/test_split.txt")
    p.add_argument("data", type=Path, help="the pictures' dataset: one folder per label")
    p.add_argument("out", type=Path)
    p.add_argument("--split", type=Path, help="keep only the pictures this split file's --part holds too")
    p.add_argument("--part", choices=("train", "val", "test"), default="test")
    args = p.parse_args(argv)
    try:
        wanted = tested_pictures(args.bundle)
    except SmearscopeError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.split is not None:
        wanted &= split_pictures(args.split, args.part)
    found: dict[str, int] = {}
    for src in sorted(args.data.glob("*/*")):
        if src.is_file() and src.stem in wanted:
            dst = args.out / src.parent.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src.resolve())
            found[src.parent.name] = found.get(src.parent.name, 0) + 1
    missing = len(wanted) - sum(found.values())
    per = ", ".join(f"{k} {v}" for k, v in sorted(found.items()))
    print(
        f"{sum(found.values())} pictures in {args.out} ({per})"
        + (f"; {missing} tested pictures are not in {args.data} (another dataset's)" if missing else "")
    )
    return 0 if found else 1


if __name__ == "__main__":
    raise SystemExit(main())
