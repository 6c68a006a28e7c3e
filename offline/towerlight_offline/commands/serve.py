"""``towerlight serve``: the recommend + track HTTP API on localhost, and a worker that ingests events.

One FastAPI app carries the routes of both functions (OpenAPI docs at ``/docs``); uvicorn serves it.
A background ``QueueWorker`` drains ``EVENTS_QUEUE_URL`` into the ingest handler with real SQS
events, so a tracked click reaches Postgres (and the next recommendation) as it would in AWS.

What is not configured is started locally, and the command says so: no ``DATABASE_URL`` → embedded
Postgres (migrated); no ``EVENTS_QUEUE_URL`` → moto's SQS server and a queue; no ``TOWERLIGHT_STORE``
→ a local directory store. Ctrl-C stops everything it started.

Example::

    $ towerlight serve --port 8000
    $ curl -X POST localhost:8000/events -d '{"user_id": "u1", "item_id": "i9", "event_type": "click"}'
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from towerlight.api.base import create_app
from towerlight.api.recommend import create_recommend_app
from towerlight.api.track import create_track_app
from towerlight.config import get_settings
from towerlight_offline import console
from towerlight_offline.local.worker import QueueWorker, load_function_handler

EVENTS_QUEUE = "towerlight-events"
# What a terminal should show by default: requests (uvicorn) and problems, not every batch as JSON.
# (The namespace is still required: Powertools serializes the cold-start metric before checking.)
QUIET_LAMBDA_ENV = {
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Towerlight",
}


def create_local_app(*apps: FastAPI) -> FastAPI:
    """One app with the API routes (and exception handlers) of each of ``apps``, plus one ``/health``.

    Example::

        >>> app = create_local_app(create_recommend_app(), create_track_app())
        >>> sorted(r.path for r in app.routes if isinstance(r, APIRoute))
        ['/events', '/health', '/items/{item_id}/similar', '/recommendations/{user_id}']
    """
    local = create_app("local")
    for app in apps:
        local.exception_handlers.update(app.exception_handlers)
        local.router.routes += [r for r in app.routes if isinstance(r, APIRoute) and r.path != "/health"]
    return local


def start_local_stack(stack: contextlib.ExitStack) -> list[str]:
    """Start what the environment does not configure; returns one line per thing started.

    Everything started is stopped when ``stack`` closes. Example::

        >>> with contextlib.ExitStack() as stack:
        ...     start_local_stack(stack)
        ['Postgres (embedded; migrations applied now: 1): postgresql://...', 'SQS (moto server): ...']
    """
    started: list[str] = []
    if not os.environ.get("DATABASE_URL"):
        from towerlight.db.connection import connect
        from towerlight.db.migrate import migrate
        from towerlight_offline.local.postgres import ensure_database_url

        url = ensure_database_url()
        with connect() as conn:
            applied = migrate(conn)
        started.append(f"Postgres (embedded; migrations applied now: {len(applied)}): {url}")
    if not os.environ.get("EVENTS_QUEUE_URL"):
        from towerlight_offline.local.moto_server import configure_env, ensure_queue, start_moto_server

        server = stack.enter_context(start_moto_server())
        configure_env(server.endpoint_url)
        os.environ["EVENTS_QUEUE_URL"] = ensure_queue(EVENTS_QUEUE)
        started.append(f"SQS (moto server): {os.environ['EVENTS_QUEUE_URL']}")
    if not os.environ.get("TOWERLIGHT_STORE"):
        from towerlight_offline.local.store import ensure_store_uri

        started.append(f"artifact store (local directory): {ensure_store_uri()}")
    get_settings.cache_clear()  # settings are read once per process; the environment just changed
    return started


def run(args: argparse.Namespace) -> int:
    import uvicorn  # deferred: only this command needs it

    for name, value in QUIET_LAMBDA_ENV.items():
        os.environ.setdefault(name, value)
    # uvicorn re-raises SIGTERM once it has shut down; exiting through Python unwinds the stack below,
    # so the moto server, the worker and the embedded Postgres stop with us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stack:
        for line in start_local_stack(stack):
            console.say(f"started {line}")
        settings = get_settings()
        app = create_local_app(create_recommend_app(), create_track_app())
        if not args.no_worker:
            worker = QueueWorker(settings.require_queue(), load_function_handler("Ingest"))
            # The handler module routes the `towerlight` loggers to its own JSON logger (right in Lambda,
            # where it is alone); here the API shares the process, so logging goes back to normal.
            _restore_logger("towerlight")
            stack.enter_context(worker.running())
            console.say(f"ingest worker draining {worker.queue_url}")
        console.say(f"API on http://{args.host}:{args.port} (docs: http://{args.host}:{args.port}/docs); Ctrl-C stops")
        uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info")).run()
    console.say("stopped")
    return 0


def _restore_logger(name: str) -> None:
    log = logging.getLogger(name)
    log.handlers.clear()
    log.propagate = True
    log.setLevel(logging.NOTSET)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="the recommend + track API on localhost (docs at /docs), with a local ingest worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--no-worker", action="store_true", help="do not drain the events queue")
    parser.set_defaults(func=run)
