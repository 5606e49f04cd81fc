"""Per-frame cost of the content check's extra output (issue 11 target: <= 10% of the invoke).

    .venv/bin/python benchmarks/content_cost.py models/mobilenetv2-all4-int8 --map 36x36x192 --map 18x18x576
    .venv/bin/python benchmarks/content_cost.py models/efficientnet-lite0-all4-int8 --map 18x18x672

The `ood_distance` head (convert/content.py: a D x D whitening Dense + the distance to K class centres
on the pooled embedding, and for each earlier layer given with --map HxWxC its global average, a C x C
whitening Dense and distance, the max of the scores) is converted alone to full-int8 TFLite, the same
way as the models, and its invoke time is compared with the bundle's whole invoke (same runtime, one
thread, median of many runs). Its weights' values do not change its cost, so random statistics are used.
Each part alone pays an interpreter's own per-invoke overhead and input quantisation, so on a machine whose
model invoke is short (2.6 ms) that figure overstates the head (12.7% for MobileNetV2 on 2026-12-01's
machine). `--without B` measures what the device pays: the bundle's invoke against the same model converted
with `--no-content-check` (bundle B), interleaved, with 1 and 2 threads:

    .venv/bin/smearscope convert RUN --out /tmp/nocc --no-content-check --no-float-reference
    .venv/bin/python benchmarks/content_cost.py models/mobilenetv2-all4-int8 --map 36x36x192 --map 18x18x576 \
        --without /tmp/nocc
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _median_ms(interp, inp: dict | None, x: np.ndarray | None, runs: int) -> float:
    if inp is not None:
        interp.set_tensor(inp["index"], x)
    for _ in range(5):
        interp.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import keras

    from convert.content import MinSquaredDistance
    from convert.tflite import convert
    from device.models.runtime import interpreter_class, make_interpreter

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("bundle", type=Path)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--map", action="append", default=[], help="an earlier layer's map, HxWxC (repeat)")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument(
        "--without",
        type=Path,
        metavar="BUNDLE",
        help="the same model converted with --no-content-check: also measure the in-graph cost",
    )
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    maps = [tuple(int(v) for v in m.lower().split("x")) for m in args.map]

    def head_ms(shape: tuple[int, ...]) -> tuple[float, int]:
        """One score's head alone (GAP first for a map), int8, median invoke ms and file size."""
        d = shape[-1]
        x = inp = keras.Input(shape)
        if len(shape) == 3:
            x = keras.layers.GlobalAveragePooling2D()(x)
        dense = keras.layers.Dense(d, use_bias=False)
        w = dense(x)
        dense.set_weights([rng.normal(0, 0.05, (d, d)).astype(np.float32)])
        head = keras.Model(inp, MinSquaredDistance(rng.normal(0, 1, (args.classes, d)))(w))

        def rep():
            for _ in range(50):
                yield [rng.uniform(0, 6, (1, *shape)).astype(np.float32)]

        conv = convert(head, "int8", rep)
        cls, _ = interpreter_class()
        h_interp = cls(model_content=conv.data, num_threads=1)
        h_interp.allocate_tensors()
        h_in = h_interp.get_input_details()[0]
        x = rng.integers(0, 255, tuple(h_in["shape"])).astype(h_in["dtype"])
        return _median_ms(h_interp, h_in, x, args.runs * 10), len(conv.data)

    parts = [head_ms((args.dim,))] + [head_ms(m) for m in maps]
    total_ms = sum(ms for ms, _ in parts)
    total_bytes = sum(n for _, n in parts)
    m_interp, _ = make_interpreter(str(args.bundle / "model.tflite"), 1)
    m_in = m_interp.get_input_details()[0]
    shape = tuple(m_in["shape"])
    model_ms = _median_ms(m_interp, m_in, rng.integers(0, 255, shape).astype(m_in["dtype"]), args.runs)
    print(
        f"content head (D={args.dim}, maps {args.map or 'none'}, K={args.classes}) int8: {total_ms:.3f} ms "
        f"({' + '.join(f'{ms:.3f}' for ms, _ in parts)}); {args.bundle.name} invoke: "
        f"{model_ms:.2f} ms; ratio {100 * total_ms / model_ms:.2f}% (target <= 10%); head files "
        f"{total_bytes / 1e6:.2f} MB"
    )
    if args.without is not None:
        for threads in (1, 2):
            with_ms, without_ms = _interleaved(args.bundle, args.without, threads, args.runs * 8)
            print(
                f"in the graph, {threads} thread(s): invoke {with_ms:.3f} ms with the content output, "
                f"{without_ms:.3f} ms without; extra {with_ms - without_ms:.3f} ms = "
                f"{100 * (with_ms - without_ms) / without_ms:.1f}% of the invoke (target <= 10%)"
            )
    return 0


def _interleaved(bundle: Path, without: Path, threads: int, runs: int) -> tuple[float, float]:
    """Median invoke ms of two bundles' models on the same input, alternating which goes first."""
    from device.models.runtime import make_interpreter

    interps = []
    for b in (bundle, without):
        interp, _ = make_interpreter(str(b / "model.tflite"), threads)
        d = interp.get_input_details()[0]
        x = np.random.default_rng(0).integers(0, 255, tuple(d["shape"])).astype(d["dtype"])
        interp.set_tensor(d["index"], x)
        for _ in range(10):
            interp.invoke()
        interps.append(interp)
    times: list[list[float]] = [[], []]
    for r in range(runs):
        for i in (0, 1) if r % 2 else (1, 0):
            t = time.perf_counter()
            interps[i].invoke()
            times[i].append((time.perf_counter() - t) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


if __name__ == "__main__":
    sys.exit(main())
