"""``towerlight models list|promote VERSION|rollback``: see and move the ``CURRENT`` model pointer.

Example::

    towerlight models list --store file:///tmp/towerlight-store
    towerlight models promote 20261122T011500Z-3fa2c1
    towerlight models rollback
"""

from __future__ import annotations

import argparse
from typing import Any

from towerlight.errors import ArtifactError
from towerlight.store import ArtifactStore, open_store
from towerlight.store.versions import list_versions, promote, read_manifest, rollback
from towerlight_offline import console
from towerlight_offline.gate import manifest_metric, served_row
from towerlight_offline.local.store import ensure_store_uri


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("models", help="list published versions, promote one, or roll back")
    parser.add_argument(
        "--store", metavar="URI", help="artifact store (default: $TOWERLIGHT_STORE, else the local store)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="published versions, newest first").set_defaults(func=list_command)
    promote_parser = actions.add_parser("promote", help="point CURRENT at VERSION (bypasses the gate)")
    promote_parser.add_argument("version")
    promote_parser.set_defaults(func=promote_command)
    actions.add_parser("rollback", help="point CURRENT back at the previous version").set_defaults(
        func=rollback_command
    )
    for sub in actions.choices.values():  # let --store also follow the action
        sub.add_argument("--store", metavar="URI", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _store(args: argparse.Namespace) -> ArtifactStore:
    return open_store(args.store or ensure_store_uri())


def _gate_summary(manifest: dict[str, Any]) -> str:
    gate = manifest.get("gate") or {}
    if not gate:
        return ""
    return "passed" if gate.get("promote") else "failed"


def list_command(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = []
    for entry in list_versions(store):
        try:
            manifest = read_manifest(store, entry["version"])
        except ArtifactError:
            manifest = {}
        ndcg = manifest_metric(manifest, "ndcg@10", served_row(manifest))
        recall = manifest_metric(manifest, "recall@10", served_row(manifest))
        status = "CURRENT" if entry["is_current"] else "previous" if entry["is_previous"] else ""
        rows.append(
            [
                entry["version"],
                status,
                entry["created_at"],
                "-" if ndcg is None else ndcg,
                "-" if recall is None else recall,
                _gate_summary(manifest),
                f"{entry['bytes'] / 1e6:.1f} MB",
            ]
        )
    if not rows:
        console.say(f"no published versions in {store.uri}")
        return 0
    headers = ["version", "status", "created_at", "served NDCG@10", "Recall@10", "gate", "size"]
    console.say(console.table(headers, rows))
    return 0


def promote_command(args: argparse.Namespace) -> int:
    pointer = promote(_store(args), args.version)
    console.say(f"CURRENT -> {pointer['version']} (previous {pointer.get('previous')})")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    pointer = rollback(_store(args))
    console.say(f"rolled back: CURRENT -> {pointer['version']} (previous {pointer.get('previous')})")
    return 0
