"""The default ensemble's figures for the model cards.

    python -m convert.ensemble_report models/A models/B --data TEST_SPLIT_DIR

Evaluates the soft-vote ensemble of the bundles with the device code (`smearscope evaluate`'s
function) on the test split, runs the out-of-distribution probes through the ensemble, writes
`report/ensemble.json` and `report/ensemble_ood.json` into every bundle and re-renders each MODEL.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from convert import card, ood
from device.datasets.evaluation import evaluate
from device.datasets.folders import scan
from device.fsutil import atomic_write_bytes
from device.models.ensemble import Ensemble
from device.preprocess import read_image


def ensemble_report(bundles: list[Path], data: Path, *, ood_per_kind: int = 12) -> dict:
    ens = Ensemble.from_dirs([str(b) for b in bundles])
    result = evaluate(ens, data)
    items, _ = scan(data, labels=[p.name for p in sorted(data.iterdir()) if p.is_dir()], dedupe=False)
    step = max(1, len(items) // ood_per_kind)
    smears = [read_image(it.path) for it in items[::step][:ood_per_kind]]
    probes = ood.measure(ens, smears, n=ood_per_kind, seed=0)
    for b in bundles:
        rep = b / "report"
        rep.mkdir(exist_ok=True)
        atomic_write_bytes(rep / "ensemble.json", (json.dumps(result, indent=2) + "\n").encode())
        atomic_write_bytes(rep / "ensemble_ood.json", (json.dumps(probes, indent=2) + "\n").encode())
        card.write_card(b)
    return {"evaluation": result, "ood": probes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.ensemble_report", description=__doc__)
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--data", required=True, type=Path, help="test split: one folder per label")
    args = p.parse_args(argv)
    out = ensemble_report(args.bundles, args.data)
    ev, oo = out["evaluation"], out["ood"]["all"]
    print(
        f"ensemble n={ev['n']} accuracy={ev['accuracy']:.4f} macro_f1={ev['macro_f1']:.4f} "
        f"uncertain={ev['abstained']} | OOD probes uncertain {100 * oo['abstained']:.1f}% "
        f"confident malignant {100 * oo['confident_malignant']:.1f}%",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
