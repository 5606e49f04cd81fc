"""`smearscope convert RUN_DIR --out models/NAME [--quantization int8|float16|dynamic|float32] [--cam]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Kept here (not imported from convert.tflite) so `smearscope` does not import TensorFlow at start.
QUANTIZATIONS = ("int8", "float16", "dynamic", "float32")
#: Sizes are printed in MB (10^6 bytes), as the model card gives them.
BYTES_PER_MB = 1e6


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="Keras run dir -> verified, calibrated TFLite model bundle (needs the training extras)",
        description="Convert a `smearscope train` run dir into a model bundle: model.tflite, manifest.json, "
        "MODEL.md and report/. Metrics are measured with the device's own code on the run's test split.",
    )
    _add_bundle_arguments(p)
    _add_calibration_arguments(p)
    _add_content_arguments(p)
    _add_bundle_actions(p)
    p.set_defaults(func=run)


def _add_bundle_arguments(p: argparse.ArgumentParser) -> None:
    """What to convert, where to and how."""
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a `smearscope train` output directory")
    p.add_argument(
        "--out", metavar="DIR", help="bundle directory to write, e.g. models/mobilenetv2-all4-int8"
    )
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="int8")
    p.add_argument(
        "--cam", action=argparse.BooleanOptionalAction, default=True, help="add the heatmap output"
    )
    p.add_argument("--name", help="bundle name (default: the --out directory's name)")
    p.add_argument("--set-default", action="store_true", help="add the bundle to <out>/../DEFAULT")
    p.add_argument("--representative", type=int, default=300, help="training images for int8 calibration")
    p.add_argument(
        "--um-per-px",
        type=float,
        metavar="X",
        help="µm per pixel of the training images at the model's input size (overrides the run's value)",
    )
    p.add_argument("--json", metavar="OUT", help="also write the summary here")
    p.add_argument(
        "--sign",
        metavar="KEY",
        help="sign the finished bundle with this Ed25519 private key (`smearscope models keygen`); "
        "stations refuse unsigned bundles",
    )


def _add_calibration_arguments(p: argparse.ArgumentParser) -> None:
    """Verification, calibration and the out-of-distribution checks."""
    p.add_argument("--target", type=float, default=0.995, help="selective accuracy the threshold must reach")
    p.add_argument(
        "--no-float-reference", action="store_true", help="skip the float32 size/accuracy reference"
    )
    p.add_argument(
        "--ood-quantile",
        type=float,
        default=0.01,
        help="energy floor = this quantile of the validation energies (0 disables the floor)",
    )
    p.add_argument(
        "--colour-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse inputs whose colour statistics are unlike the training images'",
    )
    p.add_argument("--ood-per-kind", type=int, default=12, help="out-of-distribution probes per kind")


def _add_content_arguments(p: argparse.ArgumentParser) -> None:
    """The content check (convert/content.py) and what its statistics are fitted on."""
    p.add_argument(
        "--content-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the ood_distance output (class-conditional Mahalanobis distance of the pooled embedding, "
        "convert/content.py) and its threshold",
    )
    p.add_argument(
        "--content-every",
        type=int,
        default=2,
        metavar="N",
        help="content statistics from every N-th training image (CPU budget)",
    )
    p.add_argument(
        "--content-strides",
        default="16",
        metavar="S[,S]",
        help="also score the backbone's features at these strides (e.g. 8,16; statistics incl. one "
        "robust-augmented copy of each training image) and output the max of the normalised distances "
        "(convert/content.py); '' = the pooled embedding only",
    )
    p.add_argument(
        "--stain-outliers",
        action="store_true",
        help="add a stain-outlier score to the content check: a logistic regression on the pooled "
        "embedding, training images (+ augmented copies) vs far re-colourings of them (convert/outliers.py)",
    )
    p.add_argument(
        "--camera-copies",
        type=int,
        default=0,
        metavar="N",
        help="fit the content check's stride statistics and stain-outlier step also on N copies of each "
        "training image through other cameras' white balance (red/blue gains 0.8-1.25, clipped; "
        "convert/cameras.py)",
    )


def _add_bundle_actions(p: argparse.ArgumentParser) -> None:
    """Actions on an existing bundle instead of a conversion."""
    p.add_argument(
        "--card-only",
        metavar="BUNDLE",
        help="only re-render BUNDLE/MODEL.md from its manifest and report/ (e.g. after adding "
        "report/ensemble.json from `smearscope evaluate`)",
    )
    p.add_argument(
        "--recalibrate",
        metavar="BUNDLE",
        help="re-fit temperature, threshold and OOD checks of BUNDLE (model.tflite unchanged) on RUN_DIR's "
        "splits, re-measure and re-render its card",
    )


def run(args: argparse.Namespace) -> int:
    from device.errors import SmearscopeError

    if args.card_only:
        from convert.card import write_card

        print(write_card(Path(args.card_only)))
        _sign(args, args.card_only)
        return 0
    if args.recalibrate:
        return _recalibrate(args)
    if not args.run_dir or not args.out:
        raise SmearscopeError("RUN_DIR and --out are required (or use --card-only BUNDLE)")
    s = _convert(args)
    _print_summary(s, args.quantization)
    if args.json:
        from device.fsutil import atomic_write_bytes

        atomic_write_bytes(args.json, (json.dumps(s, indent=2) + "\n").encode())
    _sign(args, args.out)
    print("Screening aid for trained staff, not a diagnosis.")
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    from device.errors import SmearscopeError

    if not args.run_dir:
        raise SmearscopeError("--recalibrate BUNDLE needs the RUN_DIR the bundle was converted from")
    from convert.pipeline import recalibrate

    r = recalibrate(
        args.recalibrate,
        args.run_dir,
        target=args.target,
        ood_quantile=args.ood_quantile,
        colour_check=args.colour_check,
    )
    print(json.dumps(r, indent=2))
    _sign(args, args.recalibrate)
    return 0


def _convert(args: argparse.Namespace) -> dict:
    from convert.pipeline import convert_run

    return convert_run(
        args.run_dir,
        args.out,
        quantization=args.quantization,
        cam=args.cam,
        name=args.name,
        set_default=args.set_default,
        representative=args.representative,
        target=args.target,
        float_reference=not args.no_float_reference,
        ood_quantile=args.ood_quantile,
        colour_check=args.colour_check,
        um_per_px=args.um_per_px,
        content_check=args.content_check,
        content_every=args.content_every,
        content_strides=tuple(int(x) for x in args.content_strides.split(",") if x.strip()),
        stain_outliers=args.stain_outliers,
        camera_copies=args.camera_copies,
        ood_per_kind=args.ood_per_kind,
    )


def _print_summary(s: dict, quantization: str) -> None:
    from convert.pipeline import INT8_MAX_RATIO

    sizes = s["sizes"]
    size_line = f"{sizes['model_bytes'] / BYTES_PER_MB:.2f} MB"
    if "float32_bytes" in sizes:
        size_line += f" (float32 {sizes['float32_bytes'] / BYTES_PER_MB:.2f} MB, {100 * sizes['ratio']:.1f}%)"
    print(f"bundle      {s['bundle']}  ({s['quantization']}, {size_line})")
    print(
        f"test split  n={s['n']}  accuracy {s['accuracy']:.4f}  macro-F1 {s['macro_f1']:.4f}  (device code)"
    )
    print(
        f"vs Keras    keras accuracy {s['keras_accuracy']:.4f}  agreement {s['agreement']:.4f}  "
        f"diff {100 * s['accuracy_diff']:+.2f} points"
    )
    print(
        f"calibration T={s['temperature']:g}  abstain below {s['abstain_threshold']:.2f}  "
        f"test split uncertain {100 * s['abstain_rate']:.1f}%"
    )
    print(
        f"OOD probes  uncertain {100 * s['ood_abstained']:.1f}%  confident malignant "
        f"{100 * s['ood_confident_malignant']:.1f}%"
    )
    if quantization == "int8" and sizes.get("ratio", 0) > INT8_MAX_RATIO:
        print(
            f"WARNING: int8 file is {100 * sizes['ratio']:.1f}% of float32 (target <= {INT8_MAX_RATIO:.0%})"
        )


def _sign(args: argparse.Namespace, bundle: str) -> None:
    """Sign last, after every file of the bundle (card, report/) is written. Without --sign, say that
    the bundle must be signed before a station will run it."""
    if not args.sign:
        print(
            f"unsigned: sign it with `smearscope models sign {bundle} --key KEY` before shipping",
            file=sys.stderr,
        )
        return
    from device.models.signing import sign_bundle

    doc = sign_bundle(bundle, args.sign)
    print(f"signed      {bundle} with key {doc['key_id']}", file=sys.stderr)
