"""What a forged bundle archive costs a station before it is refused: time and bytes written.

    PYTHONPATH=. .venv/bin/python benchmarks/archive_refusal.py [--payload-mb 200] \\
        [--old-ref 9c40873] [--out benchmarks/results/archive_refusal.json]

The archive is a shipped, signed bundle (models/mobilenetv2-all4-int8) plus one unsigned `payload.bin`
of `--payload-mb` MB (zeros, so the .tar.gz is small and the unpacked size is what a bomb would be).
`device.models.bundle_archive.extract_archive` with the station's trusted keys refuses it after reading the
member headers, before writing anything. With `--old-ref`, the archive reader of that commit
(`device/commands/models.py` `_extract_tar`, which unpacked everything before the signature was checked)
is timed on the same archive for comparison. A second archive larger than `MAX_ARCHIVE_MB` on disk shows
the refusal by size alone. Timings are wall-clock on whatever machine runs it (shared CPUs vary).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from device.errors import BundleError
from device.models.bundle_archive import MAX_ARCHIVE_BYTES, extract_archive
from device.models.signing import load_trusted_keys

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "models" / "mobilenetv2-all4-int8"


class Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def forged_archive(path: Path, payload_bytes: int, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for p in sorted(BUNDLE.rglob("*")):
            if p.is_file():
                tf.add(p, arcname=f"bundle/{p.relative_to(BUNDLE).as_posix()}")
        info = tarfile.TarInfo("bundle/payload.bin")
        info.size = payload_bytes
        tf.addfile(info, io.BufferedReader(Zeros(payload_bytes), 1 << 20))
    return path


def written(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def timed(fn) -> tuple[float, str]:  # noqa: ANN001
    t0 = time.perf_counter()
    try:
        fn()
        outcome = "unpacked"
    except BundleError as exc:
        outcome = f"refused: {str(exc)[:160]}"
    return time.perf_counter() - t0, outcome


def old_reader(ref: str, tmp: Path):  # noqa: ANN201
    src = subprocess.run(
        ["git", "show", f"{ref}:device/commands/models.py"], cwd=REPO, check=True, capture_output=True
    ).stdout
    path = tmp / "old_models.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("old_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._extract_tar


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--payload-mb", type=int, default=200)
    ap.add_argument("--old-ref", help="git commit whose archive reader to time for comparison")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    trusted = load_trusted_keys(["project"])
    results: dict = {
        "bundle": BUNDLE.name,
        "payload_mb": args.payload_mb,
        "max_archive_mb": MAX_ARCHIVE_BYTES >> 20,
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        archive = forged_archive(tmp / "forged.tar.gz", args.payload_mb << 20)
        results["archive_bytes"] = archive.stat().st_size
        dest = tmp / "new"
        s, outcome = timed(lambda: extract_archive(archive, dest, trusted=trusted))
        results["new"] = {"seconds": round(s, 3), "bytes_written": written(dest), "outcome": outcome}
        if args.old_ref:
            old = old_reader(args.old_ref, tmp)
            dest = tmp / "old"
            dest.mkdir()
            s, outcome = timed(lambda: old(archive, dest))
            results["old"] = {
                "ref": args.old_ref,
                "seconds": round(s, 3),
                "bytes_written": written(dest),
                "outcome": outcome + " (the signature check came after this)",
            }
        big = tmp / "big.tar"
        with open(big, "wb") as f:
            f.truncate(MAX_ARCHIVE_BYTES + 1)  # sparse: its size is all that is looked at
        s, outcome = timed(lambda: extract_archive(big, tmp / "big", trusted=trusted))
        results["oversized_file"] = {"seconds": round(s, 4), "outcome": outcome}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
