"""Import interaction, item and user files (CSV or Parquet) into Postgres, all or nothing, idempotently.

Files are parsed and validated by ``sources.read_files`` (the same code ``dataset_from_files`` uses);
one bad row anywhere raises ``ValidationError`` and nothing is written. Events go through
``towerlight.db.events.insert_events`` (the ingest function's write path), so importing a file twice
adds no rows; items and users are upserted.

Example::

    >>> report = import_files(conn, Path("interactions.csv"), Path("items.csv"), Path("users.csv"))
    >>> print(report.summary())
    interactions.csv: 100,000 read, 100,000 inserted, 0 duplicates
    ...
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psycopg

from towerlight.db.catalog import ItemRow, UserRow, upsert_items, upsert_users
from towerlight.db.events import EventRow, insert_events
from towerlight_offline.data.sources import read_files

logger = logging.getLogger(__name__)

EVENT_BATCH_ROWS = 50_000  # rows per COPY: bounds the memory held by one batch of EventRow objects


@dataclass(frozen=True)
class FileReport:
    """What one file did: rows read, rows inserted, rows updated (items/users), rows skipped.

    Skipped rows are events already stored (or repeated in the file), or items/users identical to the
    stored ones.
    """

    kind: str
    path: str
    read: int
    inserted: int
    updated: int
    skipped: int

    def summary(self) -> str:
        updated = f", {self.updated:,} updated" if self.kind != "interactions" else ""
        skipped = "duplicates" if self.kind == "interactions" else "unchanged"
        return (
            f"{Path(self.path).name} ({self.kind}): {self.read:,} read, {self.inserted:,} inserted"
            f"{updated}, {self.skipped:,} {skipped}"
        )


@dataclass
class ImportReport:
    """The per-file outcome of ``import_files`` and how long it took."""

    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0

    def file(self, kind: str) -> FileReport | None:
        return next((f for f in self.files if f.kind == kind), None)

    def summary(self) -> str:
        return "\n".join([*(f.summary() for f in self.files), f"done in {self.seconds:.1f} s"])


def _event_rows(interactions: pd.DataFrame) -> Iterator[list[EventRow]]:
    for start in range(0, len(interactions), EVENT_BATCH_ROWS):
        chunk = interactions.iloc[start : start + EVENT_BATCH_ROWS]
        times = pd.to_datetime(chunk["time_us"].to_numpy(), unit="us", utc=True).to_pydatetime()
        values = [None if math.isnan(v) else v for v in chunk["value"].tolist()]
        columns = (chunk[name].tolist() for name in ("event_id", "user_id", "item_id", "event_type"))
        yield [EventRow(*fields) for fields in zip(*columns, values, times, strict=True)]


def import_files(
    conn: psycopg.Connection,
    interactions: Path,
    items: Path | None = None,
    users: Path | None = None,
) -> ImportReport:
    """Validate the files, then write them in one transaction; returns rows read/inserted/skipped per file.

    Raises ``ValidationError`` (``details``: ``{file, line, reason}`` per bad row) before writing
    anything. Commits, unless ``conn`` is already inside a transaction the caller controls.

    Example::

        >>> import_files(conn, Path("interactions.parquet")).file("interactions").inserted
        100000
    """
    started = time.perf_counter()
    parsed = read_files(interactions, items, users)
    report = ImportReport()
    with conn.transaction():
        if parsed.items is not None and items is not None:
            rows = [
                ItemRow(item_id, title, categories, attributes, active)
                for item_id, title, categories, attributes, active in parsed.items.itertuples(index=False)
            ]
            count = upsert_items(conn, rows)
            unchanged = len(rows) - count.inserted - count.updated
            report.files.append(FileReport("items", str(items), len(rows), count.inserted, count.updated, unchanged))
        if parsed.users is not None and users is not None:
            user_rows = [UserRow(u, a) for u, a in parsed.users.itertuples(index=False)]
            count = upsert_users(conn, user_rows)
            unchanged = len(user_rows) - count.inserted - count.updated
            report.files.append(
                FileReport("users", str(users), len(user_rows), count.inserted, count.updated, unchanged)
            )
        inserted = sum(len(insert_events(conn, batch)) for batch in _event_rows(parsed.interactions))
        read = len(parsed.interactions)
        report.files.insert(0, FileReport("interactions", str(interactions), read, inserted, 0, read - inserted))
    report.seconds = time.perf_counter() - started
    logger.info("import finished: %s", report.summary().replace("\n", "; "))
    return report
