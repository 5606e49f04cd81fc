"""Cost of the active calibration profile per camera frame (device/camera/profiled.py).

    .venv/bin/python benchmarks/profiled_source_bench.py [--frames N] [--json OUT]

`ProfiledSource.read()` = a stat of the profiles file (does it change?) + the software white gain (one
LUT pass) on top of the camera's own read. Measured on 1920x1080 and 4056x3040 (HQ camera full
sensor) frames from a source that costs nothing, so the figure is the profile's own overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.camera.base import FrameSource  # noqa: E402
from device.camera.profiled import ProfiledSource  # noqa: E402
from device.camera.profiles import Profile, ProfileStore  # noqa: E402


class Still(FrameSource):
    name = "still"

    def __init__(self, w: int, h: int):
        self.frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray:
        return self.frame


def per_frame_ms(src: FrameSource, n: int) -> float:
    src.read()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        src.read()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = ProfileStore(Path(tmp) / "profiles.toml")
        store.save(Profile("bench", 0.07, white_gains=[1.1, 1.0, 0.9]))
        none = ProfileStore(Path(tmp) / "none.toml")
        for w, h in ((1920, 1080), (4056, 3040)):
            raw = Still(w, h)
            gains = ProfiledSource(raw, store)
            plain = ProfiledSource(raw, none)
            gains.open()
            plain.open()
            out[f"{w}x{h}"] = {
                "camera_read_ms": round(per_frame_ms(raw, args.frames), 3),
                "profile_without_gain_ms": round(per_frame_ms(plain, args.frames), 3),
                "profile_with_gain_ms": round(per_frame_ms(gains, args.frames), 3),
            }
    out["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]  # a shared machine inflates it
    out["cpus"] = os.cpu_count()
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
