"""The `smearscope` command. Sub-commands are modules in device/commands/ (each has `register`),
plus those other packages declare under the `smearscope.commands` entry-point group (train, convert),
so device/ never imports training/ or convert/."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

import device.commands
from common.wording import DISCLAIMER
from device import __version__
from device.errors import SmearscopeError
from device.logging_setup import setup_logging, under_journal
from device.memory import bound_malloc


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All sub-commands; when `command` is one of device/commands/, other packages' entry points are
    not loaded (they may import TensorFlow: seconds and hundreds of MB the daemon must not pay)."""
    parser = argparse.ArgumentParser(
        prog="smearscope",
        description=f"Offline leukemia screening station. {DISCLAIMER}",
    )
    parser.add_argument("--version", action="version", version=f"smearscope {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(device.commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"device.commands.{info.name}").register(sub)
    builtin = {i.name for i in pkgutil.iter_modules(device.commands.__path__)}
    for ep in [] if command in builtin else entry_points(group="smearscope.commands"):
        try:
            register = ep.load()
        except ImportError as exc:  # e.g. training extras not installed on a device
            p = sub.add_parser(ep.name, help=f"(unavailable: {exc.name or exc} not installed)")
            p.set_defaults(func=_unavailable(ep.name, exc))
            continue
        register(sub)
    return parser


def _unavailable(name: str, exc: Exception):
    def run(args: argparse.Namespace) -> int:
        print(
            f"smearscope {name}: needs the training extras (pip install 'smearscope[train]'): {exc}",
            file=sys.stderr,
        )
        return 2

    return run


def main(argv: list[str] | None = None) -> int:
    bound_malloc()  # before any thread allocates: bounded RSS with many server threads (device/memory.py)
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except SmearscopeError as exc:
        prio = "<3>" if under_journal() else ""  # journald: store it as an error, not as info
        print(f"{prio}smearscope {args.command}: error: {exc}".replace("\n", f"\n{prio}"), file=sys.stderr)
        return int(getattr(exc, "exit_status", 2))  # 3: the store needs a person (device.store.lock)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
