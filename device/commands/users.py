"""`smearscope users add|remove|passwd|apikey|list` — accounts of the technician's page.

Acts on the same store as `smearscope run` (same --config / --data-dir). A password is read from
stdin when stdin is not a terminal (first line), else asked twice without echo.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from device.config import add_config_args, config_from_args
from device.errors import SmearscopeError
from device.store.store import Store
from device.web import auth


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="manage the web page's accounts and API keys")
    usub = p.add_subparsers(dest="users_command", metavar="ACTION")
    usub.required = True

    def action(name: str, help_: str, func, *, with_name: bool = True) -> argparse.ArgumentParser:
        a = usub.add_parser(name, help=help_)
        add_config_args(a, web=False)
        if with_name:
            a.add_argument("name", metavar="NAME")
        a.set_defaults(func=func)
        return a

    add = action("add", "create an account (password from stdin when piped)", _add)
    add.add_argument("--role", choices=auth.ROLES, default="technician")
    action("remove", "delete an account and its API keys", _remove)
    action("passwd", "set a new password (logs out the account's sessions)", _passwd)
    key = action("apikey", "print a new API key for scripts (Authorization: Bearer KEY)", _apikey)
    key.add_argument("--revoke", action="store_true", help="revoke all of NAME's keys instead")
    action("list", "list accounts", _list, with_name=False)


def _conn(args: argparse.Namespace):
    config = config_from_args(args)
    return Store(config.device.data_dir, device_id=config.device.id).conn


def read_password(prompt: str = "Password") -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise SmearscopeError("no password on stdin")
        return line.rstrip("\r\n")
    first = getpass.getpass(f"{prompt}: ")
    if getpass.getpass(f"{prompt} (again): ") != first:
        raise SmearscopeError("the two passwords differ")
    return first


def _add(args: argparse.Namespace) -> int:
    auth.check_name(args.name)
    conn = _conn(args)
    auth.add_user(conn, args.name, args.role, read_password())
    print(f"user {args.name} ({args.role}) added", file=sys.stderr)
    return 0


def _remove(args: argparse.Namespace) -> int:
    auth.remove_user(_conn(args), args.name)
    print(f"user {args.name} removed", file=sys.stderr)
    return 0


def _passwd(args: argparse.Namespace) -> int:
    conn = _conn(args)
    if auth.get_user(conn, args.name) is None:
        raise auth.AuthError(f"no user {args.name!r}")
    auth.set_password(conn, args.name, read_password("New password"))
    print(f"password of {args.name} changed", file=sys.stderr)
    return 0


def _apikey(args: argparse.Namespace) -> int:
    conn = _conn(args)
    if args.revoke:
        n = auth.revoke_api_keys(conn, args.name)
        print(f"{n} key(s) of {args.name} revoked", file=sys.stderr)
        return 0
    print(auth.new_api_key(conn, args.name))
    print("shown once: it is stored hashed. Send it as `Authorization: Bearer KEY`.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    for u in auth.list_users(_conn(args)):
        state = "disabled" if u["disabled"] else "active"
        print(f"{u['name']}\t{u['role']}\t{state}\t{u['api_keys']} key(s)\t{u['created_at']}")
    return 0
