"""`convert_run`: a training run dir -> a verified, calibrated, documented model bundle.

Steps: load `model.keras` (+ CAM output) -> TFLite (representative data from the TRAINING split) ->
stage the bundle -> run it with the device code on the validation split (temperature, threshold) and
the test split (metrics, agreement with Keras, float32 reference) -> OOD probes -> manifest, MODEL.md,
report/ -> swap the staged bundle into place. Nothing in the target directory changes until the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert import calibrate as cal
from convert import cameras, card, ood, outliers, verify
from convert.bundle import update_manifest, write_bundle
from device.datasets.metrics import report as metrics_report
from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes
from device.models.bundle import load_bundle
from device.models.ensemble import Ensemble, apply_temperature
from device.models.model import TFLiteModel
from device.preprocess import read_image

log = logging.getLogger("smearscope.convert")

SPLIT_NOTE = (
    "Held-out test split drawn per image: the file names carry no patient ids, so images of one patient "
    "can sit in both train and test; one hospital, one camera. Figures are optimistic for new patients."
)
INT8_MAX_RATIO = 0.33
#: Unfamiliar images added to the int8 representative data when the model has a content check
#: (convert/tflite.representative_images), as a fraction of the familiar ones (12 for the default 300;
#: more widen the backbone's int8 ranges and cost test accuracy), and the headroom its output must keep
#: above the threshold.
UNFAMILIAR_FRACTION = 0.04
CONTENT_HEADROOM = 1.2
#: About this many training images fit the colour check (the training split is sampled evenly down
#: to it: enough for its colour statistics, bounded memory).
COLOUR_FIT_IMAGES = 600


def split_note(split: dict) -> str:
    """The card's caveat: per image (optimistic) unless the run split by group (training/data.py)."""
    if str(split.get("note") or "").startswith("per-group"):
        detail = split.get("grouping") or "per group"
        return f"Held-out test split drawn {detail}: a group's (slide's, patient's) images sit on one side."
    return SPLIT_NOTE


@dataclass
class RunDir:
    path: Path
    config: dict
    split: dict

    @property
    def labels(self) -> list[str]:
        return list(self.split["labels"])

    @property
    def size(self) -> tuple[int, int]:
        s = int(self.config["size"])
        return (s, s)

    @property
    def resize(self) -> str:
        return str(self.config.get("resize", "center_crop"))

    @property
    def data_roots(self) -> list[Path]:
        """The run's dataset folder(s): `data` is one path, or a list when it combined sources."""
        data = self.config.get("data") or "."
        return [Path(d) for d in (data if isinstance(data, list) else [data])]

    @property
    def white_reference(self) -> str | None:
        """The run's white reference; a config without one means raw camera colour (None)."""
        return self.config.get("white_reference")

    @property
    def um_per_px(self) -> float | None:
        value = self.config.get("um_per_px")
        return float(value) if value is not None else None

    def load_arrays(self, paths) -> np.ndarray:
        """The run's own preprocessing of `paths` (size, resize, white reference)."""
        return verify.load_arrays(paths, self.size, self.resize, white_reference=self.white_reference)

    def part(self, name: str) -> tuple[list[Path], np.ndarray]:
        """(paths, label indices) of a split part, checking the files are there."""
        rows = self.split.get(name) or []
        paths, missing = [], []
        for r in rows:
            p = Path(r["path"])
            if not p.is_absolute() and not p.exists():
                p = next((q for q in (root / r["path"] for root in self.data_roots) if q.exists()), p)
            (paths if p.exists() else missing).append(p)
        if missing:
            raise SmearscopeError(
                f"{self.path}/split.json: {len(missing)} {name} image(s) not found, e.g. {missing[0]} "
                "(is the dataset where the run was trained?)"
            )
        index = {lb: i for i, lb in enumerate(self.labels)}
        return paths, np.array([index[r["label"]] for r in rows], dtype=np.int64)


def read_run(run_dir: str | Path) -> RunDir:
    run = Path(run_dir)
    for name in ("config.json", "split.json", "model.keras"):
        if not (run / name).is_file():
            raise SmearscopeError(f"{run}: no {name} (not a finished `smearscope train` run dir)")
    return RunDir(
        run, json.loads((run / "config.json").read_text()), json.loads((run / "split.json").read_text())
    )


def architecture_name(config: dict) -> str:
    bb = str(config.get("backbone", "unknown"))
    if bb == "mobilenetv2" and config.get("alpha"):
        bb = f"MobileNetV2 (alpha {config['alpha']})"
    elif bb == "efficientnet-lite0":
        bb = "EfficientNet-Lite0"
    return f"{bb} + GAP + dropout + dense softmax, {config.get('size')} px"


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _staged_bundle(
    tmp: Path,
    tflite: bytes,
    run: RunDir,
    name: str,
    quantization: str,
    input_dtype: str,
    um_per_px: float | None = None,
) -> Path:
    out = tmp / name
    write_bundle(
        out,
        tflite,
        name=name,
        architecture=architecture_name(run.config),
        labels=run.labels,
        input_size=run.size,
        data_roots=run.data_roots,
        input_dtype=input_dtype,
        resize=run.resize,
        white_reference=run.white_reference,
        um_per_px=um_per_px if um_per_px is not None else run.um_per_px,
        quantization=quantization,
    )
    return out


#: Images per `predict` call when embedding (bounds the memory of the mid-layer features).
EMBED_BATCH = 32
#: Each score's scale is this quantile of its distances on the clean validation split.
SCALE_QUANTILE = 0.99
#: Offsets from the run's seed for the random far re-colourings and camera copies, and the fixed seed
#: of the validation split's re-colourings: each draw repeats from one conversion to the next.
OUTLIER_SEED_OFFSET = 7
CAMERA_SEED_OFFSET = 11
VAL_RECOLOUR_SEED = 12345


def _run_augmenter(run):
    """The run's own training augmentation (convert/augment.py), with TensorFlow seeded by the run."""
    import tensorflow as tf

    from convert.augment import make_augmenter

    cfg = run.config
    augment = make_augmenter(
        int(cfg.get("seed", 0)),
        float(cfg.get("augment_strength", 1.0)),
        float(cfg.get("colour_strength", 1.0)),
        recipe=str(cfg.get("augment", "robust")),
        skip=[s for s in str(cfg.get("augment_skip") or "").split(",") if s],
    )
    tf.random.set_seed(int(cfg.get("seed", 0)))
    return augment


@dataclass
class _Collected:
    """Features of the training images and their copies, batch by batch, in the order they were drawn."""

    n_layers: int
    pooled: list[np.ndarray] = field(default_factory=list)  # pooled features of the images as they are
    clean: list[list[np.ndarray]] = field(init=False)  # per layer: the images as they are
    augmented: list[list[np.ndarray]] = field(init=False)  # per layer: their copies
    copies_y: list[np.ndarray] = field(default_factory=list)  # the labels of the copies' batches
    pooled_aug: list[np.ndarray] = field(default_factory=list)  # pooled, copies (outlier head: familiar)
    pooled_far: list[np.ndarray] = field(default_factory=list)  # pooled, far re-colourings (outliers)

    def __post_init__(self) -> None:
        self.clean = [[] for _ in range(self.n_layers)]
        self.augmented = [[] for _ in range(self.n_layers)]


def _collect_features(
    run,
    embed,
    paths: list,
    y: np.ndarray,
    n_layers: int,
    augment,
    *,
    batch: int,
    with_outliers: bool,
    with_cameras: int,
    progress: bool,
) -> _Collected:
    """Embed the training images, one augmented copy of each (when `augment`), `with_cameras` camera
    copies of each, and (`with_outliers`) outliers.COPIES far re-colourings of each."""
    from tqdm import tqdm

    c = _Collected(n_layers)
    seed = int(run.config.get("seed", 0))
    rng = np.random.default_rng(seed + OUTLIER_SEED_OFFSET)
    camera_rng = np.random.default_rng(seed + CAMERA_SEED_OFFSET)
    for i in tqdm(range(0, len(paths), batch), desc="content stats", disable=not progress):
        arrays = run.load_arrays(paths[i : i + batch])
        got = embed(arrays)
        c.pooled.append(got[0])
        if augment is not None:
            import tensorflow as tf

            aug = np.clip(augment(tf.constant(arrays.astype(np.float32))).numpy(), 0, 255).astype(np.uint8)
            got_aug = embed(aug)
            c.pooled_aug.append(got_aug[0])
            for j, f in enumerate(got_aug[1:]):
                c.clean[j].append(got[1 + j])
                c.augmented[j].append(f)
            c.copies_y.append(y[i : i + batch])
        for _ in range(with_cameras):
            shots = cameras.camera_copies(
                paths[i : i + batch], camera_rng, run.size, run.resize, run.white_reference
            )
            got_cam = embed(shots)
            c.pooled_aug.append(got_cam[0])
            for j, f in enumerate(got_cam[1:]):
                c.augmented[j].append(f)
            c.copies_y.append(y[i : i + batch])
        if with_outliers:
            for _ in range(outliers.COPIES):
                c.pooled_far.append(embed(outliers.recolour(arrays, rng, run.white_reference))[0])
    return c


def _outlier_head(run, embed, c: _Collected, pooled_a: np.ndarray, val_arrays: np.ndarray, val0: np.ndarray):
    """The stain-outlier head (convert/outliers.py) on the images and copies vs their far re-colourings,
    with how often it fires on the clean and re-coloured validation split."""
    head = outliers.fit(np.concatenate([pooled_a, *c.pooled_aug]), np.concatenate(c.pooled_far), val0)
    far_rng = np.random.default_rng(VAL_RECOLOUR_SEED)
    val_far = embed(outliers.recolour(val_arrays, far_rng, run.white_reference))[0]
    head["validation"] = {  # the step's half height: where it fires whatever the final threshold
        "clean_fired": float((outliers.scores(val0, head) > outliers.CAP / 2).mean()),
        "far_fired": float((outliers.scores(val_far, head) > outliers.CAP / 2).mean()),
        "n": len(val_arrays),
    }
    log.info("stain-outlier head: %s", head["validation"])
    return head


def _stride_statistics(content, c: _Collected, layers: list, y: np.ndarray, val: list, k: int) -> list[dict]:
    """Per stride layer: class statistics of the images and their copies, scaled on the validation split."""
    mid_stats = []
    for j, layer in enumerate(layers):
        st = content.fit_statistics(
            np.concatenate(c.clean[j] + c.augmented[j]), np.concatenate([y, *c.copies_y]), k
        )
        st["layer"] = layer
        st["scale"] = float(np.quantile(content.distances(val[1 + j], st), SCALE_QUANTILE))
        mid_stats.append(st)
    return mid_stats


def _content_statistics(
    run,
    model,
    every: int,
    strides: tuple[int, ...],
    progress: bool,
    batch: int = 64,
    with_outliers: bool = False,
    with_cameras: int = 0,
) -> tuple[dict, list[dict], dict, dict | None]:
    """The content check's statistics (convert/content.py): pooled-embedding class means/covariance on
    every `every`-th training image (as preprocessed), and for each of `strides` those of the backbone's
    features at that stride on the same images plus one copy of each through the run's own training
    augmentation; each score's scale is its 99% quantile on the clean validation split. Also the
    held-out-class figures (pooled), and with `with_outliers` the stain-outlier head (convert/outliers.py)
    fitted on the same images, their augmented copies and COPIES far re-colourings of each. With
    `with_cameras` = N, N camera copies of each image (convert/cameras.py) join the augmented copies on
    the familiar side of the stride statistics and the stain-outlier head."""
    from convert import content

    paths, y = run.part("train")
    paths, y = paths[:: max(1, every)], y[:: max(1, every)]
    val_paths, y_val = run.part("val")
    k = len(run.labels)
    layers = [content.mid_layer(model, s) for s in strides]
    feats = content.feature_model(model, layers) if layers else content.embedding_model(model)
    augment = _run_augmenter(run) if layers or with_outliers else None

    def embed(arrays: np.ndarray) -> list[np.ndarray]:
        out = feats.predict(arrays.astype(np.float32), batch_size=EMBED_BATCH, verbose=0)
        return [np.asarray(o, np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]

    log.info("content check: features of %d training images, layers %s", len(paths), layers or "pooled")
    c = _collect_features(
        run,
        embed,
        paths,
        y,
        len(layers),
        augment,
        batch=batch,
        with_outliers=with_outliers,
        with_cameras=with_cameras,
        progress=progress,
    )
    pooled_a = np.concatenate(c.pooled)
    stats = content.fit_statistics(pooled_a, y, k)
    val_arrays = run.load_arrays(val_paths)
    val = embed(val_arrays)
    held_out = content.held_out_class(pooled_a, y, k, val[0], y_val)
    held_out = {run.labels[int(cls)]: v for cls, v in held_out.items()}
    stats["scale"] = float(np.quantile(content.distances(val[0], stats), SCALE_QUANTILE))
    head = _outlier_head(run, embed, c, pooled_a, val_arrays, val[0]) if with_outliers else None
    return stats, _stride_statistics(content, c, layers, y, val, k), held_out, head


#: The int8 stain-outlier step may fire on at most this fraction of the familiar validation images.
MAX_STEP_FIRED = 0.03


def _check_outlier_step(spec: dict) -> None:
    """The stain-outlier step is computed from int8 features: when quantisation noise lifts familiar images
    over it (EfficientNet-Lite0's int8 features do), refuse the bundle."""
    fired = spec.get("val_step_fired")
    if fired is not None and fired > MAX_STEP_FIRED:
        raise SmearscopeError(
            f"content check: the int8 stain-outlier step fires on {fired:.1%} of the familiar validation "
            f"images (at most {MAX_STEP_FIRED:.0%}): quantisation noise swamps it in this model; convert "
            "without --stain-outliers"
        )


def _check_content_headroom(bundle: Path, spec: dict) -> None:
    """An int8 output saturates at the top of its quantised range: if that is not well above the content
    check's threshold, the check could never fire. Record the range; refuse the bundle if it cannot."""
    out_max = TFLiteModel(load_bundle(bundle)).distance_max()
    if out_max is None:  # a float output: no ceiling
        return
    spec["output_max"] = round(out_max, 4)
    if out_max < CONTENT_HEADROOM * float(spec["threshold"]):
        raise SmearscopeError(
            f"content check: the int8 ood_distance output saturates at {out_max:.3f}, under "
            f"{CONTENT_HEADROOM} x its threshold {spec['threshold']:.3f}; it could not flag unfamiliar "
            "input (add unfamiliar representative images or convert with --no-content-check)"
        )


def _statistics_note(
    stats: dict, mid_stats: list[dict], n: int, head: dict | None = None, cameras: int = 0
) -> str:
    note = (
        f"class means + Ledoit-Wolf shared covariance (shrinkage {stats['shrinkage']:.3f}) of {n} "
        "training images' pooled embeddings, inside model.tflite"
    )
    if head is not None:
        v = head["validation"]
        note += (
            f"; max with a stain-outlier score (convert/outliers.py: logistic regression on the pooled "
            f"embedding, {n} training images and their augmented{' and camera' if cameras else ''} copies "
            f"vs {outliers.COPIES} far "
            "re-colourings of each; "
            f"operating logit {head['operating_logit']:.2f}: fires on {v['clean_fired']:.1%} of the clean "
            f"and {v['far_fired']:.1%} of re-coloured validation images, float features)"
        )
    if not mid_stats:
        return note
    layers = ", ".join(f"{m['layer']} (shrinkage {m['shrinkage']:.3f})" for m in mid_stats)
    scales = " / ".join(f"{m['scale']:.3f}" for m in [stats, *mid_stats])
    return note + (
        f"; max with the same distance on earlier backbone features, globally averaged: {layers}, fitted "
        f"on those {n} images plus one robust-augmented copy of each"
        + (
            f" and {cameras} through other cameras' white balance (red/blue gains 0.8-1.25, clipped; "
            "convert/cameras.py)"
            if cameras
            else ""
        )
        + "; each distance over its 99% quantile "
        f"on the validation split ({scales})"
    )


#: At least this many unfamiliar images join the representative data when there is a content check.
MIN_UNFAMILIAR_IMAGES = 3


@dataclass
class _ContentCheck:
    """The content check's fitted parts (convert/content.py); `stats` None: no content check."""

    stats: dict | None = None
    mid_stats: list[dict] = field(default_factory=list)
    held_out: dict | None = None
    head: dict | None = None  # the stain-outlier head (None: without --stain-outliers)


@dataclass
class _Conversion:
    """One conversion's model, its export with the extra outputs and the converted TFLite."""

    run: RunDir
    model: Any  # the trained keras.Model
    export: Any  # the keras.Model converted (with CAM / content outputs)
    conv: Any  # convert.tflite's result: data, input_dtype, input_quantization
    name: str
    quantization: str


def _fit_content(
    run: RunDir,
    model,
    *,
    every: int,
    strides: tuple[int, ...],
    progress: bool,
    stain_outliers: bool,
    camera_copies: int,
) -> _ContentCheck:
    stats = _content_statistics(
        run, model, every, strides, progress, with_outliers=stain_outliers, with_cameras=camera_copies
    )
    return _ContentCheck(*stats)


def _to_tflite(run, model, content_fit: _ContentCheck, *, quantization: str, cam: bool, representative: int):
    """(the exported Keras model with its extra outputs, the converted TFLite)."""
    from convert import content
    from convert.tflite import convert, representative_images

    export = model
    if cam or content_fit.stats is not None:
        export = content.add_outputs(
            model, content_fit.stats, cam=cam, mid_stats=content_fit.mid_stats, outlier=content_fit.head
        )
    train_paths, _ = run.part("train")
    unfamiliar = 0
    if content_fit.stats is not None:
        unfamiliar = max(MIN_UNFAMILIAR_IMAGES, round(UNFAMILIAR_FRACTION * representative))
    rep = representative_images(
        train_paths,
        run.size,
        run.resize,
        limit=representative,
        seed=int(run.config.get("seed", 0)),
        white_reference=run.white_reference,
        unfamiliar=unfamiliar,
    )
    log.info("converting to %s%s", quantization, " with CAM output" if cam else "")
    return export, convert(export, quantization, rep if quantization == "int8" else None)


def _verification(c: _Conversion, staged: Path, tmp: Path, *, float_reference: bool, progress: bool) -> dict:
    """The staged bundle against Keras on the test split (and a float32 TFLite reference), its size
    and input quantisation: the manifest's `verification`."""
    from convert.tflite import convert

    run, model, export, conv, name, quantization = c.run, c.model, c.export, c.conv, c.name, c.quantization
    test_paths, y_test = run.part("test")
    log.info("verifying against Keras on the test split (%d images)", len(test_paths))
    test_x = run.load_arrays(test_paths)
    keras_test = verify.keras_probabilities(model, test_x)
    dev_test = verify.device_probabilities(staged, test_x, progress=progress, desc="test")
    verification = {"split": "test", **verify.compare(keras_test, dev_test, y_test)}
    sizes = {"model_bytes": len(conv.data)}
    if float_reference and quantization != "float32":
        f32 = convert(export, "float32")
        ref_dir = _staged_bundle(tmp / "ref", f32.data, run, f"{name}-float32", "float32", f32.input_dtype)
        dev_f32 = verify.device_probabilities(ref_dir, test_x, progress=progress, desc="float32")
        verification["float32_tflite"] = verify.compare(keras_test, dev_f32, y_test)
        sizes["float32_bytes"] = len(f32.data)
        sizes["ratio"] = len(conv.data) / len(f32.data)
    verification["sizes"] = sizes
    verification["input_quantization"] = {
        "scale": conv.input_quantization[0],
        "zero_point": conv.input_quantization[1],
    }
    return verification


def _conversion_provenance(run, t0: float, representative: int, um_per_px: float | None) -> dict:
    """The training run's provenance plus how and when this bundle was converted."""
    train_paths, _ = run.part("train")
    provenance = (
        dict(json.loads((run.path / "provenance.json").read_text()))
        if (run.path / "provenance.json").is_file()
        else {"run_id": run.path.name}
    )
    provenance.update(
        {
            "run_dir": str(run.path),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "conversion_seconds": round(time.perf_counter() - t0, 1),
            "representative_images": min(representative, len(train_paths)),
            "representative_split": "train",
        }
    )
    recipe = training_recipe(run.config)
    if recipe:
        provenance["recipe"] = recipe
    if um_per_px is not None:  # convert --um-per-px overrides what training measured
        provenance["um_per_px"] = um_per_px
        provenance["um_per_px_method"] = "given on the command line (convert --um-per-px)"
    return provenance


def _summary(
    out: Path,
    name: str,
    quantization: str,
    metrics: dict,
    verification: dict,
    calibration: dict,
    temperature: float,
    threshold: float,
    t0: float,
) -> dict:
    return {
        "bundle": str(out),
        "name": name,
        "quantization": quantization,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "n": metrics["n"],
        "keras_accuracy": verification["keras_accuracy"],
        "agreement": verification["agreement"],
        "accuracy_diff": verification["accuracy_diff"],
        "temperature": temperature,
        "abstain_threshold": threshold,
        "abstain_rate": metrics["abstain_rate"],
        "sizes": verification["sizes"],
        "ood_abstained": calibration["ood"]["all"]["abstained"],
        "ood_confident_malignant": calibration["ood"]["all"]["confident_malignant"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def convert_run(  # long: the signature lists convert's options, one a line; the body is short
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    quantization: str = "int8",
    cam: bool = True,
    name: str | None = None,
    set_default: bool = False,
    representative: int = 300,
    target: float = 0.995,
    float_reference: bool = True,
    ood_per_kind: int = 12,
    ood_quantile: float = 0.01,
    colour_check: bool = True,
    progress: bool = True,
    um_per_px: float | None = None,
    content_check: bool = True,
    content_every: int = 2,
    content_strides: tuple[int, ...] = (16,),
    stain_outliers: bool = False,
    camera_copies: int = 0,
) -> dict:
    """Convert, verify, calibrate and write the bundle; returns a summary dict. `um_per_px` overrides
    the scale the training run recorded."""
    import keras

    if camera_copies < 0:
        raise SmearscopeError(f"--camera-copies must be 0 or more, got {camera_copies}")
    t0 = time.perf_counter()
    run = read_run(run_dir)
    out = Path(out_dir)
    name = name or out.name
    train_paths, _ = run.part("train")
    run.part("test")  # refuse a run whose test split is incomplete before the long steps
    log.info("loading %s", run.path / "model.keras")
    model = keras.models.load_model(run.path / "model.keras", compile=False)
    fit = _ContentCheck()
    if content_check:
        fit = _fit_content(
            run,
            model,
            every=content_every,
            strides=content_strides,
            progress=progress,
            stain_outliers=stain_outliers,
            camera_copies=camera_copies,
        )
    export, conv = _to_tflite(
        run, model, fit, quantization=quantization, cam=cam, representative=representative
    )
    c = _Conversion(run, model, export, conv, name, quantization)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        staged = _staged_bundle(tmp, conv.data, run, name, quantization, conv.input_dtype, um_per_px)
        verification = _verification(c, staged, tmp, float_reference=float_reference, progress=progress)
        metrics, calibration, temperature, threshold = calibrate_bundle(
            staged,
            run,
            target=target,
            ood_quantile=ood_quantile,
            colour_check=colour_check,
            ood_per_kind=ood_per_kind,
            progress=progress,
            outlier_step=outliers.CAP if fit.head is not None else None,
        )
        if fit.stats is not None:
            n_fitted = len(train_paths[::content_every])
            note = _statistics_note(fit.stats, fit.mid_stats, n_fitted, fit.head, camera_copies)
            calibration["content_check"].update({"statistics": note, "held_out_class": fit.held_out})
            update_manifest(staged, calibration=calibration)
        provenance = _conversion_provenance(run, t0, representative, um_per_px)
        update_manifest(staged, verification=verification, provenance=provenance)
        card.write_card(staged)
        _swap_into_place(staged, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if set_default:
        add_to_default(out.parent, out.name)
    return _summary(out, name, quantization, metrics, verification, calibration, temperature, threshold, t0)


@dataclass
class _ValidationFit:
    """What the validation split fits: the device's raw outputs on it, temperature, threshold and the
    calibration section (OOD floor, content and colour checks)."""

    dev_val: np.ndarray
    temperature: float
    threshold: float
    calibration: dict


def calibrate_bundle(
    bundle: Path,
    run: RunDir,
    *,
    target: float = 0.995,
    ood_quantile: float = 0.01,
    colour_check: bool = True,
    ood_per_kind: int = 12,
    progress: bool = True,
    outlier_step: float | None = None,
) -> tuple[dict, dict, float, float]:
    """Fit temperature, threshold and the OOD checks on the validation split with the device code,
    then measure the test split and the OOD probes with the device's whole decision; writes them into
    the bundle's manifest and report/. Returns (metrics, calibration, temperature, threshold)."""
    manifest = load_bundle(bundle).manifest
    train_paths, _ = run.part("train")
    val_paths, y_val = run.part("val")
    test_paths, y_test = run.part("test")
    fit = _fit_on_validation(
        bundle, run, train_paths, val_paths, y_val, target=target, ood_quantile=ood_quantile,
        colour_check=colour_check, progress=progress, outlier_step=outlier_step,
    )  # fmt: skip
    calibration = fit.calibration
    update_manifest(
        bundle, temperature=fit.temperature, abstain_threshold=fit.threshold, calibration=calibration
    )

    # Test-split metrics with the device's whole decision (Ensemble: temperature, threshold, OOD
    # checks): exactly what `smearscope evaluate` computes on the same images.
    # The files as `evaluate` reads them: the Ensemble prepares each image itself (size and white
    # reference), so prepared arrays would be prepared twice.
    ens = Ensemble([TFLiteModel(load_bundle(bundle))])
    metrics = _test_metrics(ens, run, test_paths, y_test, manifest.quantization)
    calibration.update(_ood_probes(ens, test_paths, ood_per_kind))
    update_manifest(bundle, metrics=metrics, calibration=calibration)
    _write_report(bundle, run, metrics, fit.dev_val, y_val, fit.temperature, test_paths)
    return metrics, calibration, fit.temperature, fit.threshold


def _fit_on_validation(
    bundle: Path,
    run: RunDir,
    train_paths: list[Path],
    val_paths: list[Path],
    y_val: np.ndarray,
    *,
    target: float,
    ood_quantile: float,
    colour_check: bool,
    progress: bool,
    outlier_step: float | None,
) -> _ValidationFit:
    """Temperature, threshold and the OOD checks fitted on the validation split with the device code."""
    log.info("calibrating on the validation split (%d images)", len(val_paths))
    val_x = run.load_arrays(val_paths)
    val_dist: list[float] = []
    dev_val, val_energy = verify.device_outputs(
        bundle, val_x, progress=progress, desc="val", distances=val_dist
    )
    fitted = cal.calibrate(dev_val, y_val, target=target)
    calibration = fitted["calibration"]
    if val_energy is not None and ood_quantile > 0:
        calibration["ood_floor"] = cal.choose_ood_floor(val_energy, quantile=ood_quantile)
    if val_dist:
        calibration["content_check"] = cal.fit_content_check(np.array(val_dist), outlier_step=outlier_step)
        _check_content_headroom(bundle, calibration["content_check"])
        _check_outlier_step(calibration["content_check"])
    if colour_check:
        step = max(1, len(train_paths) // COLOUR_FIT_IMAGES)
        train_x = run.load_arrays(train_paths[::step])
        calibration["colour_check"] = cal.fit_colour_check(train_x, val_x)
        del train_x
    return _ValidationFit(dev_val, fitted["temperature"], fitted["abstain_threshold"], calibration)


def _test_metrics(
    ens: Ensemble, run: RunDir, test_paths: list, y_test: np.ndarray, quantization: str
) -> dict:
    """The test split's metrics with the device's whole decision, abstentions counted."""
    preds = [ens.classify(read_image(p), with_cam=False) for p in test_paths]
    y_pred = np.array([run.labels.index(p.label) for p in preds])
    abstained = np.array([p.abstained for p in preds])
    kept = ~abstained
    metrics = metrics_report(y_test, y_pred, run.labels)
    metrics.update(
        {
            "split": "test",
            "split_note": split_note(run.split),
            "measured_by": f"device code (Ensemble of this {quantization} bundle alone)",
            "abstained": int(abstained.sum()),
            "abstain_rate": float(abstained.mean()),
            "accuracy_when_not_abstained": float((y_pred == y_test)[kept].mean()) if kept.any() else None,
        }
    )
    return metrics


def _ood_probes(ens: Ensemble, test_paths: list, ood_per_kind: int) -> dict:
    """The calibration's OOD figures: out-of-distribution probes made from test smears, with every check
    and per check."""
    log.info("out-of-distribution probes")
    step = max(1, len(test_paths) // ood_per_kind)
    smears = [read_image(p) for p in test_paths[::step][:ood_per_kind]]
    by_checks = ood.measure_checks(ens.models, smears, n=ood_per_kind, seed=0)
    return {
        "ood": by_checks["all"],
        "ood_max_probability_only": by_checks["none"],
        "ood_by_check": {
            k: {kind: {m: v[m] for m in ("abstained", "confident_malignant")} for kind, v in rates.items()}
            for k, rates in by_checks.items()
        },
    }


def recalibrate(bundle_dir: str | Path, run_dir: str | Path, **kw) -> dict:
    """Re-fit calibration and OOD checks of an existing bundle (model.tflite unchanged) and re-render
    its card; for when the device's decision rules change after a conversion."""
    bundle = Path(bundle_dir)
    run = read_run(run_dir)
    # What only a conversion measures (the statistics inside model.tflite, the held-out-class figures)
    # is kept: model.tflite does not change here.
    before = dict(load_bundle(bundle).manifest.calibration.get("content_check") or {})
    kw.setdefault("outlier_step", before.get("outlier_step"))
    metrics, calibration, temperature, threshold = calibrate_bundle(bundle, run, **kw)
    kept = {k: before[k] for k in ("statistics", "held_out_class") if k in before}
    if kept and "content_check" in calibration:
        calibration["content_check"].update(kept)
        update_manifest(bundle, calibration=calibration)
    if (run.path / "provenance.json").is_file():  # pick up training-side corrections (e.g. stage times)
        provenance = dict(load_bundle(bundle).manifest.provenance)
        given = {k: provenance[k] for k in ("um_per_px", "um_per_px_method") if k in provenance}
        provenance.update(json.loads((run.path / "provenance.json").read_text()))
        if str(given.get("um_per_px_method", "")).startswith("given"):  # convert --um-per-px stays
            provenance.update(given)
        provenance["recalibrated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        update_manifest(bundle, provenance=provenance)
    card.write_card(bundle)
    return {
        "bundle": str(bundle),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "abstain_rate": metrics["abstain_rate"],
        "temperature": temperature,
        "abstain_threshold": threshold,
        "ood_abstained": calibration["ood"]["all"]["abstained"],
        "ood_confident_malignant": calibration["ood"]["all"]["confident_malignant"],
    }


def _write_report(
    staged: Path,
    run: RunDir,
    metrics: dict,
    val_probs: np.ndarray,
    y_val: np.ndarray,
    temperature: float,
    test_paths: list[Path],
) -> None:
    rep = staged / "report"
    rep.mkdir(exist_ok=True)
    card.plot_confusion(
        metrics["confusion_matrix"],
        run.labels,
        rep / "confusion_matrix.png",
        f"{staged.name}: test split (n={metrics['n']}, acc {metrics['accuracy']:.4f})",
    )
    scaled = apply_temperature(val_probs, temperature)
    card.plot_reliability(
        val_probs.max(1), scaled.max(1), val_probs.argmax(1) == y_val, rep / "reliability.png"
    )
    for src, dst in (
        ("metrics.json", "training_metrics.json"),
        ("baselines.json", "baselines.json"),
        ("training_curves.png", "training_curves.png"),
    ):
        if (run.path / src).is_file():
            shutil.copyfile(run.path / src, rep / dst)
    # Relative to the dataset folder (LABEL/FILE), however the run spelled the paths, so the card's
    # "reproduce" snippet works on any machine.
    roots = [r.resolve() for r in run.data_roots]
    lines = []
    for p in test_paths:
        rel = next(
            (Path(p).resolve().relative_to(r) for r in roots if Path(p).resolve().is_relative_to(r)), None
        )
        lines.append(str(rel if rel is not None else Path(Path(p).parent.name, Path(p).name)))
    atomic_write_bytes(rep / "test_split.txt", ("\n".join(lines) + "\n").encode())


def training_recipe(cfg: dict | None) -> str | None:
    """The run's augmentation recipe in one line for the card (its config.json), or None."""
    if not cfg or not cfg.get("augment"):
        return None
    parts = [f"augment {cfg['augment']}"]
    if cfg.get("augment_skip"):
        parts.append(f"without {cfg['augment_skip']}")
    if cfg.get("augment") == "robust" and cfg.get("gamma_max") not in (None, 1.3):
        parts.append(f"gamma up to {cfg['gamma_max']}")
    if cfg.get("augment") == "robust" and cfg.get("white_residual"):
        parts.append(f"an imperfect white reference's cast on {cfg['white_residual']:.0%} of images")
    if cfg.get("outlier_exposure"):
        share = cfg.get("outlier_channel_share")
        if share is None:  # a config without the share names its families (`outlier_families`)
            share = {"stain": 0.0, "channels": 1.0}.get(cfg.get("outlier_families") or "both", 0.5)
        fams = (
            "far haematoxylin/eosin re-colourings"
            if share == 0
            else f"far stain re-colourings, {share:.0%} of them per-channel optical density"
        )
        parts.append(
            f"outlier exposure {cfg['outlier_exposure']:.0%} of each fine-tuning batch ({fams}, uniform "
            "label: the families of the far-stain probes, whose figures are therefore in-family)"
        )
    return "; ".join(parts)


def _swap_into_place(staged: Path, out: Path) -> None:
    """Replace `out` with `staged` (two renames; the old bundle is removed only after the swap)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staged, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def add_to_default(models_dir: Path, name: str) -> Path:
    """Add `name` to `models_dir/DEFAULT` (one bundle name per line; the device's default ensemble)."""
    path = Path(models_dir) / "DEFAULT"
    names = []
    if path.is_file():
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if name not in names:
        names.append(name)
    text = "# The device's default ensemble: one bundle directory name per line.\n" + "\n".join(names) + "\n"
    atomic_write_bytes(path, text.encode())
    return path
