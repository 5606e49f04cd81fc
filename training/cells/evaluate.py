"""Per-cell and per-field figures of cell-classifier bundles on the crop dataset's TEST split, with the
cross-lab copies: `python -m training.cells.evaluate --model B1 --model B2 --run RUN --out PREFIX`.

The station's code path: `device.models.ensemble.Ensemble` (soft vote, temperature, colour / energy /
content checks) on each crop, then `device.cells.decide.decide` with the FIRST bundle's `cells` section
(blast / not_blast / unclassified, the type when named). The members alone are read from the same pass
(`Prediction.per_model`, with the ensemble's unfamiliar flags). Variants of each test crop:
- `original`: the crops as built (`training.cells.build_crops`: the station's detector and crop);
- `colour_to_other`: each crop moved onto the OTHER lab's mean Reinhard statistics (its training crops);
- `to_other_lab`: PBC crops in the B-ALL lab's colour (their detail already is the B-ALL lab's); B-ALL
  crops in the PBC lab's colour and sharpened (unsharp mask: a crisper camera's look);
- `pbc_full_detail`: PBC crops re-cut from their source image WITHOUT the pitch step (a sharp camera).
Fields: the test split's B-ALL fields read as the station reads them (white reference, `detect_cells`,
`model_input`) and called by the station's field call with the bundle's field rule (its thresholds
chosen on the validation fields by `calibrate_cells`).
The split is per source image (no patient ids): figures are optimistic for new patients.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from device.cells.decide import BLAST, NOT_BLAST, UNCLASSIFIED, CellDecision
from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes
from device.models.bundle import CellSpec, Label
from device.models.ensemble import Ensemble
from device.models.model import TFLiteModel
from training.cells.calibrate_cells import decisions
from training.cells.cellprobs import (
    VARIANTS,
    CellTable,
    crops_root_of,
    lab_means,
    load_part,
    run_cells,
    variant_fn,
)
from training.cells.field_rule import WRONG, call_field, labelled_fields, normal_fields, summary

SPLIT_NOTE = (
    "split per source image (all crops of a field or PBC image on one side); the file names carry no "
    "patient ids, so one patient's fields can sit on both sides: optimistic for new patients"
)
FIELD_RULE_TEXT = (
    "the station's field call (device.screening.result, device.cells.field): a field of at least "
    "field_min_cells pooled white cells is a blast field when their mean blast probability reaches the "
    "blast threshold, a field without blasts at or below the clear threshold when no cell is decided a "
    "blast, else uncertain; a smaller field is called by its cells' decisions (a decided blast calls it, "
    "an unclassified cell makes it uncertain); a field of blasts is right on an Early/Pre/Pro image, a "
    "field without blasts on a Benign one; the subtype (4-class) is reported apart"
)
TARGETS = {
    "blast_sensitivity": ">= 99%",
    "blast_specificity": ">= 99.5%",
    "macro_f1_normal": ">= 0.95",
    "confidently_wrong": "<= 0.5%",
    "field_accuracy": ">= 99.5%",
    "field_confidently_wrong": "<= 0.5%",
    "confident_blast_on_each_normal_type": "<= 1% (other labs)",
    "uncertain_each_normal_type": "<= 20% (other labs)",
    "blast_called_not_blast": "<= 1% (cross-lab copies)",
}


def _frac(num: int | float, den: int | float) -> float | None:
    return float(num) / float(den) if den else None


def cell_figures(
    truth: Sequence[str], decs: Sequence[CellDecision], probs: np.ndarray, labels: Sequence[Label]
) -> dict:
    """Figures of one set of cells under the decision (`decs`) and, for reference, the arg-max."""
    ids = [lb.id for lb in labels]
    malignant = {lb.id: bool(lb.malignant) for lb in labels}
    t = np.array([malignant[x] for x in truth], bool)
    state = np.array([d.state for d in decs])
    named = np.array([d.label if d.label is not None else "" for d in decs])
    argmax = np.array([ids[i] for i in probs.argmax(axis=1)]) if len(probs) else np.array([], str)
    blast_ids = [i for i, lb in enumerate(ids) if malignant[lb]]
    p_blast = probs[:, blast_ids].sum(axis=1) / np.maximum(probs.sum(axis=1), 1e-12) if len(probs) else probs
    n = len(truth)
    is_blast, is_not, unc = state == BLAST, state == NOT_BLAST, state == UNCLASSIFIED
    decided = is_blast | is_not
    wrong_side = (is_blast & ~t) | (is_not & t)
    truth_arr = np.array(truth)
    wrong_name = (named != "") & (named != truth_arr)
    per_type = {}
    f1s_decision, f1s_argmax = [], []
    for lb in [x.id for x in labels if x.malignant is False]:
        m = truth_arr == lb
        k = int(m.sum())
        if not k:
            continue
        tp = int((m & (named == lb)).sum())
        prec = _frac(tp, int((named == lb).sum())) or 0.0
        rec = tp / k
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        tp_a = int((m & (argmax == lb)).sum())
        prec_a = _frac(tp_a, int((argmax == lb).sum())) or 0.0
        rec_a = tp_a / k
        f1_a = 2 * prec_a * rec_a / (prec_a + rec_a) if prec_a + rec_a else 0.0
        per_type[lb] = {
            "n": k,
            "named_correct": tp / k,
            "named_wrong": float((m & (named != "") & (named != lb) & is_not).sum() / k),
            "not_blast_unnamed": float((m & is_not & (named == "")).sum() / k),
            "uncertain": float((m & unc).sum() / k),
            "confident_blast": float((m & is_blast).sum() / k),
            "f1_decision": f1,
            "f1_argmax": f1_a,
        }
        if lb != "hematogone":
            f1s_decision.append(f1)
            f1s_argmax.append(f1_a)
    nb, nn = int(t.sum()), int((~t).sum())
    return {
        "n": n,
        "n_blast": nb,
        "n_not_blast": nn,
        "states": {
            "blast": _frac(is_blast.sum(), n),
            "not_blast": _frac(is_not.sum(), n),
            "unclassified": _frac(unc.sum(), n),
        },
        "blast_sensitivity_decided": _frac((is_blast & t).sum(), (decided & t).sum()),
        "blast_specificity_decided": _frac((is_not & ~t).sum(), (decided & ~t).sum()),
        "blast_sensitivity_argmax": _frac(((p_blast >= 0.5) & t).sum(), nb),
        "blast_specificity_argmax": _frac(((p_blast < 0.5) & ~t).sum(), nn),
        "blast_unclassified": _frac((unc & t).sum(), nb),
        "not_blast_unclassified": _frac((unc & ~t).sum(), nn),
        "confidently_wrong": _frac(wrong_side.sum(), n),
        "wrong_name": _frac((wrong_name & ~wrong_side & decided).sum(), n),
        "confident_blast_on_normal": _frac((is_blast & ~t).sum(), nn),
        "blast_called_not_blast": _frac((is_not & t).sum(), nb),
        "macro_f1_normal_decision": float(np.mean(f1s_decision)) if f1s_decision else None,
        "macro_f1_normal_argmax": float(np.mean(f1s_argmax)) if f1s_argmax else None,
        "per_type": per_type,
    }


def member_table(table: CellTable, name: str) -> CellTable:
    return CellTable(table.labels, table.members[name], {}, table.unfamiliar)


def run(args: argparse.Namespace) -> dict:
    run_dir = Path(args.run)
    split = json.loads((run_dir / "split.json").read_text())
    members = [TFLiteModel.from_dir(str(m), args.threads) for m in args.model]
    ens = Ensemble(members)
    first = members[0].manifest
    if first.cells is None:
        raise SmearscopeError(f"{first.name}: no cells section (run training.cells.calibrate_cells first)")
    spec: CellSpec = first.cells
    labels = list(first.labels)
    crops_root = crops_root_of(run_dir)
    test, manifest = load_part(crops_root, split, "test")
    means = lab_means(crops_root, split, manifest)
    if args.limit:
        test = test[:: max(1, len(test) // args.limit)]
    out: dict = {
        "models": {m.manifest.name: m.manifest.sha256 for m in members},
        "cells_spec": asdict(spec),
        "run": str(run_dir),
        "split_note": SPLIT_NOTE,
        "targets": TARGETS,
        "blast_labels": [lb.id for lb in labels if lb.malignant],
        "variants": {},
    }
    for vname in args.variants:
        t0 = time.perf_counter()
        fn = variant_fn(vname, means, manifest)
        pairs = [(c, fn(c)) for c in test]
        pairs = [(c, x) for c, x in pairs if x is not None]
        table = run_cells(ens, [x for _, x in pairs])
        truth = [c.label for c, _ in pairs]
        labs = np.array([c.lab for c, _ in pairs])
        res = {}
        for cname, tab in [("ensemble", table)] + [(n, member_table(table, n)) for n in table.members]:
            decs = decisions(tab, labels, spec)
            res[cname] = {
                "cells": cell_figures(truth, decs, tab.probs, labels),
                "per_lab": {
                    lab: cell_figures(
                        [x for x, m in zip(truth, labs == lab, strict=True) if m],
                        [d for d, m in zip(decs, labs == lab, strict=True) if m],
                        tab.probs[labs == lab],
                        labels,
                    )
                    for lab in ("ball", "pbc")
                    if (labs == lab).any()
                },
            }
        out["variants"][vname] = res
        if (labs == "pbc").any() and spec.field_rule:
            out.setdefault("normal_fields", {})[vname] = pbc_fields(table, labs == "pbc", labels, spec)
        print(
            f"{vname:16s} " + summary_line(res["ensemble"]) + f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    if not args.no_fields:
        out["fields"] = fields(ens, split, crops_root, labels, spec, args)
    return out


def pbc_fields(table: CellTable, pbc: np.ndarray, labels: Sequence[Label], spec: CellSpec) -> dict:
    """Normal fields drawn from the other lab's single test cells, called by the field rule."""
    rows = [r for r, m in zip(table.rows(), pbc, strict=True) if m]
    odd = [u for u, m in zip(table.unfamiliar, pbc, strict=True) if m]
    return normal_fields(rows, odd, labels, spec)


def fields(ens: Ensemble, split: dict, crops_root: Path, labels, spec: CellSpec, args) -> dict:
    """The test fields called as the station calls them (`training.cells.field_rule.call_field`, with
    the bundle's field rule)."""
    test = labelled_fields(ens, crops_root, split, "test", args.limit // 10)
    outcomes = [call_field(f, labels, spec) for f in test]
    res = {
        "rule": FIELD_RULE_TEXT,
        "field_rule": {
            "clear": spec.field_clear_threshold,
            "blast": spec.field_blast_threshold,
            "min_cells": spec.field_min_cells,
        },
        "test": summary(outcomes),
        "wrong": [asdict(o) for o in outcomes if o.outcome == WRONG],
    }
    print("fields test " + json.dumps(res["test"]), flush=True)
    return res


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def summary_line(r: dict) -> str:
    c = r["cells"]
    return (
        f"n={c['n']} sens={_pct(c['blast_sensitivity_decided'])} spec={_pct(c['blast_specificity_decided'])} "
        f"unclassified={_pct(c['states']['unclassified'])} confwrong={_pct(c['confidently_wrong'])} "
        f"F1={c['macro_f1_normal_decision'] or 0:.3f} blast|normal={_pct(c['confident_blast_on_normal'])} "
        f"blast->not={_pct(c['blast_called_not_blast'])}"
    )


def markdown(doc: dict) -> str:
    spec = doc["cells_spec"]
    lines = [
        "# Cell classifier: test split and cross-lab copies",
        "",
        "A screening aid for trained staff, not a diagnosis. " + doc["split_note"] + ".",
        "",
        f"Models: {', '.join(f'`{k}` ({v[:12]})' for k, v in doc['models'].items())}. Run: `{doc['run']}`. "
        f"Decision (`device.cells.decide`, thresholds chosen on validation): blast_threshold "
        f"{spec['blast_threshold']}, type_threshold {spec['type_threshold']}, "
        f"pitch {spec['pitch_um']} µm/px.",
        "",
        "Per cell, int8, the station's ensemble then `decide`. sens. / spec.: blast vs not-blast among the "
        "DECIDED cells (unclassified apart, its own column); conf. wrong: a cell decided on the wrong side "
        "(blast / not blast) over all cells; wrong name: decided on the right side but named the wrong "
        "type; macro-F1: over the 8 PBC types with the decision's names (unnamed / unclassified count "
        "as misses); blast on normal: non-blast cells decided blast; blast -> not: blasts decided not blast.",
        "",
        "| variant | model | lab | n | blast sens. | blast spec. | unclassified | conf. wrong | wrong name "
        "| macro-F1 normal | blast on normal | blast -> not |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for vname, res in doc["variants"].items():
        for cname, r in res.items():
            for lab, c in [("all", r["cells"]), *r["per_lab"].items()]:
                f1 = c["macro_f1_normal_decision"]
                lines.append(
                    f"| {vname} | {cname} | {lab} | {c['n']} | {_pct(c['blast_sensitivity_decided'])} "
                    f"| {_pct(c['blast_specificity_decided'])} | {_pct(c['states']['unclassified'])} "
                    f"| {_pct(c['confidently_wrong'])} | {_pct(c['wrong_name'])} "
                    f"| {'-' if f1 is None else f'{f1:.4f}'} | {_pct(c['confident_blast_on_normal'])} "
                    f"| {_pct(c['blast_called_not_blast'])} |"
                )
    lines += [
        "",
        "Per normal type, ensemble (named correctly / not a blast but unnamed / wrong name / uncertain / "
        "confident blast):",
        "",
        "| variant | type | n | named | unnamed | wrong name | uncertain | confident blast |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for vname, res in doc["variants"].items():
        for lb, v in res["ensemble"]["cells"]["per_type"].items():
            lines.append(
                f"| {vname} | {lb} | {v['n']} | {_pct(v['named_correct'])} | {_pct(v['not_blast_unnamed'])} "
                f"| {_pct(v['named_wrong'])} | {_pct(v['uncertain'])} | {_pct(v['confident_blast'])} |"
            )
    f = doc.get("fields")
    if f:
        t, r = f["test"], f["field_rule"]
        lines += [
            "",
            f"B-ALL fields (the station's detector and crop on the source images): {f['rule']}. Field rule: "
            f"clear <= {r['clear']}, blast >= {r['blast']}, at least {r['min_cells']} cells.",
            "",
            "| fields | n | right (blast or not) | uncertain | confidently wrong "
            "| right with the subtype (4-class) |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| test | {t['n']} | {_pct(t['accuracy'])} | {_pct(t['uncertain_rate'])} "
            f"| {_pct(t['wrong_rate'])} | {_pct(t['four_class_right'] / t['n'] if t['n'] else None)} |",
            "",
            f"By true class: {t['by_truth']}.",
        ]
    nf = doc.get("normal_fields")
    if nf:
        lines += [
            "",
            "Normal fields drawn from the other lab's test cells (PBC; 3-12 cells each, 2,000 fields per "
            "variant), called by the field rule: a blast field here is a confident error on a normal smear.",
            "",
            "| variant | fields | called blast | uncertain | cleared |",
            "| --- | --- | --- | --- | --- |",
        ]
        for vname, r in nf.items():
            lines.append(
                f"| {vname} | {r['n']} | {_pct(r['called_blast'])} | {_pct(r['uncertain'])} "
                f"| {_pct(r['cleared'])} |"
            )
    lines += ["", "Targets: " + "; ".join(f"{k} {v}" for k, v in doc["targets"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.cells.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="bundle dir (repeat for an ensemble)")
    p.add_argument("--run", required=True, help="the run dir whose split.json and data the bundles share")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--no-fields", action="store_true", help="skip the field (image-level) figures")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="about N test crops (evenly spaced; smoke runs)")
    args = p.parse_args(argv)
    try:
        doc = run(args)
    except (SmearscopeError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(doc, indent=1) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), markdown(doc).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
