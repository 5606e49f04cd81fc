"""The human model card `MODEL.md` (and its plots in `report/`), rendered from a bundle's manifest.

Everything the card states comes from the manifest (measured by the device code at conversion) or from
JSON files kept in the bundle's `report/` folder (training metrics, baselines, ensemble evaluation),
so `smearscope convert --card-only BUNDLE` can re-render it and `smearscope evaluate` can check it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from device.fsutil import atomic_write_bytes  # noqa: E402
from device.models.bundle import Manifest, read_manifest  # noqa: E402

DISCLAIMER = (
    "**A screening aid for trained laboratory staff, not a diagnosis.** Every result, and above all "
    'every "uncertain" one, must be reviewed by a qualified hematologist.'
)
#: The quantized model's test accuracy is within this of the float model's (a fraction: 0.5 points).
MAX_ACCURACY_DIFF = 0.005
#: The quantized file is at most this fraction of the float32 file.
MAX_SIZE_RATIO = 0.33
SPLIT_CAVEAT = (
    "The split is per image: the dataset's file names carry no patient ids, so images of one patient can "
    "sit in both the training and the test split. All images come from one hospital (Taleqani Hospital, "
    "Tehran) and one camera/microscope set-up. The figures are therefore optimistic for new patients and "
    "unknown for other labs, stains and cameras."
)


def plot_confusion(cm: list[list[int]], labels: list[str], path: str | Path, title: str) -> None:
    cm_a = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=110)
    ax.imshow(cm_a, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    thresh = cm_a.max() / 2 if cm_a.size else 0
    for i in range(cm_a.shape[0]):
        for j in range(cm_a.shape[1]):
            ax.text(
                j,
                i,
                str(cm_a[i, j]),
                ha="center",
                va="center",
                color="white" if cm_a[i, j] > thresh else "black",
            )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(
    conf_before: np.ndarray, conf_after: np.ndarray, correct: np.ndarray, path: Path
) -> None:
    """Reliability diagram on the validation split, before and after temperature scaling."""
    edges = np.linspace(0, 1, 11)
    centers = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    for conf, name in ((conf_before, "before"), (conf_after, "after")):
        acc = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (conf > lo) & (conf <= hi)
            acc.append(correct[m].mean() if m.any() else np.nan)
        ax.plot(centers, acc, "o-", label=f"{name} temperature")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("validation split reliability", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _metrics_table(m: dict) -> list[str]:
    labels = m["labels"]
    lines = ["| label | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    for lb in labels:
        pc = m["per_class"][lb]
        lines.append(
            f"| {lb} | {pc['precision']:.4f} | {pc['recall']:.4f} | {pc['f1']:.4f} | {pc['support']} |"
        )
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", ""]
    lines.append("| true \\ predicted | " + " | ".join(labels) + " |")
    lines.append("| --- " * (len(labels) + 1) + "|")
    for lb, row in zip(labels, m["confusion_matrix"], strict=True):
        lines.append(f"| **{lb}** | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _what_it_is(man: Manifest, d: dict, size: int) -> list[str]:
    out = [
        f"# Model card: `{man.name}`",
        "",
        DISCLAIMER,
        "",
        "## What it is",
        "",
        f"- Architecture: {man.architecture}; {man.quantization} TFLite ({size / 1e6:.2f} MB), "
        f"sha256 `{man.sha256}`.",
        f"- Input: raw RGB {man.input.dtype} {man.input.width}x{man.input.height} "
        f"({man.input.resize}; scaling happens inside the model).",
        _scale_line(man, d),
        _white_line(man),
        "- Outputs: "
        + ", ".join(f"`{o['name']}` {tuple(o['shape'])}" for o in d["outputs"])
        + (" (`cam`: per-location class logits for the heatmap)" if man.output("cam") else ""),
        f'- Calibrated temperature {man.temperature:g}; abstains ("uncertain, refer") below confidence '
        f"{man.abstain_threshold:.2f}.",
        "",
        "| label id | shown as | malignant |",
        "| --- | --- | --- |",
    ]
    out += [f"| {lb.id} | {lb.display} | {'yes' if lb.malignant else 'no'} |" for lb in man.labels]
    out += ["", "## Intended use and limits", "", man.intended_use, "", SPLIT_CAVEAT, ""]
    return out


def _test_lines(man: Manifest, met: dict, report: Path) -> list[str]:
    out = [
        f"## Test-split performance ({man.quantization}, measured by the device code)",
        "",
        f"n = {met.get('n')} images of the held-out test split: "
        f"accuracy **{_pct(met.get('accuracy'))}**, "
        f"macro-F1 **{met.get('macro_f1', 0):.4f}**. With the abstain threshold, "
        f'{met.get("abstained", 0)} images ({_pct(met.get("abstain_rate"))}) come out "uncertain"; '
        f"accuracy on the rest is {_pct(met.get('accuracy_when_not_abstained'))}.",
        "",
        f"*{met.get('split_note', SPLIT_CAVEAT)}*",
        "",
    ]
    if {"labels", "per_class", "confusion_matrix"} <= met.keys():
        out += _metrics_table(met)
    if (report / "confusion_matrix.png").exists():
        out += ["", "![confusion matrix](report/confusion_matrix.png)"]
    out += [
        "",
        "Reproduce (the test split's files are listed in `report/test_split.txt`, relative to the "
        "dataset folder):",
        "",
        "```sh",
        "DATA=../shared/datasets/all-4class OUT=/tmp/testsplit",
        'while read -r f; do mkdir -p "$OUT/$(dirname "$f")"; cp "$DATA/$f" "$OUT/$f"; done '
        f"< models/{man.name}/report/test_split.txt",
        f"smearscope evaluate --model models/{man.name} --data $OUT --json out.json",
        "```",
        "",
    ]
    return out


def _verification_lines(man: Manifest, ver: dict) -> list[str]:
    out = [
        f"## {man.quantization} versus the float Keras model",
        "",
        "| model | test accuracy | agreement with Keras | max probability difference |",
        "| --- | --- | --- | --- |",
    ]
    out.append(f"| Keras float32 | {_pct(ver.get('keras_accuracy'))} | - | - |")
    out.append(
        f"| TFLite {man.quantization} | {_pct(ver.get('tflite_accuracy'))} | "
        f"{_pct(ver.get('agreement'))} | "
        f"{ver.get('max_probability_diff', 0):.4f} |"
    )
    f32 = ver.get("float32_tflite")
    if f32:
        out.append(
            f"| TFLite float32 | {_pct(f32.get('tflite_accuracy'))} | {_pct(f32.get('agreement'))} | "
            f"{f32.get('max_probability_diff', 0):.4f} |"
        )
    diff = ver.get("accuracy_diff")
    if diff is not None and man.quantization != "float32":
        met_diff = "met" if abs(diff) <= MAX_ACCURACY_DIFF else "**NOT met**"
        out += [
            "",
            f'Target "within 0.5 points of the float model": {met_diff} ({100 * diff:+.2f} points).',
        ]
    sizes = ver.get("sizes") or {}
    if sizes.get("float32_bytes"):
        out += [
            "",
            f"File size: {sizes['model_bytes'] / 1e6:.2f} MB versus "
            f"{sizes['float32_bytes'] / 1e6:.2f} MB "
            f"for float32 ({100 * sizes['ratio']:.1f}%; target <= 33%: "
            f"{'met' if sizes['ratio'] <= MAX_SIZE_RATIO else '**NOT met**'}).",
        ]
    out.append("")
    return out


def _calibration_lines(man: Manifest, cal: dict, report: Path) -> list[str]:
    out: list[str] = []
    thr = cal.get("threshold", {})
    out += [
        "## Calibration and abstention",
        "",
        f"Temperature fitted on the {cal.get('split', 'val')} split (n = {cal.get('n')}) by "
        f"minimising the negative log-likelihood: T = {man.temperature:g}. "
        f"NLL {cal.get('nll_before', 0):.4f} → {cal.get('nll_after', 0):.4f}, "
        f"ECE {cal.get('ece_before', 0):.4f} → {cal.get('ece_after', 0):.4f}.",
        "",
        f"Abstain rule: {thr.get('rule', 'n/a')}. Chosen threshold {man.abstain_threshold:.2f}: "
        f"validation selective accuracy {_pct(thr.get('val_selective_accuracy'))} at coverage "
        f"{_pct(thr.get('val_coverage'))}"
        + ("" if thr.get("target_met", True) else " (target NOT met)")
        + ".",
    ]
    colour = cal.get("colour_check")
    if colour:
        out += [
            "",
            f"Colour check: {colour.get('rule')} (refuses {_pct(colour.get('val_refused'))} of the "
            "validation images). Smears stained, lit or photographed unlike the training lab's come "
            'out "uncertain": a station in a new lab needs a model re-trained or re-calibrated on '
            "that lab's images.",
        ]
    floor = cal.get("ood_floor")
    if floor:
        out += [
            "",
            f"Out-of-distribution rule: {floor.get('rule')} (refuses {_pct(floor.get('val_refused'))} of "
            "the validation images).",
        ]
    content_spec = cal.get("content_check")
    if content_spec:
        out += ["", *_content_lines(content_spec)]
    if (report / "reliability.png").exists():
        out += ["", "![reliability](report/reliability.png)"]
    out.append("")
    return out


def _ood_lines(cal: dict) -> list[str]:
    ood = cal.get("ood")
    if not ood:
        return []
    out = [
        "## Out-of-distribution behaviour",
        "",
        "Generated inputs that are not smears of this lab, run through the device's decision "
        '(this model alone). Wanted: "uncertain", never a confident malignant label.',
        "",
        "| probe | n | uncertain | confident malignant | confident benign | uncertain (max-prob alone) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    plain = cal.get("ood_max_probability_only") or {}
    for kind, r in ood.items():
        if isinstance(r, dict) and "n" in r:
            alt = plain.get(kind, {}).get("abstained")
            out.append(
                f"| {kind} | {r['n']} | {_pct(r['abstained'])} | {_pct(r['confident_malignant'])} | "
                f"{_pct(r['confident_benign'])} | {_pct(alt)} |"
            )
    out += [
        "",
        "The station's quality gate (focus, exposure, is-it-a-smear) rejects many of these "
        "before classification; the figures above are without it.",
        "",
    ]
    return out


def _ensemble_lines(ens: dict) -> list[str]:
    return [
        "## In the default ensemble",
        "",
        f"Soft vote of {', '.join(m['name'] for m in ens.get('models', []))} on the same test split "
        f"(n = {ens.get('n')}): accuracy **{_pct(ens.get('accuracy'))}**, macro-F1 "
        f"**{ens.get('macro_f1', 0):.4f}**, uncertain {ens.get('abstained', 0)} "
        f"({_pct(ens.get('abstain_rate'))}); accuracy on the rest "
        f"{_pct(ens.get('accuracy_when_not_abstained'))}. Reproduce: `smearscope evaluate` with one "
        "`--model` per bundle on the same test split folder.",
        "",
    ]


def _ensemble_ood_lines(ens_ood: dict) -> list[str]:
    out = [
        "Out-of-distribution probes through the ensemble (all its checks):",
        "",
        "| probe | n | uncertain | confident malignant | confident benign |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, r in ens_ood.items():
        if isinstance(r, dict) and "n" in r:
            out.append(
                f"| {kind} | {r['n']} | {_pct(r['abstained'])} | {_pct(r['confident_malignant'])} | "
                f"{_pct(r['confident_benign'])} |"
            )
    out.append("")
    return out


def _provenance_lines(prov: dict, tm: dict | None, base: dict | None, report: Path) -> list[str]:
    out = ["## Training and provenance", ""]
    if prov.get("dataset_citation"):
        out += [
            f"Dataset: {prov['dataset_citation']} Paper: Ghaderzadeh M, et al. Int J Intell Syst. "
            "2022;37:5113-5133. doi:10.1002/int.22753.",
            "",
        ]
    keys = (
        "run_id",
        "backbone",
        "size",
        "alpha",
        "weights",
        "seed",
        "recipe",
        "epochs",
        "training_seconds",
        "training_seconds_total",
        "stages",
        "init_model",
        "device",
        "data_fingerprint",
        "finished_at",
        "converted_at",
        "conversion_seconds",
    )
    for k in keys:
        if k in prov and prov[k] is not None:
            out.append(f"- {k.replace('_', ' ')}: `{prov[k]}`")
    if prov.get("software"):
        out.append("- software: " + ", ".join(f"{k} {v}" for k, v in prov["software"].items()))
    if tm:
        out += [
            "",
            "Keras float model on the test split (training report): "
            f"accuracy {_pct(tm.get('accuracy'))}, "
            f"macro-F1 {tm.get('macro_f1', 0):.4f}"
            + (f", macro ROC-AUC {tm['roc_auc_ovr_macro']:.4f}" if tm.get("roc_auc_ovr_macro") else "")
            + ".",
        ]
    if base:
        rows = [(k, v) for k, v in base.items() if isinstance(v, dict) and "accuracy" in v]
        if rows:
            out += [
                "",
                f"Fine-tuning versus classic classifiers on frozen features ({base.get('features', '')}):",
                "",
                "| model | accuracy | macro-F1 |",
                "| --- | --- | --- |",
            ]
            out += [f"| {k} | {_pct(v['accuracy'])} | {v['macro_f1']:.4f} |" for k, v in rows]
    if (report / "training_curves.png").exists():
        out += ["", "![training curves](report/training_curves.png)"]
    out.append("")
    return out


def render(bundle_dir: str | Path) -> str:
    bundle_dir = Path(bundle_dir)
    man = read_manifest(bundle_dir)
    report = bundle_dir / "report"
    met, ver, cal, prov = man.metrics, man.verification, man.calibration, man.provenance
    size = (bundle_dir / man.model_file).stat().st_size if (bundle_dir / man.model_file).exists() else 0
    out = _what_it_is(man, man.to_dict(), size)
    if met:
        out += _test_lines(man, met, report)
    if ver:
        out += _verification_lines(man, ver)
    if cal:
        out += _calibration_lines(man, cal, report)
        out += _ood_lines(cal)
    if cal and cal.get("ood_by_check"):
        out += _by_check_lines(cal["ood_by_check"])
    rob = _read_json(report / "robustness.json")
    if rob:
        out += _robustness_lines(rob, man.name)
    ens = _read_json(report / "ensemble.json")
    if ens:
        out += _ensemble_lines(ens)
    ens_ood = _read_json(report / "ensemble_ood.json")
    if ens_ood:
        out += _ensemble_ood_lines(ens_ood)
    tm = _read_json(report / "training_metrics.json")
    base = _read_json(report / "baselines.json")
    if prov or tm:
        out += _provenance_lines(prov, tm, base, report)
    out += ["---", "", DISCLAIMER, ""]
    return "\n".join(out)


def write_card(bundle_dir: str | Path) -> Path:
    path = Path(bundle_dir) / "MODEL.md"
    atomic_write_bytes(path, render(bundle_dir).encode("utf-8"))
    return path


def _scale_line(man, d: dict) -> str:
    """The physical scale the model was trained at, and how it was found."""
    if man.input.um_per_px is None:
        return (
            "- Physical scale: **unknown** (no `input.um_per_px`): the station cannot rescale frames to the "
            "model's scale nor check the magnification; re-convert with `--um-per-px`."
        )
    how = (d.get("provenance") or {}).get("um_per_px_method") or "given on the command line"
    line = (
        f"- Physical scale: {man.input.um_per_px:.4g} µm per pixel at the model's input size "
        f"({how}). Stations rescale each frame to it from their calibration profile."
    )
    if how.startswith("measured"):
        line += (
            " A red cell is taken as 7.5 µm (normal range about 6.2-8.2 µm), so the absolute value is good "
            "to about ±10%; a station calibrated with the same red-cell estimator is consistent with it."
        )
    return line


def _white_line(man) -> str:
    if man.cells is not None:
        return (
            "- Colour: the station white-references the whole frame before it cuts each cell's crop, as "
            "training cut its crops (`input.white_reference` is null: the crop already is referenced)."
        )
    if man.input.white_reference == "background":
        return (
            "- Colour: each image's bright smear background is mapped to neutral white before the model "
            "(`input.white_reference: background`), in training and on the station alike."
        )
    return "- Colour: raw camera colour (no white reference): trained before the white reference existed."


def _content_lines(spec: dict) -> list[str]:
    """The content check (convert/content.py) and its held-out-class test."""
    lines = [
        f"Content check: {spec.get('rule')}; threshold {spec.get('threshold', 0):.3f} "
        f"({spec.get('margin')} x the {spec.get('quantile')} quantile of the validation images' scores; "
        f"refuses {_pct(spec.get('val_flagged'))} of them). Statistics: {spec.get('statistics', 'n/a')}.",
    ]
    held = spec.get("held_out_class") or {}
    if held:
        lines += [
            "",
            "Held-out class test (statistics fitted WITHOUT one class; does the check fire on it?). The "
            "backbone still saw that class while it was trained, so this is optimistic for a cell type "
            "it truly never saw:",
            "",
            "| held-out class | flagged | seen classes' validation images flagged |",
            "| --- | --- | --- |",
        ]
        for label, r in held.items():
            lines.append(
                f"| {label} (n={r.get('n_held_out')}) | {_pct(r.get('held_out_flagged'))} | "
                f"{_pct(r.get('seen_val_flagged'))} |"
            )
    return lines


def _by_check_lines(by_check: dict) -> list[str]:
    sets = [
        k for k in ("all", "no_colour", "colour_only", "energy_only", "content_only", "none") if k in by_check
    ]
    lines = [
        'What each "unfamiliar" check catches on the probes above (this model alone): confident '
        "malignant / uncertain.",
        "",
        "| probe | " + " | ".join(sets) + " |",
        "| --- | " + " | ".join("---" for _ in sets) + " |",
    ]
    for kind in by_check.get("all", {}):
        cells = [
            f"{_pct(by_check[k][kind]['confident_malignant'])} / {_pct(by_check[k][kind]['abstained'])}"
            for k in sets
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _robustness_lines(rob: dict, name: str) -> list[str]:
    who = [w for w in (name, "ensemble") if w in rob["conditions"][0]["results"]]
    lines = [
        "## Robustness to acquisition shifts",
        "",
        f"The {rob.get('part', 'test')} split ({rob.get('n_images')} images) re-rendered under each shift "
        "(raw image, then the device's own preprocessing and decision); full table, probes and plot: "
        "[report/robustness.md](report/robustness.md) (`benchmarks/robustness.py`).",
        "",
        "| shift | severity | "
        + " | ".join(f"{w}: acc / uncertain / conf. wrong / conf. false benign" for w in who)
        + " |",
        "| --- | --- | " + " | ".join("---" for _ in who) + " |",
    ]
    for c in rob["conditions"]:
        if c["severity"] not in ("-", "mild"):
            continue
        cells = []
        for w in who:
            r = c["results"][w]
            cells.append(
                f"{_pct(r['accuracy'])} / {_pct(r['uncertain'])} / {_pct(r['confidently_wrong'])} / "
                f"{_pct(r['confident_false_benign'])}"
            )
        lines.append(f"| {c['shift']} | {c['severity']} ({c['description']}) | " + " | ".join(cells) + " |")
    probes = rob.get("ood_probes", {}).get("no_colour", {}).get("all")
    if probes:
        lines += [
            "",
            f"Out-of-distribution probes through the ensemble with the colour check OFF: confident "
            f"malignant {_pct(probes['confident_malignant'])} overall, worst probe kind "
            f"{_pct(probes.get('worst_kind_confident_malignant'))} (target <= 2%).",
        ]
    lines += [
        "",
        "![robustness](report/robustness.png)",
        "",
        "Still unknown: no second hospital's labelled B-ALL images exist here; every shift above is "
        "simulated on this lab's images, and the held-out test split is per image, not per patient.",
        "",
    ]
    return lines
