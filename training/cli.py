"""`smearscope train ...` (registered through the `smearscope.commands` entry point)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from training.backbones import BACKBONES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier (2-phase transfer learning) into a run directory",
        description="Split a folder of class folders, train backbone + head in two phases and write a "
        "run directory (split, history, plots, metrics, baselines, model.keras).",
    )
    _add_data_arguments(p)
    _add_model_arguments(p)
    _add_split_arguments(p)
    _add_schedule_arguments(p)
    _add_augment_arguments(p)
    _add_run_arguments(p)
    p.set_defaults(func=run)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Where the images come from and where the run goes."""
    p.add_argument(
        "--data",
        metavar="DIR",
        action="append",
        help="folder with one sub-folder per label, or a hub export (manifest.json: split by sample). "
        "Repeat to combine sources: the first defines the labels; figures are reported per source",
    )
    p.add_argument("--split", metavar="FILE", help="reuse an existing split.json instead of splitting --data")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory, e.g. runs/NAME")


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model and the pixels it is fed."""
    p.add_argument("--backbone", choices=BACKBONES, default="mobilenetv2")
    p.add_argument(
        "--weights",
        default=None,
        help="PATH (mobilenetv2: no-top .h5; efficientnet-lite0: .keras) | imagenet (download) | none",
    )
    p.add_argument("--size", type=int, default=224, help="input side in pixels (square)")
    p.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    p.add_argument("--resize", choices=("center_crop", "stretch"), default="center_crop")
    p.add_argument(
        "--white-reference",
        choices=("background", "none"),
        default="background",
        help="map each image's bright smear background to neutral white before the model (the device does "
        "the same; 'none' = raw camera colour)",
    )
    p.add_argument(
        "--um-per-px",
        type=float,
        metavar="X",
        help="µm per pixel of the training images at --size (default: measured from their red cells)",
    )


def _add_split_arguments(p: argparse.ArgumentParser) -> None:
    """How the images are split and labelled."""
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--group-regex", help=r"group id from file names kept on one side, e.g. 'UID_(\d+)_'")
    p.add_argument(
        "--keep-test",
        metavar="BUNDLE|FILE",
        help="test on an earlier bundle's test split (its report/test_split.txt): those images and the rest "
        "of their groups are the test part, the others are split into train and val",
    )
    p.add_argument(
        "--label-map",
        action="append",
        metavar="FROM=TO",
        help="rename a folder label in every source, e.g. hem=Benign (repeatable)",
    )
    p.add_argument(
        "--drop-unknown-labels",
        action="store_true",
        help="drop images of a later source whose label the first source lacks (default: an error)",
    )


def _add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    """Both phases: batches, epochs, learning rates, regularisation."""
    p.add_argument("--batch", type=int, default=32, help="batch size per replica")
    p.add_argument("--epochs-head", type=int, default=30)
    p.add_argument("--epochs-finetune", type=int, default=10)
    p.add_argument("--finetune-layers", type=int, default=50, help="top backbone layers to unfreeze")
    p.add_argument("--lr-head", type=float, default=1e-3)
    p.add_argument("--lr-finetune", type=float, default=3e-5)
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear LR warm-up when fine-tuning")
    p.add_argument(
        "--finetune-minutes",
        type=float,
        metavar="M",
        help="wall-clock budget for fine-tuning: the cosine schedule is shortened to the epochs that fit "
        "(measured after each epoch) and training stops after the last one",
    )
    p.add_argument("--optimizer", choices=("adam", "adamax"), default="adam")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--schedule", choices=("cosine", "plateau", "constant"), default="cosine")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience (epochs)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--head-augment", action="store_true", help="augment in phase 1 too (no feature cache)")


def _add_augment_arguments(p: argparse.ArgumentParser) -> None:
    """The training augmentation (convert/augment.py) and outlier exposure."""
    p.add_argument("--augment-strength", type=float, default=1.0, help="scales geometric + colour jitter")
    p.add_argument(
        "--colour-strength",
        type=float,
        default=1.0,
        help="extra factor for brightness/contrast/hue/saturation",
    )
    p.add_argument(
        "--augment",
        choices=("robust", "basic"),
        default="robust",
        help="robust: scale/stain/white-balance/gamma/illumination/blur/noise/JPEG (convert/augment.py); "
        "basic: flips, small rotation/zoom, hue/saturation (a light recipe)",
    )
    p.add_argument(
        "--augment-skip",
        default="",
        metavar="A,B",
        help="robust components to leave out (ablation), of: "
        "geometry,stain,white,illumination,defocus,noise,jpeg",
    )
    p.add_argument(
        "--outlier-exposure",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="re-colour this fraction of each augmented batch far past any real stain and teach it the "
        "uniform label (outlier exposure, training/outlier_exposure.py); e.g. 0.1. Default: off",
    )
    p.add_argument(
        "--outlier-channel-share",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="of --outlier-exposure's re-colourings, the share that scales each channel's optical density "
        "on its own (which also makes strong colour casts inside cells); the rest scale haematoxylin and "
        "eosin. Default 0.5",
    )
    p.add_argument(
        "--gamma-max",
        type=float,
        default=1.3,
        help="top of the robust recipe's gamma range (default 1.3); with --outlier-exposure give a margin "
        "above the gammas a second station shows (e.g. 1.45), so they stay familiar",
    )
    p.add_argument(
        "--white-residual",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="give this fraction of the images the cast an imperfect white reference leaves (per-channel "
        "gain e^±0.2 after the background normalisation: a station whose background clips); default none",
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Class weights, devices, baselines, a starting model and output."""
    p.add_argument("--no-class-weights", dest="class_weighting", action="store_false")
    p.add_argument("--strategy", choices=("auto", "mirrored", "default"), default="auto")
    p.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU only)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip SVM/RF baselines")
    p.add_argument(
        "--init-model", metavar="MODEL_KERAS", help="start from this model.keras (skips the head phase)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--eager",
        action="store_true",
        help="run Keras eagerly (no graph tracing): twice as fast for a tiny run of a few dozen steps "
        "(tests, smoke checks), far slower for real training",
    )


def run(args: argparse.Namespace) -> int:
    from training.train import TrainConfig, train  # TensorFlow loads only when training runs

    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["verbose"] = 0 if args.quiet else 1
    if values.get("data") and len(values["data"]) == 1:
        values["data"] = values["data"][0]  # config.json keeps a single folder as a string
    if values.get("white_reference") == "none":
        values["white_reference"] = None
    cfg = TrainConfig(**values)
    metrics = train(cfg)
    acc, f1, n = metrics["accuracy"], metrics["macro_f1"], metrics["n"]
    print(f"{cfg.out}: test accuracy {acc:.4f}, macro-F1 {f1:.4f} (n={n})")
    return 0
