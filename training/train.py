"""Two-phase transfer learning.

Phase 1 (head): backbone frozen. Without augmentation the backbone's pooled features are computed ONCE
for train/val and a head of the same shape (dropout + dense) is fitted on them, then its weights go into
the full model's classifier: minutes become seconds on a CPU.
Phase 2 (fine-tune): the top N backbone layers are unfrozen (BatchNorm stays frozen and in inference
mode), trained on augmented batches with a lower learning rate; the best epoch (val loss) is kept.
From scratch (`--weights none`), phase 1 instead trains the whole network with BatchNorm learning, then
sets BatchNorm's moving statistics from the training images.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from convert.augment import make_augmenter
from convert.card import plot_confusion
from device.datasets.folders import fingerprint
from device.errors import SmearscopeError
from training import report
from training.budget import BudgetSchedule
from training.data import (
    Split,
    class_weights,
    load_split,
    make_split,
    read_test_list,
    source_counts,
    split_counts,
)
from training.models import build_model, feature_extractor, is_scratch, recalibrate_batchnorm, set_finetune
from training.outlier_exposure import outlier_exposure
from training.pipeline import make_dataset
from training.scale import given_scale, measure_training_scale
from training.sources import parse_label_map

log = logging.getLogger("smearscope.train")

DATASET_CITATION = (
    'Aria M, Ghaderzadeh M, Bashash D, Abolghasemi H, Asadi F, Hosseini A. "Acute Lymphoblastic Leukemia '
    '(ALL) image dataset". Kaggle, 2021. DOI 10.34740/KAGGLE/DSV/2175623.'
)

#: Early stopping in the head phase waits at least this many epochs (the head converges noisily).
MIN_HEAD_PATIENCE = 5
#: ReduceLROnPlateau (`--schedule plateau`): the factor and the epochs without progress before it acts.
PLATEAU_FACTOR = 0.3
PLATEAU_PATIENCE = 2
#: Images per batch when BatchNorm's statistics are set from the training images (from scratch).
BATCHNORM_RECALIBRATION_IMAGES = 256
#: The linear warm-up starts at the base learning rate divided by this.
WARMUP_START_DIVISOR = 100
#: Cosine decay ends at this fraction of the base learning rate.
COSINE_FINAL_FRACTION = 0.05
PARTS = ("train", "val", "test")


@dataclass
class TrainConfig:
    data: str | list[str] | None  # one folder, or several sources (see training/sources.py)
    out: str
    backbone: str = "mobilenetv2"
    weights: str | None = None
    size: int = 224
    alpha: float = 1.0
    resize: str = "center_crop"
    white_reference: str | None = "background"
    um_per_px: float | None = None
    split: str | None = None
    seed: int = 42
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    group_regex: str | None = None
    keep_test: str | None = None  # an earlier bundle (or its report/test_split.txt) whose test split to keep
    label_map: list[str] | None = None  # ["FROM=TO", ...] applied to every source's folder names
    drop_unknown_labels: bool = False  # drop a later source's labels the first source lacks
    batch: int = 32
    epochs_head: int = 30
    epochs_finetune: int = 10
    finetune_layers: int = 50
    lr_head: float = 1e-3
    lr_finetune: float = 3e-5
    warmup_epochs: float = 1.0
    optimizer: str = "adam"
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    patience: int = 5
    dropout: float = 0.2
    head_augment: bool = False
    augment_strength: float = 1.0
    colour_strength: float = 1.0
    augment: str = "robust"
    augment_skip: str = ""
    finetune_minutes: float | None = None
    class_weighting: bool = True
    strategy: str = "auto"
    mixed_precision: bool = False
    baselines: bool = True
    init_model: str | None = None
    dataset_citation: str = DATASET_CITATION
    verbose: int = 1
    eager: bool = False  # Keras run_eagerly: no graph tracing (tiny runs: tests, smoke checks)
    outlier_exposure: float = 0.0  # fraction of each augmented batch re-coloured far, uniform label
    outlier_channel_share: float = 0.5  # of those, per-channel OD re-colourings (the rest: H&E amounts)
    gamma_max: float = 1.3  # top of the robust recipe's gamma range (convert/augment.py)
    white_residual: float = 0.0  # fraction of images given an imperfect white reference's cast


def _strategy(name: str) -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _optimizer(name: str, lr) -> keras.optimizers.Optimizer:
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamax":
        return keras.optimizers.Adamax(lr)
    raise SmearscopeError(f"unknown optimizer {name!r} (adam or adamax)")


def _lr(cfg: TrainConfig, base: float, epochs: int, steps: int, warmup_epochs: float = 0.0):
    """Cosine decay (after a linear warm-up from base/100: Adam's first steps on freshly unfrozen
    layers otherwise knock the pretrained weights off), or a constant for ReduceLROnPlateau."""
    warmup = int(warmup_epochs * steps)
    if cfg.schedule == "cosine":
        if warmup:
            return keras.optimizers.schedules.CosineDecay(
                base / WARMUP_START_DIVISOR,
                max(1, epochs * steps - warmup),
                alpha=COSINE_FINAL_FRACTION,
                warmup_target=base,
                warmup_steps=warmup,
            )
        return keras.optimizers.schedules.CosineDecay(
            base, decay_steps=max(1, epochs * steps), alpha=COSINE_FINAL_FRACTION
        )
    if cfg.schedule in ("plateau", "constant"):
        return base
    raise SmearscopeError(f"unknown schedule {cfg.schedule!r} (cosine, plateau or constant)")


def _prepare_split(cfg: TrainConfig, run: Path) -> Split:
    if cfg.split:
        split = load_split(cfg.split)
        log.info("reusing split %s", cfg.split)
    else:
        if not cfg.data:
            raise SmearscopeError("give --data DIR (or --split FILE)")
        fractions = {
            "train": 1 - cfg.val_fraction - cfg.test_fraction,
            "val": cfg.val_fraction,
            "test": cfg.test_fraction,
        }
        split = make_split(
            cfg.data,
            seed=cfg.seed,
            fractions=fractions,
            group_regex=cfg.group_regex,
            label_map=parse_label_map(cfg.label_map),
            drop_unknown_labels=cfg.drop_unknown_labels,
            test_list=read_test_list(cfg.keep_test) if cfg.keep_test else None,
        )
    split.save(run / "split.json")
    return split


def _training_scale(cfg: TrainConfig, split: Split) -> dict:
    """The training images' µm/px at the model's input size: given (--um-per-px), else measured from
    their red cells (training/scale.py)."""
    if cfg.um_per_px is not None:
        return given_scale(cfg.um_per_px)
    log.info("measuring the training images' scale from their red cells")
    scale = measure_training_scale(split.paths("train"), (cfg.size, cfg.size), cfg.resize, seed=cfg.seed)
    if scale["um_per_px"] is None:
        log.warning("scale unknown: %s", scale["method"])
    else:
        log.info("training images: %.4g µm/px at %d px (%s)", scale["um_per_px"], cfg.size, scale["method"])
    return scale


def _predict(model: keras.Model, ds: tf.data.Dataset, verbose: int) -> np.ndarray:
    return np.asarray(model.predict(ds, verbose=verbose))


@dataclass
class _Data:
    """The split's datasets as both phases and the evaluation read them."""

    batch: int  # global batch (per-replica batch x replicas)
    common: dict  # make_dataset's keyword arguments every dataset shares
    y: dict[str, np.ndarray]  # label ids per part
    plain: dict[str, tf.data.Dataset]  # unlabelled, unaugmented batches per part
    train_aug: tf.data.Dataset  # the augmented, shuffled training batches
    val: tf.data.Dataset  # labelled validation batches
    class_weight: dict[int, float] | None  # balanced class weights (None: --no-class-weighting)
    fit_class_weight: dict[int, float] | None  # what fit gets with train_aug (None when OE carries them)


@dataclass
class _Run:
    """One training run's fixed parts, shared by its phases."""

    cfg: TrainConfig
    dir: Path
    strategy: tf.distribute.Strategy
    split: Split
    labels: list[str]
    data: _Data
    loss: keras.losses.Loss
    tensorboard: keras.callbacks.Callback
    csv_logger: keras.callbacks.Callback
    timings: dict[str, float]
    features: dict[str, np.ndarray]  # frozen-backbone pooled features per part (when extracted)

    @property
    def k(self) -> int:
        return len(self.labels)

    def steps(self) -> int:
        return int(np.ceil(len(self.data.y["train"]) / self.data.batch))

    def compile(self, model: keras.Model, lr) -> None:
        with self.strategy.scope():
            model.compile(
                optimizer=_optimizer(self.cfg.optimizer, lr),
                loss=self.loss,
                metrics=["accuracy"],
                run_eagerly=self.cfg.eager,
            )


def _set_up_devices(cfg: TrainConfig) -> tuple[tf.distribute.Strategy, list]:
    """Seed, mixed precision (GPU only) and the distribution strategy; also the GPUs seen."""
    keras.utils.set_random_seed(cfg.seed)
    gpus = tf.config.list_physical_devices("GPU")
    if cfg.mixed_precision:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log.warning("--mixed-precision ignored: no GPU")
    return _strategy(cfg.strategy), gpus


def _write_dataset_report(run: Path, split: Split, cw: dict[int, float] | None) -> dict:
    labels = split.labels
    dataset_report = {
        "labels": labels,
        "counts": split_counts(split),
        "duplicates_dropped": split.scan_report.get("duplicates_dropped", 0),
        "conflicting_duplicates": split.scan_report.get("conflicting_duplicates", []),
        "class_weights": {labels[i]: round(w, 4) for i, w in (cw or {}).items()},
        "class_weighting": "balanced (n / (K * n_k)) on the training split" if cw else "none",
        "split_note": report.split_note(split),
        "per_source": source_counts(split),
        "sources": split.scan_report.get("sources", []),
    }
    report.write_json(run / "dataset_report.json", dataset_report)
    log.info("split: %s; class weights %s", dataset_report["counts"], dataset_report["class_weights"])
    return dataset_report


def _make_data(cfg: TrainConfig, split: Split, cw: dict[int, float] | None, replicas: int) -> _Data:
    k = len(split.labels)
    batch = cfg.batch * replicas
    common = {"size": cfg.size, "num_classes": k, "batch": batch, "seed": cfg.seed, "resize": cfg.resize}
    common["white_reference"] = cfg.white_reference
    y = {p: split.label_ids(p) for p in PARTS}
    plain = {p: make_dataset(split.paths(p), None, **common) for p in PARTS}
    aug = make_augmenter(
        cfg.seed,
        cfg.augment_strength,
        cfg.colour_strength,
        recipe=cfg.augment,
        skip=[c for c in cfg.augment_skip.split(",") if c],
        gamma_max=cfg.gamma_max,
        white_residual=cfg.white_residual,
    )
    pairs = None
    if cfg.outlier_exposure > 0:
        # the class weights travel as sample weights (a uniform label has no class): fit gets none
        weights = [cw[i] for i in range(k)] if cw else None
        pairs = outlier_exposure(cfg.outlier_exposure, weights, cfg.outlier_channel_share)
    train_aug = make_dataset(
        split.paths("train"), y["train"], shuffle=True, augment=aug, pairs=pairs, **common
    )
    val = make_dataset(split.paths("val"), y["val"], **common)
    fit_cw = None if pairs is not None else cw
    return _Data(batch, common, y, plain, train_aug, val, cw, fit_cw)


def _initial_model(cfg: TrainConfig, strategy: tf.distribute.Strategy, k: int) -> keras.Model:
    """A new model of the backbone, or an earlier run's model.keras (`--init-model`: no head phase)."""
    with strategy.scope():
        if not cfg.init_model:
            return build_model(
                cfg.backbone, k, size=cfg.size, alpha=cfg.alpha, weights=cfg.weights, dropout=cfg.dropout
            )
        # Continue from an earlier run's model.keras (e.g. more fine-tuning epochs): no head phase.
        model = keras.models.load_model(cfg.init_model)
    if model.output.shape[-1] != k:
        raise SmearscopeError(f"{cfg.init_model}: has {model.output.shape[-1]} outputs, split has {k} labels")
    cfg.epochs_head = 0
    return model


def _extract_features(r: _Run, model: keras.Model) -> None:
    t = time.perf_counter()
    extractor = feature_extractor(model)
    for part in PARTS:
        log.info("extracting frozen features: %s (%d images)", part, len(r.split.parts[part]))
        r.features[part] = _predict(extractor, r.data.plain[part], r.cfg.verbose)
    r.timings["feature_extraction_s"] = round(time.perf_counter() - t, 1)


def _fit_head_on_images(r: _Run, model: keras.Model, scratch: bool, stop: keras.callbacks.Callback):
    """The whole model on image batches: augmented with the backbone frozen, or every layer from
    random weights."""
    cfg, d = r.cfg, r.data
    r.compile(model, _lr(cfg, cfg.lr_head, cfg.epochs_head, r.steps()))
    train_ds = (
        d.train_aug
        if cfg.head_augment
        else make_dataset(r.split.paths("train"), d.y["train"], shuffle=True, **d.common)
    )
    # From scratch, no early stopping: until BatchNorm is recalibrated, validation in inference mode
    # is meaningless.
    return model.fit(
        train_ds,
        validation_data=d.val,
        epochs=cfg.epochs_head,
        class_weight=d.fit_class_weight if cfg.head_augment else d.class_weight,
        callbacks=[r.csv_logger, r.tensorboard] if scratch else [stop, r.csv_logger, r.tensorboard],
        verbose=cfg.verbose,
    )


def _fit_head_on_features(r: _Run, model: keras.Model, stop: keras.callbacks.Callback):
    """A head of the classifier's shape fitted on the frozen features, its weights copied into the
    model's classifier (seconds instead of minutes on a CPU)."""
    cfg, d, k = r.cfg, r.data, r.k
    with r.strategy.scope():
        head_in = keras.Input((r.features["train"].shape[1],), name="features")
        h = keras.layers.Dropout(cfg.dropout, name="dropout")(head_in)
        h = keras.layers.Dense(k, activation="softmax", name="classifier")(h)
        head = keras.Model(head_in, h, name="head")
    r.compile(head, _lr(cfg, cfg.lr_head, cfg.epochs_head, r.steps()))
    onehot = np.eye(k, dtype="float32")
    hist = head.fit(
        r.features["train"],
        onehot[d.y["train"]],
        validation_data=(r.features["val"], onehot[d.y["val"]]),
        epochs=cfg.epochs_head,
        batch_size=d.batch,
        class_weight=d.class_weight,
        callbacks=[stop, r.csv_logger, r.tensorboard],
        verbose=2 if cfg.verbose else 0,
    )
    model.get_layer("classifier").set_weights(head.get_layer("classifier").get_weights())
    return hist


def _head_phase(r: _Run, model: keras.Model, scratch: bool) -> int:
    """Phase 1, the backbone frozen (or, from scratch, the whole network); returns the epochs run."""
    cfg = r.cfg
    if not scratch and (cfg.baselines or (cfg.epochs_head > 0 and not cfg.head_augment)):
        _extract_features(r, model)
    epochs = 0
    if cfg.epochs_head > 0:
        t = time.perf_counter()
        stop = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=max(cfg.patience, MIN_HEAD_PATIENCE), restore_best_weights=True
        )
        if scratch or cfg.head_augment:
            hist = _fit_head_on_images(r, model, scratch, stop)
        else:
            hist = _fit_head_on_features(r, model, stop)
        epochs = len(hist.history["loss"])
        r.timings["head_s"] = round(time.perf_counter() - t, 1)
    if scratch:
        # A few hundred steps leave BatchNorm's moving statistics near their initial values
        # (momentum 0.999): set them from the training images before any inference-mode use.
        first = r.data.plain["train"].unbatch().batch(max(r.data.batch, BATCHNORM_RECALIBRATION_IMAGES))
        recalibrate_batchnorm(model, next(iter(first)))
        if cfg.baselines:
            _extract_features(r, model)
    return epochs


def _finetune_callbacks(r: _Run, best_path: Path, budget: BudgetSchedule | None) -> list:
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_loss", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=r.cfg.patience, restore_best_weights=True),
        r.csv_logger,
        r.tensorboard,
    ]
    if budget is not None:
        callbacks.insert(0, budget)
    elif r.cfg.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
            )
        )
    return callbacks


def _finetune_phase(r: _Run, model: keras.Model, head_epochs: int) -> tuple[keras.Model, int]:
    """Phase 2: the top of the backbone unfrozen; the best epoch's model (saved as model.keras) and
    the epochs run."""
    cfg = r.cfg
    best_path = r.dir / "model.keras"
    if cfg.epochs_finetune <= 0 or cfg.finetune_layers <= 0:
        model.save(best_path)
        return model, 0
    t = time.perf_counter()
    with r.strategy.scope():
        unfrozen = set_finetune(model, cfg.finetune_layers)
    steps = r.steps()
    budget = None
    if cfg.finetune_minutes is not None:
        # The learning rate is set per step by BudgetSchedule (cosine over the epochs that fit).
        budget = BudgetSchedule(
            cfg.lr_finetune, cfg.epochs_finetune, steps, cfg.finetune_minutes * 60, cfg.warmup_epochs
        )
        lr = cfg.lr_finetune / WARMUP_START_DIVISOR
    else:
        lr = _lr(cfg, cfg.lr_finetune, cfg.epochs_finetune, steps, cfg.warmup_epochs)
    r.compile(model, lr)
    log.info("fine-tuning %d weighted layers of the backbone (BatchNorm frozen)", unfrozen)
    hist = model.fit(
        r.data.train_aug,
        validation_data=r.data.val,
        epochs=head_epochs + cfg.epochs_finetune,
        initial_epoch=head_epochs,
        class_weight=r.data.fit_class_weight,
        callbacks=_finetune_callbacks(r, best_path, budget),
        verbose=cfg.verbose,
    )
    r.timings["finetune_s"] = round(time.perf_counter() - t, 1)
    # EarlyStopping restores the best weights only when it stops early: reload the checkpoint.
    return keras.models.load_model(best_path), len(hist.history["loss"])


def _evaluate_test(r: _Run, model: keras.Model, head_epochs: int) -> dict:
    """The model on the test split: metrics.json, the probabilities, the confusion matrix and curves."""
    cfg, run, labels, y_test = r.cfg, r.dir, r.labels, r.data.y["test"]
    proba = _predict(model, r.data.plain["test"], cfg.verbose)
    metrics = report.classification_metrics(y_test, proba, labels)
    metrics["split_note"] = report.split_note(r.split)
    metrics["model"] = "keras float32 (model.keras)"
    metrics["per_source"] = report.per_source_metrics(r.split.parts["test"], y_test, proba, labels)
    report.write_json(run / "metrics.json", metrics)
    np.save(run / "test_probabilities.npy", proba.astype("float32"))
    plot_confusion(
        metrics["confusion_matrix"],
        labels,
        run / "confusion_matrix.png",
        f"{cfg.backbone} test split (n={metrics['n']}, acc {metrics['accuracy']:.4f})",
    )
    report.plot_curves(report.read_history(run / "history.csv"), run / "training_curves.png", head_epochs)
    return metrics


def _baselines(r: _Run, metrics: dict) -> dict | None:
    """Classical classifiers on the frozen features beside the fine-tuned model (`--baselines`)."""
    if not r.cfg.baselines:
        return None
    y = r.data.y
    base = report.baselines(
        r.features["train"], y["train"], r.features["test"], y["test"], r.labels, r.cfg.seed
    )
    base["features"] = f"pooled ImageNet {r.cfg.backbone} features (frozen backbone, no augmentation)"
    base["fine_tuned"] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    report.write_json(r.dir / "baselines.json", base)
    return base


@dataclass
class _Outcome:
    """What the phases did, for provenance.json."""

    scale: dict
    head_epochs: int
    finetune_epochs: int
    training_seconds: float
    gpus: list
    replicas: int


def _provenance(r: _Run, o: _Outcome) -> dict:
    cfg, split = r.cfg, r.split
    items = split.all_items()
    return {
        "run_id": r.dir.name,
        "backbone": cfg.backbone,
        "size": cfg.size,
        "alpha": cfg.alpha,
        "weights": cfg.weights,
        "init_model": cfg.init_model,
        "data": cfg.data,
        "data_fingerprint": fingerprint(items),
        "dataset_citation": cfg.dataset_citation,
        "split_file": "split.json",
        "split_note": report.split_note(split),
        "sources": {
            name: fingerprint([it for it in items if (it.source or "data") == name])
            for name in sorted({it.source or "data" for it in items})
        },
        "seed": cfg.seed,
        "um_per_px": cfg.um_per_px,
        "um_per_px_method": o.scale["method"],
        "scale": o.scale,
        "epochs": {"head": o.head_epochs, "finetune": o.finetune_epochs},
        "training_seconds": round(o.training_seconds, 1),
        "timings": r.timings,
        "device": f"{len(o.gpus)} GPU(s)" if o.gpus else "CPU",
        "replicas": o.replicas,
        "software": report.software_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _add_continued_from(provenance: dict, init_model: str | None, o: _Outcome, run_id: str) -> None:
    """A run continued from `--init-model` carries the earlier stages and the totals."""
    prev_path = Path(init_model).parent / "provenance.json" if init_model else None
    if not (prev_path and prev_path.is_file()):
        return
    prev = json.loads(prev_path.read_text())
    provenance["continued_from"] = {
        k: prev.get(k) for k in ("run_id", "epochs", "training_seconds", "timings")
    }
    prev_seconds = prev.get("training_seconds_total", prev.get("training_seconds", 0))
    provenance["training_seconds_total"] = round(o.training_seconds + prev_seconds, 1)
    provenance["stages"] = [
        *prev.get("stages", [{k: prev.get(k) for k in ("run_id", "epochs", "training_seconds")}]),
        {
            "run_id": run_id,
            "epochs": provenance["epochs"],
            "training_seconds": provenance["training_seconds"],
        },
    ]
    prev_epochs = prev.get("epochs_total", prev.get("epochs", {}))
    provenance["epochs_total"] = {
        "head": prev_epochs.get("head", 0),
        "finetune": prev_epochs.get("finetune", 0) + o.finetune_epochs,
    }


def _summarise(r: _Run, metrics: dict, base: dict | None, provenance: dict, dataset_report: dict) -> None:
    shown = {
        k: v for k, v in (base or {}).items() if isinstance(v, dict) and "macro_f1" in v and k != "fine_tuned"
    }
    report.write_summary(r.dir, metrics, shown, provenance, dataset_report)
    log.info(
        "test accuracy %.4f macro-F1 %.4f (%d images); %s",
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["n"],
        json.dumps({k: v["accuracy"] for k, v in shown.items()}),
    )


def train(cfg: TrainConfig) -> dict:
    """Run both phases and write the run directory. Returns the test metrics."""
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    strategy, gpus = _set_up_devices(cfg)
    replicas = strategy.num_replicas_in_sync

    split = _prepare_split(cfg, run)
    labels = split.labels
    scale = _training_scale(cfg, split)
    cfg.um_per_px = scale["um_per_px"]
    report.write_json(run / "config.json", {**asdict(cfg), "labels": labels, "num_classes": len(labels)})
    cw = class_weights(split) if cfg.class_weighting else None
    dataset_report = _write_dataset_report(run, split, cw)
    data = _make_data(cfg, split, cw, replicas)

    model = _initial_model(cfg, strategy, len(labels))
    # From random weights (`--weights none`) phase 1 trains the whole network, BatchNorm included:
    # a frozen random backbone gives features no head can separate.
    scratch = not cfg.init_model and is_scratch(cfg.weights)
    if (run / "history.csv").exists():
        (run / "history.csv").unlink()
    r = _Run(
        cfg,
        run,
        strategy,
        split,
        labels,
        data,
        keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False, profile_batch=0),
        keras.callbacks.CSVLogger(str(run / "history.csv"), append=True),
        timings={},
        features={},
    )
    t0 = time.perf_counter()
    head_epochs = _head_phase(r, model, scratch)
    model, finetune_epochs = _finetune_phase(r, model, head_epochs)
    outcome = _Outcome(scale, head_epochs, finetune_epochs, time.perf_counter() - t0, gpus, replicas)

    metrics = _evaluate_test(r, model, head_epochs)
    base = _baselines(r, metrics)
    provenance = _provenance(r, outcome)
    _add_continued_from(provenance, cfg.init_model, outcome, run.name)
    report.write_json(run / "provenance.json", provenance)
    _summarise(r, metrics, base, provenance, dataset_report)
    return metrics
