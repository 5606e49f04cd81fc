"""Choose a cell bundle's decision thresholds on the VALIDATION split and write them into its manifest:
`python -m training.cells.calibrate_cells BUNDLE [BUNDLE...] --run RUN [--split val]`.

The bundles are read together as the station's default ensemble votes (`device.models.ensemble`), and
every bundle gets the same `cells` section (`pitch_um`, `blast_threshold`, `type_threshold`), so the
ensemble's decision does not depend on which member is first. The per-cell decision is the station's
(`device.cells.decide.decide`).

- `blast_threshold`: the smallest threshold (fewest unclassified cells) at which, on the split's crops,
  confidently wrong blast / not-blast calls stay within `--max-wrong` (0.5%) of the cells and blast
  calls within `--max-blast-on-decided-normal` (0.5%) of the DECIDED non-blast cells (the blast
  specificity among decided cells) on the crops as built, and, on the crops as built AND on their
  cross-lab copies (colour moved to the other lab; colour and detail), confident blast calls within
  `--max-blast-on-normal` (1%) of the non-blast cells and of EACH normal type of the other lab (PBC),
  and blasts confidently called not a blast within `--max-blast-missed` (1%).
  Every limit is applied with `--margin` (0.8: a rate must stay within 80% of its target on validation,
  so that the test split has room). When no threshold meets them, the most cautious one is kept and
  the report says so.
- `type_threshold`: the largest threshold (fewest wrong names) at which every non-blast type keeps
  unclassified + unnamed cells within `--max-unnamed` (20%) on the crops as built (a type that cannot
  meet it even at the lowest threshold does not hold the others back).
- `field_clear_threshold`, `field_blast_threshold`, `field_min_cells`: the field rule
  (`device.cells.field`) from the split's B-ALL fields read as the station reads them
  (`training.cells.field_rule.choose_thresholds`: `--field-margin` beyond the validation fields of each
  kind; `--no-field-rule` leaves it out).
- `pitch_um`: the crop dataset's pitch (`crops.json` crop.pitch_um).
How they were chosen (split, targets, figures) goes to the manifest's `calibration.cells`;
`convert.bundle.update_manifest` renews each bundle's version, so it must be signed again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from device.cells.decide import BLAST, NOT_BLAST, UNCLASSIFIED, CellDecision, decide
from device.errors import SmearscopeError
from device.models.bundle import CellSpec, Label
from device.models.ensemble import Ensemble
from training.cells.cellprobs import (
    CellTable,
    crop_spec,
    crops_root_of,
    lab_means,
    load_part,
    run_cells,
    variant_fn,
)
from training.cells.field_rule import call_field, choose_thresholds, labelled_fields, summary, with_thresholds

BLAST_GRID = tuple(round(x, 3) for x in [*np.arange(0.5, 0.95, 0.05), *np.arange(0.95, 0.9951, 0.005)])
TYPE_GRID = tuple(round(x, 3) for x in np.arange(0.5, 0.951, 0.025))
#: the copies the blast threshold must also hold on (the station meets other labs' colour and cameras)
CROSS_LAB = ("colour_to_other", "to_other_lab")


@dataclass(frozen=True)
class Targets:
    max_wrong: float = 0.005
    max_blast_on_normal: float = 0.01
    max_blast_missed: float = 0.01
    max_blast_on_decided_normal: float = 0.005  # 1 - the blast specificity among the decided cells
    max_unnamed: float = 0.20
    margin: float = 0.8


@dataclass
class CellSet:
    """A labelled set of cells: the ensemble's table, each cell's true label and lab."""

    name: str
    table: CellTable
    truth: list[str]
    lab: list[str]


def decisions(table: CellTable, labels: Sequence[Label], spec: CellSpec) -> list[CellDecision]:
    return [
        decide(p, labels, spec, unfamiliar=u) for p, u in zip(table.rows(), table.unfamiliar, strict=True)
    ]


def blast_rates(cells: CellSet, decs: Sequence[CellDecision], labels: Sequence[Label]) -> dict:
    """Rates of one set at one decision: confidently wrong (blast-level), confident blast on non-blast
    cells (overall and per PBC type), blasts confidently called not a blast, unclassified."""
    malignant = {lb.id: bool(lb.malignant) for lb in labels}
    t = np.array([malignant[x] for x in cells.truth])
    state = np.array([d.state for d in decs])
    n, nb, nn = len(t), int(t.sum()), int((~t).sum())
    wrong = ((state == BLAST) & ~t) | ((state == NOT_BLAST) & t)
    decided_normal = int((((state == BLAST) | (state == NOT_BLAST)) & ~t).sum())
    per_type = {}
    for lb in sorted({x for x, lab in zip(cells.truth, cells.lab, strict=True) if lab == "pbc"}):
        m = np.array([x == lb and lab == "pbc" for x, lab in zip(cells.truth, cells.lab, strict=True)])
        per_type[lb] = float((m & (state == BLAST)).sum() / m.sum())
    return {
        "n": n,
        "confidently_wrong": float(wrong.mean()) if n else 0.0,
        "confident_blast_on_normal": float(((state == BLAST) & ~t).sum() / nn) if nn else 0.0,
        "blast_on_decided_normal": (
            float(((state == BLAST) & ~t).sum() / decided_normal) if decided_normal else 0.0
        ),
        "confident_blast_on_pbc_type": per_type,
        "blast_called_not_blast": float(((state == NOT_BLAST) & t).sum() / nb) if nb else 0.0,
        "unclassified": float((state == UNCLASSIFIED).mean()) if n else 0.0,
    }


def meets(rates: dict, targets: Targets, *, original: bool) -> list[str]:
    """The limits `rates` exceed (empty: all met). On the cross-lab copies confidently wrong is not
    limited (their colour shift is larger than any lab's), the rest is."""
    m = targets.margin
    out = []
    if original and rates["confidently_wrong"] > m * targets.max_wrong:
        out.append("confidently_wrong")
    if original and rates.get("blast_on_decided_normal", 0.0) > m * targets.max_blast_on_decided_normal:
        out.append("blast_on_decided_normal")
    if rates["confident_blast_on_normal"] > m * targets.max_blast_on_normal:
        out.append("confident_blast_on_normal")
    out += [
        f"confident_blast_on_{lb}"
        for lb, r in rates["confident_blast_on_pbc_type"].items()
        if r > m * targets.max_blast_on_normal
    ]
    if rates["blast_called_not_blast"] > m * targets.max_blast_missed:
        out.append("blast_called_not_blast")
    return out


def choose_blast_threshold(
    sets: Sequence[CellSet], labels: Sequence[Label], targets: Targets, grid: Sequence[float] = BLAST_GRID
) -> tuple[float, bool, dict]:
    """(threshold, met, per-set rates at it). `sets[0]` is the crops as built; the rest are copies."""
    last: tuple[float, dict] | None = None
    for t in sorted(grid):
        spec = CellSpec(None, t, 0.5)
        rates = {s.name: blast_rates(s, decisions(s.table, labels, spec), labels) for s in sets}
        failed = [f for i, s in enumerate(sets) for f in meets(rates[s.name], targets, original=i == 0)]
        if not failed:
            return t, True, rates
        last = (t, rates)
    assert last is not None
    return last[0], False, last[1]


def type_rates(cells: CellSet, decs: Sequence[CellDecision], labels: Sequence[Label]) -> dict:
    """Per non-blast type: unclassified + unnamed share and, among its named cells, wrong names."""
    out = {}
    for lb in [x.id for x in labels if x.malignant is False]:
        idx = [i for i, x in enumerate(cells.truth) if x == lb]
        if not idx:
            continue
        ds = [decs[i] for i in idx]
        unclassified = sum(d.state == UNCLASSIFIED for d in ds)
        unnamed = sum(d.state == NOT_BLAST and d.label is None for d in ds)
        named = [d for d in ds if d.state == NOT_BLAST and d.label is not None]
        out[lb] = {
            "n": len(ds),
            "unclassified": unclassified / len(ds),
            "unnamed": unnamed / len(ds),
            "named_wrong": (sum(d.label != lb for d in named) / len(named)) if named else 0.0,
        }
    return out


def choose_type_threshold(
    cells: CellSet,
    labels: Sequence[Label],
    blast_threshold: float,
    targets: Targets,
    grid: Sequence[float] = TYPE_GRID,
) -> tuple[float, dict]:
    grid = sorted(grid)
    at = {
        t: type_rates(cells, decisions(cells.table, labels, CellSpec(None, blast_threshold, t)), labels)
        for t in grid
    }
    base = at[grid[0]]
    limit = {lb: max(targets.max_unnamed, r["unclassified"] + r["unnamed"]) for lb, r in base.items()}
    chosen = grid[0]
    for t in grid:
        if all(r["unclassified"] + r["unnamed"] <= limit[lb] + 1e-12 for lb, r in at[t].items()):
            chosen = t
    return chosen, at[chosen]


def val_sets(ens: Ensemble, run_dir: Path, part: str, limit: int = 0) -> tuple[list[CellSet], dict]:
    split = json.loads((run_dir / "split.json").read_text())
    root = crops_root_of(run_dir)
    crops, manifest = load_part(root, split, part)
    if limit:
        crops = crops[:: max(1, len(crops) // limit)]
    means = lab_means(root, split, manifest)
    sets = []
    for name in ("original", *CROSS_LAB):
        fn = variant_fn(name, means, manifest)
        pairs = [(c, fn(c)) for c in crops]
        pairs = [(c, x) for c, x in pairs if x is not None]
        table = run_cells(ens, [x for _, x in pairs])
        sets.append(CellSet(name, table, [c.label for c, _ in pairs], [c.lab for c, _ in pairs]))
        print(f"{part} {name}: {len(pairs)} cells", flush=True)
    return sets, manifest


def calibrate(args: argparse.Namespace) -> dict:
    from convert.bundle import update_manifest

    ens = Ensemble.from_dirs([str(b) for b in args.bundle], num_threads=args.threads)
    labels = ens.labels
    if not any(lb.malignant for lb in labels):
        raise SmearscopeError("the bundles declare no blast label (labels[].malignant)")
    targets = Targets(
        args.max_wrong,
        args.max_blast_on_normal,
        args.max_blast_missed,
        args.max_blast_on_decided_normal,
        args.max_unnamed,
        args.margin,
    )
    sets, manifest = val_sets(ens, Path(args.run), args.split, args.limit)
    bt, met, rates = choose_blast_threshold(sets, labels, targets)
    tt, types = choose_type_threshold(sets[0], labels, bt, targets)
    spec = CellSpec(float(crop_spec(manifest).pitch_um), bt, tt)
    field_doc = None
    if not args.no_field_rule:
        run_dir = Path(args.run)
        split = json.loads((run_dir / "split.json").read_text())
        val_fields = labelled_fields(ens, crops_root_of(run_dir), split, args.split, args.limit // 10)
        lo, hi, field_doc = choose_thresholds(
            val_fields, labels, margin=args.field_margin, min_cells=args.field_min_cells
        )
        spec = with_thresholds(spec, lo, hi, args.field_min_cells)
        field_doc["val"] = summary(call_field(f, labels, spec) for f in val_fields)
        print(f"{args.split} fields: {len(val_fields)}, clear <= {lo}, blast >= {hi}", flush=True)
    doc = {
        "split": args.split,
        "run": str(args.run),
        "ensemble": ens.names,
        "targets": asdict(targets),
        "blast_threshold_met_targets": met,
        "cells": asdict(spec),
        "blast_rates": rates,
        "type_rates": types,
        "field_rule": field_doc,
    }
    if args.write:
        for b in args.bundle:
            update_manifest(b, cells=spec, calibration={**_calibration_of(b), "cells": doc})
    return doc


def _calibration_of(bundle: str | Path) -> dict:
    from device.models.bundle import read_manifest

    return dict(read_manifest(bundle).calibration or {})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.cells.calibrate_cells", description=__doc__.split("\n")[0]
    )
    p.add_argument("bundle", nargs="+", help="cell bundle dirs (the ensemble, in the station's order)")
    p.add_argument("--run", required=True, help="the run whose split.json and crop data the bundles share")
    p.add_argument("--split", default="val", choices=("val",), help="the split the thresholds come from")
    d = Targets()
    p.add_argument("--max-wrong", type=float, default=d.max_wrong)
    p.add_argument("--max-blast-on-normal", type=float, default=d.max_blast_on_normal)
    p.add_argument("--max-blast-missed", type=float, default=d.max_blast_missed)
    p.add_argument("--max-blast-on-decided-normal", type=float, default=d.max_blast_on_decided_normal)
    p.add_argument("--max-unnamed", type=float, default=d.max_unnamed)
    p.add_argument(
        "--margin", type=float, default=d.margin, help="validation rates must stay within margin x target"
    )
    p.add_argument(
        "--field-margin",
        type=float,
        default=0.2,
        help="the field rule's margin beyond the validation fields",
    )
    p.add_argument(
        "--field-min-cells", type=int, default=3, help="white cells a field needs for the field rule"
    )
    p.add_argument(
        "--no-field-rule", action="store_true", help="call fields from their cells' decisions alone"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--limit", type=int, default=0, help="about N crops (evenly spaced; smoke runs, no --write)"
    )
    p.add_argument("--write", action="store_true", help="write the cells section into every bundle")
    p.add_argument("--out", help="also write the choice as JSON here")
    args = p.parse_args(argv)
    if args.limit and args.write:
        p.error("--limit is for smoke runs: thresholds are written only from the whole split")
    try:
        doc = calibrate(args)
    except (SmearscopeError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(doc, indent=1)
    if args.out:
        from device.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(args.out), (text + "\n").encode())
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
