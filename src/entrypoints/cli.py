"""The `chatcore` command: serve, init-db, create-user."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from entrypoints.settings import Settings, SettingsError, load_settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    workers = args.workers or settings.workers
    if workers > 1:
        # Sessions, rate limits and the event bus live in the process until shared adapters
        # (Redis, a persistent session store) are wired in: one worker sees every session.
        raise SettingsError("CHATCORE_WORKERS: only 1 worker is supported by this build")
    from entrypoints.container import build_container

    build_container(settings).runtime()  # refuses unsupported adapters now, not in the worker
    # Workers rebuild the settings from the environment: hand them what the flags chose.
    os.environ.update({"CHATCORE_HOST": host, "CHATCORE_PORT": str(port), "CHATCORE_WORKERS": str(workers)})
    if settings.database_backend == "sqlite":
        from entrypoints.container import init_db

        print(init_db(settings), file=sys.stderr)  # migrate once, before the workers race to
    server = Server(
        "entrypoints.asgi:app_factory",
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop if sys.platform != "win32" else Loops.auto,
        factory=True,
        log_access=False,  # our middleware logs requests, with their ids and without query strings
        websockets=True,
    )
    server.serve()
    return 0


def _init_db(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.container import init_db

    print(init_db(settings))
    return 0


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    from chatcore.application.profiles import CreateUserCommand
    from entrypoints.container import build_container

    async def run() -> str:
        container = build_container(settings)
        async with container.runtime() as runtime:
            profile = await runtime.service.create_user(
                CreateUserCommand(
                    email=args.email, display_name=args.display_name, email_verified=args.verified
                )
            )
            return profile.id

    print(asyncio.run(run()))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatcore", description="chatcore chat backend")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the REST API on granian")
    serve.add_argument("--host", help="address to bind (CHATCORE_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (CHATCORE_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (CHATCORE_WORKERS)")
    serve.set_defaults(run=_serve)
    init_db = commands.add_parser("init-db", help="create or upgrade the database schema")
    init_db.set_defaults(run=_init_db)
    create_user = commands.add_parser("create-user", help="create a user (operators)")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--display-name", required=True)
    create_user.add_argument("--verified", action="store_true", help="mark the email as verified")
    create_user.set_defaults(run=_create_user)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "serve":
            overrides = {k: v for k in ("host", "port", "workers") if (v := getattr(args, k)) is not None}
            settings = load_settings(**overrides)
        return int(args.run(settings, args))
    except SettingsError as exc:
        print(f"chatcore: invalid setting {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an operator command: a clear line, not a traceback
        from chatcore.domain.errors import DomainError

        if isinstance(exc, DomainError):
            print(f"chatcore: {exc.detail}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
