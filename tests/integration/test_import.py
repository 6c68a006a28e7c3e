"""Importing CSV/Parquet files into Postgres, and loading a Dataset from files or from Postgres."""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from towerlight.db.catalog import set_item_active
from towerlight.db.events import EventRow, insert_events
from towerlight.errors import ValidationError
from towerlight_offline.data.dataset import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS
from towerlight_offline.data.importer import import_files
from towerlight_offline.data.sources import (
    EVENT_ID_NAMESPACE,
    MAX_REPORTED_ERRORS,
    dataset_from_files,
    dataset_from_postgres,
    derived_event_id,
)

pytestmark = pytest.mark.integration

INTERACTIONS = """\
    user_id,item_id,timestamp,event_type,value
    u1,i1,1700000000,rating,4
    u1,i2,2023-11-14T22:15:00Z,view,
    u2,i1,1700000100,,5
    u2,i3,2023-11-14 23:00:00+01:00,purchase,19.99
    """
ITEMS = """\
    item_id,title,categories,year,zip,active
    i1,Heat,Action|Crime,1995,01002,true
    i2,Up,Animation,2009,12345,
    i3,Alien,,1979,,false
    """
USERS = """\
    user_id,age,gender
    u1,24,M
    u2,,F
    """


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return (
        write(tmp_path / "interactions.csv", INTERACTIONS),
        write(tmp_path / "items.csv", ITEMS),
        write(tmp_path / "users.csv", USERS),
    )


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    assert row is not None
    return int(row[0])


def test_good_files_load(db: psycopg.Connection, files: tuple[Path, Path, Path]) -> None:
    # GIVEN valid interactions (unix and ISO times, a blank event_type), items and users
    interactions, items, users = files
    # WHEN importing them
    report = import_files(db, interactions, items, users)
    # THEN every row is stored, typed, and the report says so
    assert [(f.kind, f.read, f.inserted, f.skipped) for f in report.files] == [
        ("interactions", 4, 4, 0),
        ("items", 3, 3, 0),
        ("users", 2, 2, 0),
    ]
    events = db.execute("SELECT user_id, item_id, event_type, value FROM events ORDER BY ts, user_id").fetchall()
    assert events == [
        ("u2", "i3", "purchase", 19.99),
        ("u1", "i1", "rating", 4.0),
        ("u1", "i2", "view", None),
        ("u2", "i1", "rating", 5.0),
    ]
    by_item = {r[0]: r[1:] for r in db.execute("SELECT item_id, title, categories, attributes, active FROM items")}
    assert by_item == {
        "i1": ("Heat", ["Action", "Crime"], {"year": 1995, "zip": "01002"}, True),
        "i2": ("Up", ["Animation"], {"year": 2009, "zip": "12345"}, True),
        "i3": ("Alien", [], {"year": 1979}, False),
    }
    users_stored = dict(db.execute("SELECT user_id, attributes FROM users").fetchall())
    assert users_stored == {"u1": {"age": 24, "gender": "M"}, "u2": {"gender": "F"}}
    db.rollback()


def test_timestamps_and_default_event_types(db: psycopg.Connection, files: tuple[Path, Path, Path]) -> None:
    # GIVEN the interactions file: one blank event_type in a file with a value column
    interactions, _, _ = files
    # WHEN importing it
    import_files(db, interactions)
    # THEN ISO times with offsets are converted to UTC, and the blank type defaults to rating
    rows = db.execute("SELECT user_id, item_id, event_type, ts FROM events ORDER BY user_id, item_id").fetchall()
    assert rows == [
        ("u1", "i1", "rating", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("u1", "i2", "view", datetime(2023, 11, 14, 22, 15, tzinfo=UTC)),
        ("u2", "i1", "rating", datetime(2023, 11, 14, 22, 15, tzinfo=UTC)),
        ("u2", "i3", "purchase", datetime(2023, 11, 14, 22, 0, tzinfo=UTC)),
    ]
    db.rollback()


def test_importing_twice_adds_nothing(db: psycopg.Connection, files: tuple[Path, Path, Path]) -> None:
    # GIVEN files imported once
    import_files(db, *files)
    # WHEN importing them again
    again = import_files(db, *files)
    # THEN no row is added or changed
    assert [(f.kind, f.read, f.inserted, f.updated, f.skipped) for f in again.files] == [
        ("interactions", 4, 0, 0, 4),
        ("items", 3, 0, 0, 3),
        ("users", 2, 0, 0, 2),
    ]
    assert (count(db, "events"), count(db, "items"), count(db, "users")) == (4, 3, 2)
    db.rollback()


def test_interactions_without_value_default_to_view(db: psycopg.Connection, tmp_path: Path) -> None:
    # GIVEN a file of just user, item and time, with a repeated row
    path = write(tmp_path / "clicks.csv", "user_id,item_id,timestamp\nu1,i1,1700000000\nu1,i1,1700000000\n")
    # WHEN importing it
    report = import_files(db, path)
    # THEN one view is stored and the repeat is reported as a duplicate
    assert (report.files[0].inserted, report.files[0].skipped) == (1, 1)
    assert db.execute("SELECT event_type, value FROM events").fetchall() == [("view", None)]
    db.rollback()


def test_given_event_ids_are_kept(db: psycopg.Connection, tmp_path: Path) -> None:
    # GIVEN an interaction with its own event id (upper case)
    event_id = uuid.uuid4()
    path = write(tmp_path / "e.csv", f"event_id,user_id,item_id,timestamp\n{str(event_id).upper()},u1,i1,1700000000\n")
    # WHEN importing it
    import_files(db, path)
    # THEN it is stored under that id
    assert db.execute("SELECT event_id FROM events").fetchall() == [(event_id,)]
    db.rollback()


def test_bad_rows_are_listed_and_nothing_is_written(db: psycopg.Connection, tmp_path: Path) -> None:
    # GIVEN interactions with bad rows on lines 3, 5, 6, 7, 9 and 10 (line 8 is blank), and items with a
    # duplicate on line 3 and a bad active flag on line 4
    interactions = write(
        tmp_path / "interactions.csv",
        """\
        user_id,item_id,timestamp,event_type,value,event_id
        u1,i1,1700000000,view,,
        ,i1,1700000000,view,,
        u1,i2,1700000000,click,,
        u1,i3,yesterday,view,,
        u1,i4,1700000000,teleport,,
        u1,i5,1700000000,rating,lots,

        u1,i6,1700000000000,view,,
        u1,i7,1700000000,view,,not-a-uuid
        """,
    )
    items = write(tmp_path / "items.csv", "item_id,title,active\ni1,A,true\ni1,B,true\ni2,C,maybe\n")
    users = write(tmp_path / "users.csv", "user_id,age\nu1,24\n")
    # WHEN importing
    with pytest.raises(ValidationError) as raised:
        import_files(db, interactions, items, users)
    # THEN exactly those lines are reported, with their reasons
    details = raised.value.details
    assert [(Path(d["file"]).name, d["line"]) for d in details] == [
        ("interactions.csv", 3),
        ("interactions.csv", 5),
        ("interactions.csv", 6),
        ("interactions.csv", 7),
        ("interactions.csv", 9),
        ("interactions.csv", 10),
        ("items.csv", 3),
        ("items.csv", 4),
    ]
    reasons = [d["reason"] for d in details]
    assert reasons[0] == "missing user_id"
    assert reasons[1] == "bad timestamp 'yesterday'"
    assert reasons[2] == "unknown event_type 'teleport'"
    assert reasons[3] == "non-numeric value 'lots'"
    assert "out of range" in reasons[4]
    assert "bad event_id" in reasons[5]
    assert reasons[6] == "duplicate item_id 'i1' (first on line 2)"
    assert "bad active value 'maybe'" in reasons[7]
    # AND nothing was written, not even from the valid users file
    assert (count(db, "events"), count(db, "items"), count(db, "users")) == (0, 0, 0)
    db.rollback()


def test_missing_columns_and_files_are_reported(tmp_path: Path) -> None:
    # GIVEN an interactions file without a timestamp column and an items path that does not exist
    interactions = write(tmp_path / "i.csv", "user_id,item_id\nu1,i1\n")
    # WHEN reading them
    with pytest.raises(ValidationError) as raised:
        dataset_from_files(interactions, tmp_path / "missing.parquet", tmp_path / "users.json")
    # THEN each file has one whole-file problem
    assert [(Path(d["file"]).name, d["line"], d["reason"].split(" (")[0]) for d in raised.value.details] == [
        ("i.csv", 1, "missing column(s) timestamp"),
        ("missing.parquet", None, "no such file"),
        ("users.json", None, "unsupported file type"),
    ]


def test_the_error_list_is_capped(tmp_path: Path) -> None:
    # GIVEN 120 rows without a user
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n" + ",i1,1700000000\n" * 120)
    # WHEN reading
    with pytest.raises(ValidationError) as raised:
        dataset_from_files(path)
    # THEN the first 50 are listed, then how many more there are
    details = raised.value.details
    assert len(details) == MAX_REPORTED_ERRORS + 1
    assert details[0]["line"] == 2
    assert details[-1] == {"file": None, "line": None, "reason": "... and 70 more bad rows"}
    assert "120 bad rows" in raised.value.message


def test_parquet_files_import(db: psycopg.Connection, tmp_path: Path) -> None:
    # GIVEN Parquet files with native types: datetimes, numbers, lists of categories
    interactions = tmp_path / "interactions.parquet"
    pd.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": ["i1", "i2"],
            "timestamp": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]),
            "event_type": ["click", "like"],
        }
    ).to_parquet(interactions)
    items = tmp_path / "items.parquet"
    pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "title": ["Heat", None],
            "categories": [["Action", "Crime"], []],
            "price": [9.5, float("nan")],
            "active": [True, False],
        }
    ).to_parquet(items)
    # WHEN importing them
    report = import_files(db, interactions, items)
    # THEN they are stored like their CSV equivalents
    assert [(f.kind, f.inserted) for f in report.files] == [("interactions", 2), ("items", 2)]
    events = db.execute("SELECT user_id, item_id, event_type, ts FROM events ORDER BY ts").fetchall()
    assert events == [
        ("1", "i1", "click", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2", "i2", "like", datetime(2024, 1, 2, tzinfo=UTC)),
    ]
    stored = db.execute("SELECT item_id, title, categories, attributes, active FROM items ORDER BY 1").fetchall()
    assert stored == [("i1", "Heat", ["Action", "Crime"], {"price": 9.5}, True), ("i2", None, [], {}, False)]
    db.rollback()


def test_parquet_bad_rows_use_row_indexes(tmp_path: Path) -> None:
    # GIVEN a Parquet file whose rows 1 and 2 (0-based) lack a user or a time
    path = tmp_path / "i.parquet"
    pd.DataFrame(
        {"user_id": ["u1", None, "u3"], "item_id": ["i1", "i2", "i3"], "timestamp": [1.7e9, 1.7e9, None]}
    ).to_parquet(path)
    # WHEN reading
    with pytest.raises(ValidationError) as raised:
        dataset_from_files(path)
    # THEN the rows are named by index
    assert [(d["line"], d["reason"]) for d in raised.value.details] == [
        (1, "missing user_id"),
        (2, "missing timestamp"),
    ]


def test_dataset_from_files_follows_the_contract(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    # GIVEN the files plus an interaction on an item and by a user the other files lack
    _, items, users = files
    extra = write(tmp_path / "more.csv", textwrap.dedent(INTERACTIONS) + "u9,i9,1700000500,click,\n")
    # WHEN loading a Dataset
    dataset = dataset_from_files(extra, items, users, name="demo")
    # THEN the frames have the contract's columns and types, and the catalogue is completed
    assert tuple(dataset.interactions.columns) == INTERACTION_COLUMNS
    assert tuple(dataset.items.columns) == ITEM_COLUMNS
    assert tuple(dataset.users.columns) == USER_COLUMNS
    assert dataset.interactions["timestamp"].dtype == "int64"
    assert dataset.interactions["value"].isna().tolist() == [False, True, False, False, True]
    assert dataset.interactions["timestamp"].tolist()[:3] == [1700000000, 1700000100, 1700000100]
    assert dataset.items.set_index("item_id").loc["i9"].to_dict() == {
        "title": "",
        "categories": [],
        "attributes": {},
        "active": True,
    }
    assert dataset.items.set_index("item_id").loc["i3", "active"] == False  # noqa: E712 (numpy bool)
    assert sorted(dataset.users["user_id"]) == ["u1", "u2", "u9"]


def test_dataset_from_postgres_keeps_training_events(db: psycopg.Connection, files: tuple[Path, Path, Path]) -> None:
    # GIVEN imported files, plus a block and an impression, and an inactive item
    import_files(db, *files)
    with db.transaction():
        insert_events(
            db,
            [
                EventRow(str(uuid.uuid4()), "u1", "i3", "block", None, datetime(2023, 11, 15, tzinfo=UTC)),
                EventRow(str(uuid.uuid4()), "u1", "i3", "impression", None, datetime(2023, 11, 15, tzinfo=UTC)),
            ],
        )
        set_item_active(db, "i1", False)
    # WHEN loading the dataset, whole and for a window
    dataset = dataset_from_postgres(db)
    window = dataset_from_postgres(
        db, since=datetime(2023, 11, 14, 22, 14, tzinfo=UTC), until=datetime(2023, 11, 14, 22, 15, tzinfo=UTC)
    )
    # THEN only positive event types train, inactive items are kept but flagged, windows are half-open
    assert sorted(dataset.interactions["event_type"]) == ["purchase", "rating", "rating", "view"]
    assert dataset.interactions["timestamp"].is_monotonic_increasing
    assert dataset.items.set_index("item_id")["active"].to_dict() == {"i1": False, "i2": True, "i3": False}
    assert dataset.users.set_index("user_id").loc["u1", "attributes"] == {"age": 24, "gender": "M"}
    assert window.interactions[["user_id", "item_id"]].values.tolist() == []
    with pytest.raises(ValueError, match="timezone-aware"):
        dataset_from_postgres(db, since=datetime(2024, 1, 1))
    db.rollback()


def test_dataset_from_postgres_of_an_empty_database(db: psycopg.Connection) -> None:
    dataset = dataset_from_postgres(db)
    assert tuple(dataset.interactions.columns) == INTERACTION_COLUMNS
    assert dataset.interactions["timestamp"].dtype == "int64"
    assert (len(dataset.interactions), len(dataset.items), len(dataset.users)) == (0, 0, 0)
    db.rollback()


def test_csv_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffuser_id,item_id,timestamp\nu1,i1,1700000000\n".encode())
    assert dataset_from_files(path).interactions["user_id"].tolist() == ["u1"]


def test_dataset_from_postgres_window_bounds(db: psycopg.Connection, files: tuple[Path, Path, Path]) -> None:
    # GIVEN the imported files (events at 22:00, 22:13:20, 22:15, 22:15)
    import_files(db, *files)
    # WHEN loading [22:13:20, 22:15)
    window = dataset_from_postgres(
        db,
        since=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        until=datetime(2023, 11, 14, 22, 15, tzinfo=UTC),
    )
    # THEN only the event at 22:13:20 is in
    assert window.interactions[["user_id", "item_id"]].values.tolist() == [["u1", "i1"]]
    db.rollback()


def test_derived_event_ids_are_uuid5_of_the_event() -> None:
    # GIVEN events given without an id
    cases = [("u1", "i1", 1_700_000_000_000_000, "view"), ("ü", "", 0, "rating"), ("a" * 300, "b", -1, "click")]
    # THEN the fast derivation is exactly uuid5 over user, item, time and type
    for user, item, micros, event_type in cases:
        expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{user}\x1f{item}\x1f{micros}\x1f{event_type}")
        assert derived_event_id(user, item, micros, event_type) == str(expected)
