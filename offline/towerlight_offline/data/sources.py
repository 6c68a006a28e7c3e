"""Where a ``Dataset`` comes from: Postgres, or interaction/item/user files (CSV or Parquet).

The file parsing and validation here is the one the importer uses too (``read_files``): every bad row is
reported with its line (CSV: the line number, header = line 1; Parquet: the 0-based row index) and a
reason, and nothing is returned until every file is clean.

File columns (anything else in items/users files becomes ``attributes``):

- interactions: ``user_id, item_id, timestamp`` (unix seconds or ISO-8601; naive times are UTC) and
  optionally ``event_type`` (default ``rating`` when the file has a ``value`` column, else ``view``),
  ``value``, ``event_id`` (a UUID; by default derived from user, item, time and type, so re-reading
  the same file yields the same ids);
- items: ``item_id`` and optionally ``title``, ``categories`` (``|``-separated in CSV, a list in
  Parquet), ``active`` (true/false);
- users: ``user_id``.

Example::

    >>> dataset = dataset_from_files(Path("interactions.csv"), items=Path("items.csv"))
    >>> dataset.summary()
    'files: 100,000 interactions, 943 users, 1,682 items'
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from towerlight.errors import ValidationError
from towerlight.event_types import EVENT_TYPES, POSITIVE_EVENT_TYPES
from towerlight_offline.data.dataset import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, Dataset

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 50
# Fixed forever: derived event ids depend on it, and they make re-imports idempotent.
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://towerlight.dev/ns/event")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes
_LATEST_TIMESTAMP = 4_102_444_800  # 2100-01-01: larger "seconds" are almost surely milliseconds
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_INT = r"[+-]?(?:0|[1-9]\d*)"
_FLOAT = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


@dataclass(frozen=True)
class RowError:
    """One problem: the file, its line (CSV) or row index (Parquet), ``None`` for the whole file."""

    file: str
    line: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


@dataclass
class ParsedFiles:
    """Validated file contents, in the shape the importer writes.

    ``interactions`` has the ``Dataset`` columns plus ``event_id`` (str) and ``time_us`` (int64 unix
    microseconds); ``items`` keeps ``title``/``active`` as ``None`` when a file left them out; ``rows``
    counts the data rows read per file (blank lines excluded).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    rows: dict[str, int] = field(default_factory=dict)


class _Problems:
    """Problems found in one file, one entry per bad row (its reasons joined)."""

    def __init__(self, path: Path, is_csv: bool) -> None:
        self.file = str(path)
        self.is_csv = is_csv
        self.whole_file: list[tuple[int | None, str]] = []  # (line, reason): the header, or None
        self.by_row: dict[int, list[str]] = {}

    def add(self, rows: Iterable[int], reason: str | Callable[[int], str]) -> None:
        for row in rows:
            self.by_row.setdefault(int(row), []).append(reason(row) if callable(reason) else reason)

    def where(self, mask: pd.Series, reason: str | Callable[[int], str]) -> None:
        self.add(mask.index[mask.to_numpy(dtype=bool)], reason)

    def line(self, row: int) -> int:
        return row + 2 if self.is_csv else row  # CSV: the header is line 1

    def errors(self) -> list[RowError]:
        found = [RowError(self.file, line, reason) for line, reason in self.whole_file]
        found += [RowError(self.file, self.line(r), "; ".join(why)) for r, why in sorted(self.by_row.items())]
        return found


def _show(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _read_table(path: Path, problems: _Problems) -> pd.DataFrame | None:
    """The file as a frame indexed by row (CSV: all text, blank lines dropped), or None if unreadable."""
    if not path.is_file():
        problems.whole_file.append((None, "no such file"))
        return None
    try:
        if problems.is_csv:
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=False,
                encoding="utf-8-sig",  # also reads spreadsheet exports that start with a BOM
            )
            frame.columns = [str(c).strip() for c in frame.columns]
            blank = (frame == "").all(axis=1) if len(frame.columns) else pd.Series(False, index=frame.index)
            return frame[~blank]
        frame = pd.read_parquet(path)
        frame.columns = [str(c).strip() for c in frame.columns]
        return frame.reset_index(drop=True)
    except UnicodeDecodeError:
        problems.whole_file.append((None, "not UTF-8 text"))
    except Exception as exc:  # pandas/pyarrow raise many parser error types; all mean "unreadable"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        problems.whole_file.append((None, f"unreadable: {message}"))
    return None


def _open(path: Path | str) -> tuple[pd.DataFrame | None, _Problems]:
    path = Path(path)
    name = path.name.lower()
    is_parquet = name.endswith(_PARQUET_SUFFIXES)
    problems = _Problems(path, is_csv=not is_parquet)
    if not is_parquet and not name.endswith(_CSV_SUFFIXES):
        problems.whole_file.append((None, "unsupported file type (use .csv or .parquet)"))
        return None, problems
    return _read_table(path, problems), problems


def _require(frame: pd.DataFrame, columns: Sequence[str], problems: _Problems) -> bool:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = ", ".join(frame.columns)
        problems.whole_file.append(
            (1 if problems.is_csv else None, f"missing column(s) {', '.join(missing)} (found: {found})")
        )
    return not missing


def _scalar_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _text(column: pd.Series) -> pd.Series:
    """Stripped text with ``""`` for missing; integral floats (Parquet ids with NaNs) print as ints."""
    if pd.api.types.is_string_dtype(column) and not pd.api.types.is_object_dtype(column):
        return column.fillna("").str.strip()
    return column.map(_scalar_text).astype(str).str.strip()


def _numbers(column: pd.Series, problems: _Problems, label: str) -> pd.Series:
    """Floats (NaN when missing); non-numeric and infinite values are problems."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype(float)
    else:
        text = _text(column)
        values = pd.to_numeric(text.where(text != ""), errors="coerce").astype(float)
        problems.where((text != "") & values.isna(), lambda r: f"non-numeric {label} {_show(text[r])}")
    problems.where(pd.Series(np.isinf(values.to_numpy()), index=values.index), f"{label} must be finite")
    return values


def _timestamps(column: pd.Series, problems: _Problems) -> pd.Series:
    """Unix microseconds (int64) from unix seconds, ISO-8601 text or Parquet timestamps (naive = UTC)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        moments = column if column.dt.tz is not None else column.dt.tz_localize("UTC")
        filled = moments.dt.tz_convert("UTC").fillna(pd.Timestamp(0, tz="UTC"))
        seconds = (filled.dt.as_unit("us").astype("int64") / 1e6).where(moments.notna())
        problems.where(moments.isna(), "missing timestamp")
    elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        seconds = column.astype(float)
        problems.where(seconds.isna(), "missing timestamp")
    else:
        text = _text(column)
        seconds = pd.to_numeric(text.where(text.str.fullmatch(_FLOAT)), errors="coerce").astype(float)
        iso = text.where((text != "") & seconds.isna()).dropna()
        if len(iso):
            parsed = pd.to_datetime(iso, format="ISO8601", utc=True, errors="coerce")
            ok = parsed.notna()
            seconds.loc[parsed.index[ok]] = parsed[ok].dt.as_unit("us").astype("int64").astype(float) / 1e6
        problems.where(text == "", "missing timestamp")
        problems.where((text != "") & seconds.isna(), lambda r: f"bad timestamp {_show(text[r])}")
    present = seconds.notna()
    out_of_range = present & ~seconds.between(0, _LATEST_TIMESTAMP, inclusive="left")
    problems.where(out_of_range, "timestamp out of range (expected unix seconds after 1970 or ISO-8601)")
    valid = present & ~out_of_range
    return (seconds.where(valid, 0.0) * 1e6).round().astype("int64")


def derived_event_id(user_id: str, item_id: str, time_us: int, event_type: str) -> str:
    """The event id of an interaction given without one: ``uuid5(EVENT_ID_NAMESPACE, ...)`` as a string.

    Written out (rather than ``str(uuid.uuid5(...))``) because it runs once per imported row.

    Example::

        >>> derived_event_id("u1", "i1", 1_700_000_000_000_000, "view")
        '4c4c7dad-2e7d-51b6-ac07-38077c900b9b'
    """
    name = f"{user_id}\x1f{item_id}\x1f{time_us}\x1f{event_type}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _event_ids(
    frame: pd.DataFrame,
    users: pd.Series,
    items: pd.Series,
    time_us: pd.Series,
    types: pd.Series,
    problems: _Problems,
) -> list[str]:
    given = _text(frame["event_id"]) if "event_id" in frame.columns else pd.Series("", index=frame.index)
    ids: list[str] = []
    columns = (frame.index, given, users, items, time_us, types)
    # .tolist() first: iterating Arrow-backed columns element by element is ~10x slower
    for row, text, user, item, micros, event_type in zip(*(c.tolist() for c in columns), strict=True):
        if not text:
            ids.append(derived_event_id(user, item, micros, event_type))
            continue
        try:
            ids.append(str(uuid.UUID(text)))
        except ValueError:
            problems.add([row], f"bad event_id {_show(text)} (expected a UUID)")
            ids.append("")
    return ids


def _parse_interactions(frame: pd.DataFrame, problems: _Problems) -> pd.DataFrame | None:
    if not _require(frame, ("user_id", "item_id", "timestamp"), problems):
        return None
    users, items = _text(frame["user_id"]), _text(frame["item_id"])
    problems.where(users == "", "missing user_id")
    problems.where(items == "", "missing item_id")
    time_us = _timestamps(frame["timestamp"], problems)
    has_value = "value" in frame.columns
    values = _numbers(frame["value"], problems, "value") if has_value else pd.Series(np.nan, index=frame.index)
    default_type = "rating" if has_value else "view"
    if "event_type" in frame.columns:
        types = _text(frame["event_type"]).str.lower().replace("", default_type)
        problems.where(~types.isin(list(EVENT_TYPES)), lambda r: f"unknown event_type {_show(types[r])}")
    else:
        types = pd.Series(default_type, index=frame.index, dtype="str")
    event_ids = _event_ids(frame, users, items, time_us, types, problems)
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": time_us // 1_000_000,
            "event_type": types,
            "value": values.astype(float),
            "event_id": pd.Series(event_ids, index=frame.index, dtype="str"),
            "time_us": time_us,
        }
    ).reset_index(drop=True)


def _unique_ids(ids: pd.Series, label: str, problems: _Problems) -> None:
    problems.where(ids == "", f"missing {label}")
    repeated = ids.duplicated(keep="first") & (ids != "")
    if repeated.any():
        first = {value: row for row, value in ids[~ids.duplicated(keep="first")].items()}
        problems.where(
            repeated,
            lambda r: f"duplicate {label} {_show(ids[r])} (first on line {problems.line(first[ids[r]])})",
        )


def _json_value(value: Any) -> Any:
    """A JSON-ready Python value (None for missing), from whatever a Parquet cell holds."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.ndarray | list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _typed_text(text: pd.Series) -> list[Any]:
    """A CSV column as ints, floats, booleans or strings, decided for the whole column (None if blank)."""
    present = text[text != ""]
    convert: Callable[[str], Any] = str
    if present.empty:
        convert = str
    elif present.str.fullmatch(_INT).all() and not present.str.fullmatch(r"[+-]?0\d+").any():
        convert = int  # "01002" stays text: a leading zero means an identifier (zip code), not a number
    elif present.str.fullmatch(_FLOAT).all() and not present.str.fullmatch(r"[+-]?0\d+(?:\.\d*)?").any():
        convert = float
    elif present.str.lower().isin(["true", "false"]).all():
        convert = lambda v: v.lower() == "true"  # noqa: E731
    return [convert(v) if v != "" else None for v in text.tolist()]


def _attributes(frame: pd.DataFrame, columns: Sequence[str], is_csv: bool) -> list[dict[str, Any]]:
    if not columns:
        return [{} for _ in range(len(frame))]
    typed = [_typed_text(_text(frame[c])) if is_csv else [_json_value(v) for v in frame[c].tolist()] for c in columns]
    return [
        {name: v for name, v in zip(columns, row, strict=True) if v is not None} for row in zip(*typed, strict=True)
    ]


def _categories(column: pd.Series) -> list[list[str]]:
    def split(value: Any) -> list[str]:
        if isinstance(value, np.ndarray | list | tuple):
            return [str(v).strip() for v in value if v is not None and str(v).strip()]
        text = _scalar_text(value)
        return [part.strip() for part in text.split("|") if part.strip()]

    return [split(v) for v in column.tolist()]


def _active_flags(column: pd.Series, problems: _Problems) -> list[bool | None]:
    if pd.api.types.is_bool_dtype(column):
        return [None if pd.isna(v) else bool(v) for v in column.tolist()]
    flags: list[bool | None] = []
    for row, text in zip(column.index.tolist(), _text(column).str.lower().tolist(), strict=True):
        if text in _TRUE or text in _FALSE:
            flags.append(text in _TRUE)
        else:
            if text:
                problems.add([row], f"bad active value {_show(text)} (expected true or false)")
            flags.append(None)
    return flags


def _parse_items(frame: pd.DataFrame, problems: _Problems) -> pd.DataFrame | None:
    if not _require(frame, ("item_id",), problems):
        return None
    ids = _text(frame["item_id"])
    _unique_ids(ids, "item_id", problems)
    titles = [t or None for t in _text(frame["title"]).tolist()] if "title" in frame.columns else [None] * len(ids)
    categories = _categories(frame["categories"]) if "categories" in frame.columns else [[] for _ in ids]
    active = _active_flags(frame["active"], problems) if "active" in frame.columns else [None] * len(frame)
    extra = [c for c in frame.columns if c not in ("item_id", "title", "categories", "active")]
    return pd.DataFrame(
        {
            "item_id": ids.to_numpy(),
            "title": pd.Series(titles, dtype=object),
            "categories": pd.Series(categories, dtype=object),
            "attributes": pd.Series(_attributes(frame, extra, problems.is_csv), dtype=object),
            "active": pd.Series(active, dtype=object),
        }
    )


def _parse_users(frame: pd.DataFrame, problems: _Problems) -> pd.DataFrame | None:
    if not _require(frame, ("user_id",), problems):
        return None
    ids = _text(frame["user_id"])
    _unique_ids(ids, "user_id", problems)
    extra = [c for c in frame.columns if c != "user_id"]
    return pd.DataFrame(
        {
            "user_id": ids.to_numpy(),
            "attributes": pd.Series(_attributes(frame, extra, problems.is_csv), dtype=object),
        }
    )


def validation_error(errors: Sequence[RowError]) -> ValidationError:
    """The error for bad rows: ``details`` lists ``{file, line, reason}``, at most ``MAX_REPORTED_ERRORS``.

    When more rows are bad, a last entry with ``file=None`` says how many were left out.
    """
    per_file: dict[str, int] = {}
    for error in errors:
        per_file[error.file] = per_file.get(error.file, 0) + 1
    counts = ", ".join(f"{Path(name).name}: {n}" for name, n in per_file.items())
    details = [e.as_dict() for e in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        left = len(errors) - MAX_REPORTED_ERRORS
        details.append({"file": None, "line": None, "reason": f"... and {left} more bad rows"})
    return ValidationError(f"{len(errors)} bad rows ({counts}); nothing was loaded", details=details)


def read_files(
    interactions: Path | str, items: Path | str | None = None, users: Path | str | None = None
) -> ParsedFiles:
    """Read and validate the files; ``ValidationError`` lists every bad row of every file.

    Example::

        >>> parsed = read_files("interactions.csv", items="items.parquet")
        >>> parsed.rows
        {'interactions': 100000, 'items': 1682}
    """
    errors: list[RowError] = []
    parsed: dict[str, pd.DataFrame | None] = {}
    rows: dict[str, int] = {}
    parsers = {"interactions": _parse_interactions, "items": _parse_items, "users": _parse_users}
    for kind, path in (("interactions", interactions), ("items", items), ("users", users)):
        if path is None:
            continue
        frame, problems = _open(path)
        parsed[kind] = None if frame is None else parsers[kind](frame, problems)
        rows[kind] = 0 if frame is None else len(frame)
        errors += problems.errors()
    if errors:
        raise validation_error(errors)
    result = parsed["interactions"]
    assert result is not None  # no errors, so it parsed
    logger.info("read %s", ", ".join(f"{n:,} {kind}" for kind, n in rows.items()))
    return ParsedFiles(result, parsed.get("items"), parsed.get("users"), rows)


# --- Dataset frames ---------------------------------------------------------------------------------


def items_frame(
    item_ids: Sequence[str],
    titles: Sequence[str | None] | None = None,
    categories: Sequence[list[str]] | None = None,
    attributes: Sequence[dict[str, Any]] | None = None,
    active: Sequence[bool | None] | None = None,
) -> pd.DataFrame:
    """A ``Dataset.items`` frame with the contract's types (missing title ``""``, missing active ``True``).

    Example::

        >>> items_frame(["i1"], ["Heat"]).loc[0, "active"]
        True
    """
    n = len(item_ids)
    return pd.DataFrame(
        {
            "item_id": pd.Series(list(item_ids), dtype="str"),
            "title": pd.Series(["" if t is None else t for t in (titles or [None] * n)], dtype="str"),
            "categories": pd.Series(
                list(categories) if categories is not None else [[] for _ in range(n)], dtype=object
            ),
            "attributes": pd.Series(
                list(attributes) if attributes is not None else [{} for _ in range(n)], dtype=object
            ),
            "active": pd.Series([True if a is None else bool(a) for a in (active or [None] * n)], dtype=bool),
        },
        columns=list(ITEM_COLUMNS),
    )


def users_frame(user_ids: Sequence[str], attributes: Sequence[dict[str, Any]] | None = None) -> pd.DataFrame:
    """A ``Dataset.users`` frame (``attributes`` default to ``{}``)."""
    return pd.DataFrame(
        {
            "user_id": pd.Series(list(user_ids), dtype="str"),
            "attributes": pd.Series(
                list(attributes) if attributes is not None else [{} for _ in user_ids], dtype=object
            ),
        },
        columns=list(USER_COLUMNS),
    )


def complete_catalogue(
    interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``items`` and ``users`` plus a bare row for every id the interactions use but they lack.

    Example::

        >>> items, users = complete_catalogue(interactions, items_frame([]), users_frame([]))
    """
    new_items = pd.unique(interactions["item_id"][~interactions["item_id"].isin(items["item_id"])])
    new_users = pd.unique(interactions["user_id"][~interactions["user_id"].isin(users["user_id"])])
    if len(new_items):
        items = pd.concat([items, items_frame(list(new_items))], ignore_index=True)
    if len(new_users):
        users = pd.concat([users, users_frame(list(new_users))], ignore_index=True)
    return items, users


def dataset_from_files(
    interactions: Path | str,
    items: Path | str | None = None,
    users: Path | str | None = None,
    *,
    name: str = "files",
) -> Dataset:
    """A ``Dataset`` from interaction (and optionally item and user) files, validated like an import.

    Repeated events (same ``event_id``) are kept once; items and users the interactions mention but the
    files lack get a bare row.

    Example::

        >>> dataset_from_files("interactions.csv", "items.csv", "users.csv", name="movielens-100k").summary()
        'movielens-100k: 100,000 interactions, 943 users, 1,682 items'
    """
    parsed = read_files(interactions, items, users)
    events = parsed.interactions.drop_duplicates("event_id")
    item_rows = parsed.items
    items_df = (
        items_frame([], [])
        if item_rows is None
        else items_frame(
            item_rows["item_id"].tolist(),
            item_rows["title"].tolist(),
            item_rows["categories"].tolist(),
            item_rows["attributes"].tolist(),
            item_rows["active"].tolist(),
        )
    )
    user_rows = parsed.users
    users_df = (
        users_frame([])
        if user_rows is None
        else users_frame(user_rows["user_id"].tolist(), user_rows["attributes"].tolist())
    )
    items_df, users_df = complete_catalogue(events, items_df, users_df)
    frame = events.loc[:, list(INTERACTION_COLUMNS)].reset_index(drop=True)
    return Dataset(name, frame, items_df, users_df)


def dataset_from_postgres(
    conn: psycopg.Connection, since: datetime | None = None, until: datetime | None = None
) -> Dataset:
    """The training ``Dataset`` from Postgres: positive events (``since <= ts < until``), every item and user.

    Only event types the event-type table marks ``positive`` (views, clicks, ratings, purchases, ...)
    are training interactions. Inactive items stay in ``items`` with ``active=False``.

    Example::

        >>> dataset_from_postgres(conn, since=datetime(2024, 1, 1, tzinfo=UTC)).summary()
        'postgres: 5,000 interactions, 100 users, 40 items'
    """
    for label, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"{label} must be timezone-aware, got {moment!r}")
    query = (
        "COPY (SELECT user_id, item_id, floor(extract(epoch FROM ts))::bigint, event_type, value FROM events"
        " WHERE event_type = ANY(%(types)s)"
        " AND (%(since)s::timestamptz IS NULL OR ts >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR ts < %(until)s)"
        " ORDER BY ts, event_id) TO STDOUT WITH (FORMAT csv)"
    )
    params = {"types": list(POSITIVE_EVENT_TYPES), "since": since, "until": until}
    buffer = io.BytesIO()
    with conn.cursor() as cur, cur.copy(query, params) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    dtypes = {"user_id": "str", "item_id": "str", "timestamp": "int64", "event_type": "str", "value": "float64"}
    if buffer.getbuffer().nbytes:
        interactions = pd.read_csv(
            buffer, names=list(dtypes), dtype=dtypes, keep_default_na=False, na_values={"value": [""]}
        )
    else:
        interactions = pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in dtypes.items()})
    items = conn.execute("SELECT item_id, title, categories, attributes, active FROM items ORDER BY item_id").fetchall()
    users = conn.execute("SELECT user_id, attributes FROM users ORDER BY user_id").fetchall()
    items_df = items_frame(*(list(column) for column in zip(*items, strict=True))) if items else items_frame([])
    users_df = users_frame(*(list(column) for column in zip(*users, strict=True))) if users else users_frame([])
    items_df, users_df = complete_catalogue(interactions, items_df, users_df)
    return Dataset("postgres", interactions, items_df, users_df)
