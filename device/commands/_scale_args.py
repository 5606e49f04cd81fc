"""What `classify`, `evaluate` and `bench` share: the ensemble + field classifier (or, for a cell
ensemble, the cell screen) from CLI options."""

from __future__ import annotations

import argparse

from device.config import load_config
from device.errors import SmearscopeError
from device.models.ensemble import Ensemble
from device.optics.analyse import AcquisitionSettings, FieldClassifier, ScaleArg, parse_scale
from device.screening.screen import CELLS, CellScreen, ensemble_kind
from device.screening.second import load_reader
from device.screening.stages import ScreenSettings


def add_scale_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--um-per-px",
        metavar="X|auto",
        help="the images' µm per pixel, or 'auto' (estimated per image from its red cells); default: "
        "the images are assumed to be at the models' scale (centre crop) and only the scale check runs; "
        "a cell ensemble: auto",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config ([tiling], [quality] scale keys)")


def classifier_for(
    args: argparse.Namespace, dirs: list[str]
) -> tuple[FieldClassifier | CellScreen, ScaleArg]:
    """The field classifier of a field ensemble, the cell screen of a cell ensemble (a mix of the two
    is refused with BundleError), and the images' scale from `--um-per-px`."""
    try:
        scale = parse_scale(getattr(args, "um_per_px", None))
    except ValueError as exc:
        raise SmearscopeError(str(exc)) from exc
    config = load_config(getattr(args, "config", None), system_config=None)
    ensemble = Ensemble.from_dirs(dirs, num_threads=args.threads)
    if ensemble_kind(ensemble) == CELLS:
        return CellScreen(
            ensemble, ScreenSettings.from_config(config), reader=load_reader(config, dirs, args.threads)
        ), scale
    return FieldClassifier(ensemble, AcquisitionSettings.from_config(config)), scale
