"""Per-frame cost of the content check's extra output (issue 11 target: <= 10% of the invoke).

    .venv/bin/python benchmarks/content_cost.py models/efficientnet-lite0-all4-int8 [--dim 1280]

The `ood_distance` head (convert/content.py: a D x D whitening Dense + the distance to K class centres)
is converted alone to full-int8 TFLite, the same way as the models, and its invoke time is compared with
the bundle's whole invoke (same runtime, one thread, median of many runs). Its weights' values do not
change its cost, so random statistics are used.
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


def _median_ms(interp, inp: dict, x: np.ndarray, runs: int) -> float:
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
    from device.runtime import interpreter_class, make_interpreter

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("bundle", type=Path)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    inp = keras.Input((args.dim,))
    dense = keras.layers.Dense(args.dim, use_bias=False)
    w = dense(inp)
    dense.set_weights([rng.normal(0, 0.05, (args.dim, args.dim)).astype(np.float32)])
    out = MinSquaredDistance(rng.normal(0, 1, (args.classes, args.dim)))(w)
    head = keras.Model(inp, out)

    def rep():
        for _ in range(50):
            yield [rng.uniform(0, 6, (1, args.dim)).astype(np.float32)]

    conv = convert(head, "int8", rep)
    cls, _ = interpreter_class()
    h_interp = cls(model_content=conv.data, num_threads=1)
    h_interp.allocate_tensors()
    h_in = h_interp.get_input_details()[0]
    head_ms = _median_ms(
        h_interp, h_in, rng.integers(0, 255, (1, args.dim)).astype(h_in["dtype"]), args.runs * 10
    )
    m_interp, _ = make_interpreter(str(args.bundle / "model.tflite"), 1)
    m_in = m_interp.get_input_details()[0]
    shape = tuple(m_in["shape"])
    model_ms = _median_ms(m_interp, m_in, rng.integers(0, 255, shape).astype(m_in["dtype"]), args.runs)
    print(
        f"content head (D={args.dim}, K={args.classes}) int8: {head_ms:.3f} ms; {args.bundle.name} invoke: "
        f"{model_ms:.2f} ms; ratio {100 * head_ms / model_ms:.2f}% (target <= 10%); head file "
        f"{len(conv.data) / 1e6:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
