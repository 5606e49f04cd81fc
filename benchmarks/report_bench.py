"""Benchmark of the slide report's PDF (device/report/pdf.py, fpdf2) on a 20-field slide.

A store gets one sample of FIELDS camera-sized fields (the shipped sample slides resized to 1280x960,
stored as JPEG like the daemon stores them) with a few reviews; then the report is gathered and rendered
REPEATS times. Reported: the first render (fonts parsed and subset for the first time) and the p50/max of
the others, the PDF's size, the Python heap peak of one render (tracemalloc) and the process's peak RSS
growth over all renders (resource.getrusage; OpenCV's decode buffers are outside tracemalloc).

.venv/bin/python benchmarks/report_bench.py [--fields 20] [--repeats 10] \
    [--json benchmarks/results/report_bench.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.localtime import station_zone  # noqa: E402
from device.paths import SAMPLES_DIR  # noqa: E402
from device.report.pdf import find_font, render_pdf  # noqa: E402
from device.report.slide import build_slide_report  # noqa: E402
from device.store.store import Store  # noqa: E402

LABELS = ["Benign", "Early", "Pre", "Pro"]


def make_slide(store: Store, fields: int) -> str:
    sample = store.open_sample("BENCH-20", "benchmark slide", "tech")
    images = sorted(SAMPLES_DIR.glob("*.jpg"))
    for i in range(fields):
        bgr = cv2.resize(cv2.imread(str(images[i % len(images)])), (1280, 960), interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        sha = store.put_image(buf.tobytes())
        label = LABELS[i % len(LABELS)]
        rec = store.add_result(
            {
                "source": "camera", "kind": "classification", "sample_id": sample["id"], "image_sha256": sha,
                "label": label, "confidence": 0.9, "abstained": i % 5 == 4,
                "probabilities": {lb: (0.9 if lb == label else 0.1 / 3) for lb in LABELS},
                "models": [{"name": "mobilenetv2-int8", "sha256": "e" * 64}], "quality": {"ok": True},
            }
        )  # fmt: skip
        if i % 4 == 0:
            store.add_review(rec["id"], None if i % 8 else "Benign", "checked", "Zoë Ødegård")
    return sample["id"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "data", reserve_bytes=0)
        sample_id = make_slide(store, args.fields)
        zone = station_zone("Europe/Berlin")
        rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times, size = [], 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            report = build_slide_report(store, sample_id, zone=zone)
            pdf = render_pdf(report)
            times.append((time.perf_counter() - t0) * 1000)
            size = len(pdf)
        rss_after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        render_pdf(build_slide_report(store, sample_id, zone=zone))
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        store.close()
    warm = times[1:] or times
    out = {
        "what": f"slide report PDF: {args.fields} fields of 1280x960 JPEG, {len(report.images)} embedded",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "font": "DejaVu Sans (fonts-dejavu-core)" if find_font() else "Helvetica (core, Latin-1)",
        "repeats": args.repeats,
        "first_ms": round(times[0], 1),
        "p50_ms": round(statistics.median(warm), 1),
        "max_ms": round(max(warm), 1),
        "pdf_bytes": size,
        "python_heap_peak_mb": round(heap_peak / 1e6, 2),
        "rss_peak_growth_mb": round((rss_after_kb - rss_before_kb) / 1024, 1),
        "rss_peak_mb": round(rss_after_kb / 1024, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
