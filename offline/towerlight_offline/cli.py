"""The ``towerlight`` command: parses arguments and calls library functions, nothing more.

Each sub-command lives in ``towerlight_offline.commands.<name>`` and exposes ``register(subparsers)``;
the parser sets ``func`` to a callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from towerlight.errors import TowerlightError
from towerlight_offline import console

COMMANDS = (
    "db",
    "data",
    "import_",
    "train",
    "evaluate",
    "models",
    "ope",
    "simulate",
    "promotions",
    "serve",
    "invoke",
    "bench",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="towerlight", description="Serverless recommender: train, serve, operate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"towerlight_offline.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before torch loads: busy-waiting OpenMP threads make training 4x slower on a shared 2-core machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except TowerlightError as exc:
        console.error(exc.message, exc.details)
        return 2
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
