"""`smearscope-hub`: serve the hub, upgrade its schema, register devices and users.

    smearscope-hub serve --db URL --host H --port P [--workers N]
    smearscope-hub migrate --db URL
    smearscope-hub devices add NAME | list | revoke NAME | token NAME
    smearscope-hub users add NAME [--admin] | revoke NAME | token NAME | admin NAME [--revoke]
    smearscope-hub export-dataset --out DIR [--since DATE] [--device NAME]... [--disagreements-only]
                                  [--include-unreviewed]
    smearscope-hub devices add NAME --group G | set-group NAME G|--none
    smearscope-hub keys add PUBFILE | list | remove KEYID       (signing keys `models publish` trusts)
    smearscope-hub models publish DIR... [--group G] [--set-name N] | list
    smearscope-hub backup OUT | restore IN [--check] [--keep-before DIR]   (hub/backup/database.py)

--db defaults to $SMEARSCOPE_HUB_DB, else sqlite:///hub.db (a file in the working directory).
Tokens are printed once and stored only as sha256.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from common.wording import DISCLAIMER
from hub import db, tokens
from hub.app import HubSettings, create_app
from hub.backup import cli as backup_cli
from hub.backup.database import HubBackupError
from hub.export import cli as export_cli
from hub.models import Device, User

ENV_DB = "SMEARSCOPE_HUB_DB"
DEFAULT_DB = "sqlite:///hub.db"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smearscope-hub", description=f"smearscope central hub. {DISCLAIMER}")
    p.add_argument("--db", default=os.environ.get(ENV_DB, DEFAULT_DB), help=f"database URL (${ENV_DB})")
    sub = p.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    m = sub.add_parser("migrate", help="upgrade the database schema to the newest revision")
    m.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    m.set_defaults(func=cmd_migrate)

    _add_accounts(sub, "devices")
    _add_accounts(sub, "users")
    export_cli.register(sub)
    backup_cli.register(sub)
    from hub.fleet.cli import register

    register(sub)
    return p


def _add_serve(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="run the hub (waitress; gunicorn when --workers > 1)")
    s.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8090)
    s.add_argument("--workers", type=int, default=1, help="processes (gunicorn; use PostgreSQL for > 1)")
    s.add_argument("--threads", type=int, default=8, help="threads per process")
    s.add_argument("--max-body-mb", type=float, default=HubSettings.max_body_mb)
    s.add_argument("--max-batch", type=int, default=HubSettings.max_batch)
    s.add_argument("--skew-limit-s", type=float, default=HubSettings.skew_limit_s)
    s.add_argument(
        "--rate-limit",
        default=HubSettings.rate_limit,
        help='requests per token (or address) per process, e.g. "3000/minute"; "" = off',
    )
    s.add_argument(
        "--auth-fail-limit",
        default=HubSettings.auth_fail_limit,
        help='failed authentications (401) per client address, e.g. "30/minute"; "" = off',
    )
    s.add_argument(
        "--proxy-hops",
        type=int,
        default=HubSettings.proxy_hops,
        help="reverse proxies in front whose X-Forwarded-For is trusted (the client address for limits)",
    )
    s.add_argument(
        "--body-timeout-s",
        type=float,
        default=HubSettings.body_timeout_s,
        help="with --workers > 1: a request body must arrive within this many seconds (else 408)",
    )
    s.set_defaults(func=cmd_serve)


def _add_accounts(sub: argparse._SubParsersAction, kind: str) -> None:
    """`devices` or `users`: add, revoke, token, and the kind's own actions."""
    k = sub.add_parser(kind, help=f"manage {kind}")
    ks = k.add_subparsers(dest="action", required=True)
    a = ks.add_parser("add", help="register one; prints its token once")
    a.add_argument("name")
    a.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    if kind == "devices":
        a.add_argument("--group", help="the station's group (bundle sets can target a group)")
    if kind == "users":
        a.add_argument("--admin", action="store_true", help="may export training data from the dashboard")
    a.set_defaults(func=cmd_add, kind=kind, admin=False)
    r = ks.add_parser("revoke", help="disable one; its token stops working")
    r.add_argument("name")
    r.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    r.set_defaults(func=cmd_revoke, kind=kind)
    t = ks.add_parser("token", help="issue a new token (the old one stops working); prints it once")
    t.add_argument("name")
    t.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    t.set_defaults(func=cmd_rotate, kind=kind)
    if kind == "devices":
        ls = ks.add_parser("list", help="registered devices and last contact")
        ls.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
        ls.set_defaults(func=cmd_list_devices)
        from hub.fleet.cli import register_device_actions

        register_device_actions(ks)
    else:
        ad = ks.add_parser("admin", help="make a user a hub admin (or --revoke it)")
        ad.add_argument("name")
        ad.add_argument("--revoke", action="store_true", help="take the admin role away")
        ad.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
        ad.set_defaults(func=cmd_admin)


def _engine(args: argparse.Namespace):  # noqa: ANN202
    return db.upgraded_engine(args.db)


def cmd_migrate(args: argparse.Namespace) -> int:
    _engine(args).dispose()
    print(f"schema up to date on {db.make_engine(args.db).url.render_as_string(hide_password=True)}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    engine = _engine(args)
    with db.session_factory(engine)() as s:
        try:
            if args.kind == "devices":
                token = tokens.add_device(s, args.name)
                if getattr(args, "group", None):
                    from hub.fleet.updates import set_group

                    set_group(s, args.name, args.group)
            else:
                token = tokens.add_user(s, args.name)
                if args.admin:
                    tokens.set_admin(s, args.name, True)
        except ValueError as exc:
            print(f"smearscope-hub: error: {exc}", file=sys.stderr)
            return 1
    what = "device" if args.kind == "devices" else "user"
    print(token)
    hint = (
        "put it in the device's SMEARSCOPE_SYNC_TOKEN (or [sync] token)"
        if what == "device"
        else "use it as a Bearer token or to log in to the dashboard"
    )
    print(f"{what} {args.name!r} registered; this token is shown only once: {hint}.", file=sys.stderr)
    return 0


def _model(kind: str) -> type[Device] | type[User]:
    return Device if kind == "devices" else User


def cmd_revoke(args: argparse.Namespace) -> int:
    with db.session_factory(_engine(args))() as s:
        try:
            tokens.revoke(s, _model(args.kind), args.name)
        except ValueError as exc:
            print(f"smearscope-hub: error: {exc}", file=sys.stderr)
            return 1
    print(f"{args.name!r} revoked: its token no longer works", file=sys.stderr)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    with db.session_factory(_engine(args))() as s:
        try:
            token = tokens.rotate(s, _model(args.kind), args.name)
        except ValueError as exc:
            print(f"smearscope-hub: error: {exc}", file=sys.stderr)
            return 1
    print(token)
    print(f"new token for {args.name!r}, shown only once; the old one no longer works", file=sys.stderr)
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    with db.session_factory(_engine(args))() as s:
        try:
            tokens.set_admin(s, args.name, not args.revoke)
        except ValueError as exc:
            print(f"smearscope-hub: error: {exc}", file=sys.stderr)
            return 1
    print(f"{args.name!r} is {'no longer ' if args.revoke else ''}a hub admin", file=sys.stderr)
    return 0


def cmd_list_devices(args: argparse.Namespace) -> int:
    with db.session_factory(_engine(args))() as s:
        for d in s.scalars(select(Device).order_by(Device.name)):
            seen = d.last_seen_at.isoformat() if d.last_seen_at else "never"
            print(f"{d.name}\tlast contact {seen}\tclock skew {d.clock_skew_s}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    engine = _engine(args)  # migrate once, before any worker starts
    settings = HubSettings(
        max_body_mb=args.max_body_mb,
        max_batch=args.max_batch,
        skew_limit_s=args.skew_limit_s,
        rate_limit=args.rate_limit,
        auth_fail_limit=args.auth_fail_limit,
        proxy_hops=args.proxy_hops,
        body_timeout_s=args.body_timeout_s,
    )
    url = engine.url.render_as_string(hide_password=False)
    if engine.url.get_backend_name() == "sqlite" and args.workers > 1:
        print(
            "smearscope-hub: SQLite serves from one process; use PostgreSQL for --workers > 1",
            file=sys.stderr,
        )
        args.workers = 1
    engine.dispose()
    print(
        f"smearscope-hub on http://{args.host}:{args.port} ({args.workers} x {args.threads} threads)",
        flush=True,
    )
    if args.workers <= 1:
        from waitress import serve

        serve(
            create_app(url, settings=settings, migrate=False),
            **waitress_options(settings, host=args.host, port=args.port, threads=args.threads),
        )
        return 0
    from hub.gunicorn_app import run_gunicorn

    run_gunicorn(url, settings, host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


def waitress_options(settings: HubSettings, *, host: str, port: int, threads: int) -> dict:
    """waitress buffers a whole request before the app sees it (up to 1 GB by default, chunked bodies
    included): cap it at the hub's body limit, and drop idle or trickling connections after a minute.
    """
    return {
        "host": host,
        "port": port,
        "threads": threads,
        "ident": "smearscope-hub",
        "max_request_body_size": int(settings.max_body_mb * 1024 * 1024) + 64 * 1024,
        "max_request_header_size": 64 * 1024,
        "channel_timeout": 60,
        "connection_limit": 200,
        # with proxies in front, X-Forwarded-For must reach the app (ProxyFix trusts proxy_hops of it);
        # without, waitress drops such headers so a client cannot pick its own address
        "clear_untrusted_proxy_headers": settings.proxy_hops <= 0,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command != "migrate":  # only `migrate` needs to narrate each revision
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except OperationalError as exc:
        print(f"smearscope-hub: cannot use the database: {exc.orig}", file=sys.stderr)
        return 2
    except HubBackupError as exc:
        print(f"smearscope-hub {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
