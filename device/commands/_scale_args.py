"""What `classify`, `evaluate` and `bench` share: the ensemble + field classifier from CLI options."""

from __future__ import annotations

import argparse

from device.config import load_config
from device.errors import SmearscopeError
from device.models.ensemble import Ensemble
from device.optics.analyse import AcquisitionSettings, FieldClassifier, ScaleArg, parse_scale


def add_scale_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--um-per-px",
        metavar="X|auto",
        help="the images' µm per pixel, or 'auto' (estimated per image from its red cells); default: "
        "the images are assumed to be at the models' scale (centre crop) and only the scale check runs",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config ([tiling], [quality] scale keys)")


def field_classifier(args: argparse.Namespace, dirs: list[str]) -> tuple[FieldClassifier, ScaleArg]:
    try:
        scale = parse_scale(getattr(args, "um_per_px", None))
    except ValueError as exc:
        raise SmearscopeError(str(exc)) from exc
    config = load_config(getattr(args, "config", None), system_config=None)
    ensemble = Ensemble.from_dirs(dirs, num_threads=args.threads)
    return FieldClassifier(ensemble, AcquisitionSettings.from_config(config)), scale
