"""`smearscope calibrate`: calibration profiles per camera + objective (device/camera/profiles.py).

    smearscope calibrate --name "HQ cam, 100x oil"                       # automatic: red cells, N frames
    smearscope calibrate --name "HQ cam, 40x" --um-per-px 0.181          # typed
    smearscope calibrate --freeze frame.png                              # a frozen frame to read points
    smearscope calibrate --name "HQ cam, 40x" --micrometer 100 --points 212,540,1764,548
    smearscope calibrate --white [--name NAME]                           # colour: blank area of the slide
    smearscope calibrate list | activate NAME | remove NAME | export > FILE | import FILE [--replace]

Measuring opens the configured camera ([camera] in the config): stop the daemon first when the camera
cannot be shared (Pi and USB cameras): `sudo systemctl stop smearscope`. Profile changes (list,
activate, remove, typed) work beside a running daemon, which picks them up at the next frame.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

import cv2

from device.camera import open_source
from device.camera.profiles import Profile, ProfileStore
from device.config import add_config_args, config_from_args
from device.errors import SmearscopeError
from device.optics import calibrate as cal

ACTIONS = ("list", "activate", "remove", "export", "import")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure the microscope's scale (µm per pixel) and colour; manage calibration profiles",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]),
    )
    add_config_args(p, web=False)
    p.add_argument("action", nargs="?", choices=ACTIONS, help="manage profiles instead of measuring")
    p.add_argument("profile", nargs="?", metavar="NAME", help="profile for activate / remove (import: FILE)")
    p.add_argument("--name", help='profile name: camera + objective, e.g. "HQ cam, 100x oil"')
    how = p.add_mutually_exclusive_group()
    how.add_argument("--um-per-px", type=float, metavar="X", help="type the scale (µm per pixel)")
    how.add_argument(
        "--micrometer",
        type=float,
        metavar="UM",
        help="stage micrometer: the known length in µm between --points",
    )
    how.add_argument("--white", action="store_true", help="fix exposure + white balance on a blank area")
    how.add_argument("--freeze", metavar="FILE", help="save one camera frame (PNG) to read --points from")
    p.add_argument("--points", metavar="X1,Y1,X2,Y2", help="the micrometer's two points, in frame pixels")
    p.add_argument("--frames", type=int, help="automatic: frames to measure ([calibration] frames)")
    p.add_argument("--activate", action="store_true", help="make the new profile the active one")
    p.add_argument("--replace", action="store_true", help="overwrite a profile of the same name")
    p.add_argument("--notes", default="", help="free text kept with the profile")
    p.add_argument("--json", action="store_true", help="list: machine-readable output")
    p.set_defaults(func=run)


def _user() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _progress(i: int, n: int, what: str) -> None:
    print(f"  [{i}/{n}] {what}", file=sys.stderr, flush=True)


def _points(text: str | None) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        x1, y1, x2, y2 = (float(v) for v in (text or "").split(","))
    except ValueError:
        raise SmearscopeError("--points: give the two points as X1,Y1,X2,Y2 (pixels of the frame)") from None
    return (x1, y1), (x2, y2)


def _manage(args: argparse.Namespace, profiles: ProfileStore) -> int:
    if args.action == "list":
        items = profiles.list()
        active = profiles.active_name()
        if args.json:
            out = {"active": active, "profiles": [p.to_dict() for p in items], "file": str(profiles.path)}
            print(json.dumps(out, indent=2))
            return 0
        if not items:
            print(f"no calibration profiles yet ({profiles.path}): the station's scale is unknown")
        for p in items:
            mark = "*" if p.name == active else " "
            print(f"{mark} {p.name}: {p.summary()} · {p.created_at} by {p.created_by or '?'}")
        return 0
    if args.action == "export":
        sys.stdout.write(profiles.export_text())
        return 0
    if args.action == "import":
        if not args.profile:
            raise SmearscopeError("calibrate import FILE: the profiles.toml of another station")
        names = profiles.import_from(Path(args.profile), replace=args.replace)
        active = profiles.active_name() or "none"
        print(f"imported {len(names)} profile(s): {', '.join(names)}; active: {active}")
        return 0
    name = args.profile or args.name
    if not name:
        raise SmearscopeError(f"calibrate {args.action}: which profile? (calibrate {args.action} NAME)")
    if args.action == "activate":
        p = profiles.activate(name)
        print(f"active profile: {p.name}: {p.summary()}")
    else:
        profiles.remove(name)
        print(f"profile {name} removed" + ("" if profiles.active_name() else "; no profile is active now"))
    return 0


def _save(profiles: ProfileStore, args: argparse.Namespace, profile: Profile) -> int:
    saved = profiles.save(profile, activate=args.activate, replace=args.replace)
    active = profiles.active_name() == saved.name
    print(f"profile {saved.name}: {saved.summary()}" + (" — active" if active else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    profiles = ProfileStore.from_config(cfg)
    if args.action:
        return _manage(args, profiles)
    if args.um_per_px is not None:
        return _save(profiles, args, _new(args, args.um_per_px, "typed"))
    if args.micrometer is not None:
        return _save(profiles, args, _micrometer_profile(args))
    target = _white_target(args, profiles) if args.white else None
    if not args.white and not args.freeze:  # automatic: check the name before measuring for a minute
        _new(args, 1.0, "auto")
        if profiles.get(args.name) is not None and not args.replace:
            raise SmearscopeError(f"a profile named {args.name!r} exists: another --name, or --replace")
    source = open_source(cfg.camera)
    source.open()
    try:
        if args.freeze:
            return _freeze(source, args.freeze)
        if target is not None:
            return _white(source, profiles, target, cfg.calibration.white_target)
        return _save(profiles, args, _auto_profile(source, args, cfg))
    finally:
        source.close()


def _micrometer_profile(args: argparse.Namespace) -> Profile:
    p1, p2 = _points(args.points)
    um, px = cal.micrometer_scale(args.micrometer, p1, p2)
    prof = _new(args, um, "micrometer")
    prof.micrometer = {
        "length_um": args.micrometer,
        "length_px": round(px, 2),
        "points": [list(p1), list(p2)],
    }
    return prof


def _white_target(args: argparse.Namespace, profiles: ProfileStore) -> Profile:
    """The profile the colour reference goes into: --name, else the active one."""
    target = profiles.get(args.name) if args.name else profiles.active()
    if target is None:
        raise SmearscopeError(
            "calibrate --white: which profile? Make one first (its scale), then "
            '`smearscope calibrate --white --name "..."` (or activate it)'
        )
    return target


def _freeze(source, path: str) -> int:
    rgb = source.read()
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise SmearscopeError(f"cannot write {path}")
    print(f"frame {rgb.shape[1]}x{rgb.shape[0]} saved to {Path(path).resolve()}")
    return 0


def _white(source, profiles: ProfileStore, target: Profile, white_target: float) -> int:
    print(f"colour reference on {source.describe()}: keep a blank area of the slide in view", file=sys.stderr)
    res = cal.white_reference(
        source.read, source.set_controls, source.get_controls, target=white_target, progress=_progress
    )
    p = profiles.update(target.name, controls=res.controls, white_gains=res.white_gains)
    print(f"profile {p.name}: {res.describe()}")
    print(f"background before {res.before}, after the camera controls {res.after}")
    return 0


def _auto_profile(source, args: argparse.Namespace, cfg) -> Profile:
    """The red-cell scale over live frames, as a new profile."""
    cc = cfg.calibration
    n = args.frames or cc.frames
    print(f"measuring red cells over {n} frames from {source.describe()}", file=sys.stderr)
    res = cal.auto_scale(
        source.read,
        n,
        rbc_um=cfg.optics.rbc_diameter_um,
        min_confident=cc.min_confident,
        max_spread=cc.max_spread,
        progress=_progress,
    )
    prof = _new(args, res.um_per_px, "auto", camera=source.describe())
    prof.spread, prof.n_frames = round(res.spread, 4), res.n_confident
    print(f"median red cell {res.diameter_px:.2f} px over {res.n_confident}/{res.n_frames} frames")
    return prof


def _new(args: argparse.Namespace, um_per_px: float, method: str, camera: str = "") -> Profile:
    if not args.name:
        raise SmearscopeError('name the profile: --name "camera, objective" (e.g. "HQ cam, 100x oil")')
    return Profile(
        name=args.name, um_per_px=round(um_per_px, 6), method=method, created_by=_user(),
        camera=camera, notes=args.notes,
    ).check()  # fmt: skip
