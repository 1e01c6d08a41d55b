"""The `chatcore` command: serve, worker, init-db, create-user.

Shutdown. `serve` runs on granian: on SIGTERM/SIGINT granian stops accepting connections and ends
each worker's ASGI lifespan, where the runtime sets `Runtime.stopping` (long-lived connections
end and tell their clients to reconnect and resume from their cursors), stops the relay sweep,
publishes what is still pending in the outbox (bounded), then closes the database and the
broker. `worker` does the same on SIGTERM/SIGINT: its consumers finish the entry in hand (an
unacked entry is reclaimed by another worker anyway), the relay flushes, connections close.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from entrypoints.settings import Settings, SettingsError, load_settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from granian.constants import Interfaces, Loops, RuntimeModes
    from granian.server import Server

    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    workers = args.workers or settings.workers
    if workers > 1 and not settings.broker_url:
        # Each worker process is an instance: without a shared broker a message sent through one
        # would not wake the long-polls and sockets of another, and rate limits would be per process.
        raise SettingsError(
            "CHATCORE_WORKERS: more than 1 worker needs a shared broker; set CHATCORE_BROKER_URL=redis://…"
        )
    if workers > 1 and settings.database_backend == "memory":
        raise SettingsError("CHATCORE_WORKERS: the memory database lives in one process; use 1 worker")
    from entrypoints.container import build_container

    build_container(settings).runtime()  # refuses unsupported adapters now, not in the worker
    if not settings.broker_url and settings.database_backend == "sqlite":
        from entrypoints.single_server import refuse_if_served

        refuse_if_served(settings.sqlite_path)  # a server already running: refused here, clearly
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
        backpressure=settings.max_concurrent_requests,
        # One runtime thread: writes start in the order they are handed over (each WebSocket's
        # frames are handed to granian without waiting for the previous one; see realtime.py).
        runtime_threads=1,
        runtime_mode=RuntimeModes.st,
    )
    server.serve()
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    if settings.database_backend == "memory":
        raise SettingsError("CHATCORE_DATABASE_URL: a worker cannot share a memory database with a server")
    extra = [_load_consumer(spec) for spec in args.consumer or []]
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    return asyncio.run(_run_worker(settings, name, extra, args.notifications))


def _load_consumer(spec: str) -> tuple[str, Any]:
    """`GROUP=package.module:factory` -> (group, factory); the factory gets the Runtime."""
    group, _, target = spec.partition("=")
    module_name, _, attribute = target.partition(":")
    if not group or not module_name or not attribute:
        raise SettingsError(f"--consumer: write GROUP=package.module:factory, not {spec!r}")
    import importlib

    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"--consumer: cannot load {target!r}: {exc}") from None
    return group, factory


async def _run_worker(
    settings: Settings, name: str, extra: list[tuple[str, Any]], notifications: bool
) -> int:
    import signal

    from entrypoints.container import build_container, worker_jobs
    from entrypoints.logs import configure_logging

    configure_logging(settings.log_level, settings.log_flush_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with build_container(settings).runtime(role="worker") as runtime:
        handlers = [(group, factory(runtime)) for group, factory in extra]
        plan = worker_jobs(runtime, consumer=name, extra=handlers)
        jobs = [(label, job) for label, job in plan.jobs if notifications or label != "notifications"]
        relay = "relaying the outbox to Redis" if runtime.broker is not None else "no broker, no relay"
        labels = ", ".join(label for label, _ in jobs) or "no consumers"
        print(f"chatcore worker {name}: {relay}; {labels}", file=sys.stderr, flush=True)
        for note in plan.notes:
            print(f"chatcore worker: {note}", file=sys.stderr, flush=True)
        if runtime.broker is None and not jobs:
            print("chatcore worker: nothing to run without CHATCORE_BROKER_URL", file=sys.stderr)
            return 1
        async with asyncio.TaskGroup() as tasks:
            for label, job in jobs:
                tasks.create_task(job(stop), name=f"chatcore-worker {label}")
            await stop.wait()
        print(f"chatcore worker {name}: stopping", file=sys.stderr, flush=True)
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
    worker = commands.add_parser(
        "worker", help="relay the outbox to Redis and run the durable consumers (notifications)"
    )
    worker.add_argument("--name", help="consumer name in the stream groups (default: host-pid)")
    worker.add_argument(
        "--consumer",
        action="append",
        metavar="GROUP=module:factory",
        help="also run a stream consumer group; factory(runtime) returns an async handler(record)",
    )
    worker.add_argument(
        "--no-notifications",
        dest="notifications",
        action="store_false",
        help="do not run the notification worker",
    )
    worker.set_defaults(run=_worker)
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
