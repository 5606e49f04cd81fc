"""Run-directory reports: metrics (sklearn), plots (matplotlib), baselines, provenance."""

from __future__ import annotations

import csv
import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from device.fsutil import atomic_write_bytes  # noqa: E402

SPLIT_NOTE = (
    "Measured on a held-out test split drawn per image: the file names carry no patient ids, so images of "
    "one patient can sit in both train and test. Figures are optimistic for new patients."
)


def split_note(split) -> str:  # noqa: ANN001 - training.data.Split (kept import-light)
    """The caveat that fits how the split was drawn: per image (optimistic) or per group."""
    if split.grouped:
        detail = split.grouping or f"per group (--group-regex {split.group_regex!r})"
        return (
            f"Measured on a held-out test split drawn {detail}: a group's (slide's, patient's) images "
            "never sit on both sides."
        )
    return SPLIT_NOTE


def per_source_metrics(items: list, y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict:
    """Test figures per `--data` source (n, accuracy, macro-F1, per class, confusion matrix)."""
    out: dict = {}
    for name in sorted({it.source or "data" for it in items}):
        mask = np.array([(it.source or "data") == name for it in items])
        m = classification_metrics(y_true[mask], proba[mask], labels)
        out[name] = {
            k: m[k] for k in ("n", "accuracy", "macro_f1", "per_class", "confusion_matrix") if k in m
        }
    return out


def write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict:
    """accuracy, per-class precision/recall/F1, macro-F1, one-vs-rest ROC-AUC, confusion matrix."""
    k = len(labels)
    y_pred = proba.argmax(axis=1)
    idx = list(range(k))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    out: dict = {
        "split": "test",
        "split_note": SPLIT_NOTE,
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "labels": list(labels),
        "per_class": {
            lb: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lb in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }
    present = np.unique(y_true)
    if len(present) == k and k > 1:
        onehot = np.eye(k)[y_true]
        out["roc_auc_ovr"] = {
            lb: float(roc_auc_score(onehot[:, i], proba[:, i])) for i, lb in enumerate(labels)
        }
        out["roc_auc_ovr_macro"] = float(roc_auc_score(y_true, proba, multi_class="ovr", labels=idx))
    return out


def read_history(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def plot_curves(history: list[dict], path: str | Path, head_epochs: int) -> None:
    """Loss and accuracy per epoch (train and val); a dashed line where fine-tuning starts."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    if history:
        ep = [int(h["epoch"]) + 1 for h in history]
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            for prefix, style in (("", "-"), ("val_", "--")):
                vals = [float(h[prefix + key]) for h in history if h.get(prefix + key) not in (None, "")]
                if len(vals) == len(ep):
                    ax.plot(ep, vals, style, label=(prefix or "train_") + key)
            if head_epochs and head_epochs < len(ep):
                ax.axvline(head_epochs + 0.5, color="grey", ls=":", lw=1)
                ax.text(head_epochs + 0.7, ax.get_ylim()[1], "fine-tune", va="top", fontsize=8, color="grey")
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def baselines(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    labels: list[str],
    seed: int,
) -> dict:
    """SVM and random forest on the frozen (pooled) ImageNet features: the literature's hybrid approach."""
    models = {
        "svm_rbf": make_pipeline(StandardScaler(), SVC(C=10.0, kernel="rbf", random_state=seed)),
        "random_forest": RandomForestClassifier(n_estimators=300, n_jobs=2, random_state=seed),
    }
    out = {}
    for name, clf in models.items():
        t0 = time.perf_counter()
        clf.fit(train_x, train_y)
        # Hard predictions as one-hot "probabilities": accuracy and F1 only (no ROC-AUC for baselines).
        onehot = np.eye(len(labels))[clf.predict(test_x)]
        m = classification_metrics(test_y, onehot, labels)
        out[name] = {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "per_class_f1": {lb: v["f1"] for lb, v in m["per_class"].items()},
            "fit_seconds": round(time.perf_counter() - t0, 2),
        }
    return out


def software_versions() -> dict:
    import cv2
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
    }


def _source_lines(per_source: dict, dataset: dict) -> list[str]:
    """REPORT.md section: each `--data` source's images and its own test figures."""
    if not per_source:
        return []
    kinds = {s["name"]: s for s in dataset.get("sources", [])}
    lines = [
        "",
        "## Per source (test split)",
        "",
        "| source | kind | images (train/val/test) | test n | accuracy | macro-F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in per_source.items():
        counts = dataset.get("per_source", {}).get(name, {})
        n_parts = "/".join(str(sum(counts.get(p, {}).values())) for p in ("train", "val", "test"))
        kind = kinds.get(name, {}).get("kind", "")
        lines.append(
            f"| {name} | {kind} | {n_parts} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |"
        )
    dropped = {
        s["name"]: s["unknown_labels_dropped"]
        for s in dataset.get("sources", [])
        if s.get("unknown_labels_dropped")
    }
    dup = {
        s["name"]: s["duplicates_of_earlier_sources"]
        for s in dataset.get("sources", [])
        if s.get("duplicates_of_earlier_sources")
    }
    if dropped:
        lines += ["", f"Images dropped for labels the first source lacks (--drop-unknown-labels): {dropped}."]
    if dup:
        lines += ["", f"Images dropped as exact copies of an earlier source's: {dup}."]
    unreviewed = {
        s["name"]: s["unreviewed_model_calls"]
        for s in dataset.get("sources", [])
        if s.get("unreviewed_model_calls")
    }
    if unreviewed:
        lines += ["", f"Images labelled by the model's own call, not a technician's review: {unreviewed}."]
    return lines


def write_summary(run: Path, metrics: dict, base: dict | None, provenance: dict, dataset: dict) -> None:
    """A human-readable REPORT.md in the run dir setting the fine-tuned model beside the baselines."""
    lines = [
        f"# Training run `{run.name}`",
        "",
        "A screening aid for trained staff, not a diagnosis.",
        "",
        f"Backbone `{provenance['backbone']}` at {provenance['size']} px; "
        f"{provenance['epochs']['head']} head + {provenance['epochs']['finetune']} fine-tune epochs; "
        f"training took {provenance['training_seconds']:.0f} s on {provenance['device']}.",
        "",
        *(
            [
                f"Continued from `{provenance['continued_from']['run_id']}`: in total "
                f"{provenance['epochs_total']['head']} head + "
                f"{provenance['epochs_total']['finetune']} fine-tune epochs, "
                f"{provenance['training_seconds_total']:.0f} s of training.",
                "",
            ]
            if provenance.get("continued_from")
            else []
        ),
        f"Images: {dataset['counts']} (duplicates dropped: {dataset['duplicates_dropped']}). "
        f"Class weights: {dataset['class_weights']}.",
        "",
        "## Test split (Keras float model)",
        "",
        metrics.get("split_note", SPLIT_NOTE),
        "",
        "| model | accuracy | macro-F1 |",
        "| --- | --- | --- |",
        f"| fine-tuned {provenance['backbone']} | {metrics['accuracy']:.4f} | {metrics['macro_f1']:.4f} |",
    ]
    for name, b in (base or {}).items():
        lines.append(f"| {name} on frozen ImageNet features | {b['accuracy']:.4f} | {b['macro_f1']:.4f} |")
    lines += ["", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    for lb, v in metrics["per_class"].items():
        lines.append(f"| {lb} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |")
    lines += _source_lines(metrics.get("per_source") or {}, dataset)
    lines += [
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    atomic_write_bytes(run / "REPORT.md", "\n".join(lines).encode())
