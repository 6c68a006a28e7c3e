"""Postgres access on a real server: migrations, the event write path, per-user reads, the catalogue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from towerlight.config import get_settings
from towerlight.db import connection
from towerlight.db.catalog import (
    ItemRow,
    UpsertCount,
    UserRow,
    inactive_items,
    set_item_active,
    upsert_items,
    upsert_users,
)
from towerlight.db.events import (
    EventRow,
    event_record,
    history_and_removed,
    insert_events,
    recent_history,
    removed_items,
)
from towerlight.db.migrate import migrate
from towerlight.db.promotions import Promotion, list_promotions, live_promotions, remove_promotion, set_promotion
from towerlight.errors import ConfigurationError, DatabaseUnavailableError, NotFoundError
from towerlight.recommend.service import PostgresSignals
from towerlight_offline.local.postgres import ensure_database_url, start_embedded_postgres

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def event(user: str, item: str, minutes: int, event_type: str = "view", event_id: str | None = None) -> EventRow:
    return EventRow(
        event_id=event_id or str(uuid.uuid4()),
        user_id=user,
        item_id=item,
        event_type=event_type,
        value=None,
        ts=T0 + timedelta(minutes=minutes),
    )


def count(conn: psycopg.Connection, sql: str) -> int:
    row = conn.execute(sql.encode()).fetchone()
    assert row is not None
    return int(row[0])


# --- migrations -------------------------------------------------------------------------------------


def test_migrations_are_recorded_and_idempotent(db: psycopg.Connection, migrations_dir: Path) -> None:
    # GIVEN a database the fixture already migrated
    # WHEN migrating again
    applied = migrate(db, migrations_dir)
    # THEN nothing is applied, and every file is recorded once
    assert applied == []
    versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(p.stem for p in migrations_dir.glob("*.sql"))
    assert count(db, "SELECT count(*) FROM events") == 0
    db.rollback()


def test_new_migrations_apply_in_order_once(db: psycopg.Connection, tmp_path: Path) -> None:
    # GIVEN two new migration files where the second depends on the first
    (tmp_path / "0101_b.sql").write_text("ALTER TABLE extra ADD COLUMN b int; INSERT INTO extra VALUES (1, 2);")
    (tmp_path / "0100_a.sql").write_text("CREATE TABLE extra (a int);")
    (tmp_path / "notes.txt").write_text("not a migration")
    # WHEN migrating twice
    first = migrate(db, tmp_path)
    second = migrate(db, tmp_path)
    # THEN they ran once, in numeric order
    assert first == ["0100_a", "0101_b"]
    assert second == []
    assert db.execute("SELECT a, b FROM extra").fetchall() == [(1, 2)]
    db.rollback()


def test_failing_migration_leaves_no_trace(db: psycopg.Connection, tmp_path: Path) -> None:
    # GIVEN a migration whose second statement fails
    (tmp_path / "0200_broken.sql").write_text("CREATE TABLE half (a int); SELECT no_such_function();")
    # WHEN migrating
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(db, tmp_path)
    # THEN neither the table nor the version exists, and the lock is released (a retry fails the same way)
    assert db.execute("SELECT to_regclass('half')").fetchone() == (None,)
    assert count(db, "SELECT count(*) FROM schema_migrations WHERE version = '0200_broken'") == 0
    db.rollback()
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(db, tmp_path)


def test_concurrent_migrators_apply_each_file_once(db_url: str, tmp_path: Path) -> None:
    # GIVEN a slow migration and four migrators starting together
    (tmp_path / "0300_slow.sql").write_text("SELECT pg_sleep(0.2); CREATE TABLE once (a int);")
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            with psycopg.connect(db_url) as conn:
                barrier.wait()
                results.append(migrate(conn, tmp_path))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    # WHEN they all run
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN exactly one applied the file and none failed
    assert errors == []
    assert sorted(results) == [[], [], [], ["0300_slow"]]


def test_migrate_refuses_a_connection_inside_a_transaction(db: psycopg.Connection) -> None:
    # GIVEN a connection with an open transaction
    db.execute("SELECT 1")
    # WHEN / THEN migrating refuses (its work would only be a savepoint of the caller's transaction)
    with pytest.raises(ValueError, match="outside a transaction"):
        migrate(db)
    db.rollback()


# --- events -----------------------------------------------------------------------------------------


def test_insert_events_dedupes_within_and_across_batches(db: psycopg.Connection) -> None:
    # GIVEN a batch where one event appears twice (once with an upper-case id)
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    batch = [
        event("u1", "i1", 1, event_id=a),
        event("u1", "i2", 2, event_id=b),
        event("u1", "i1", 1, event_id=a.upper()),
    ]
    # WHEN inserting it
    with db.transaction():
        first = insert_events(db, batch)
    # THEN each distinct event is inserted once and its id returned once
    assert sorted(first) == sorted([a, b])
    # WHEN a second batch repeats an old event beside a new one
    with db.transaction():
        second = insert_events(db, [event("u1", "i2", 2, event_id=b), event("u2", "i3", 3, event_id=c)])
    # THEN only the new id comes back, and there is exactly one row per event_id
    assert second == [c]
    assert count(db, "SELECT count(*) FROM events") == 3
    assert count(db, "SELECT count(DISTINCT event_id) FROM events") == 3
    db.rollback()


def test_a_redelivery_is_staged_again_after_a_rolled_back_one(
    db: psycopg.Connection,
) -> None:
    # GIVEN a stored event, and a redelivery of it (so staged) whose transaction is rolled back
    stored_one = event("u1", "i1", 1)
    with db.transaction():
        insert_events(db, [stored_one])
    db.commit()
    insert_events(db, [stored_one, event("u1", "i2", 2)])
    db.rollback()
    # WHEN two more redeliveries are staged, one after the other in one transaction
    late, later = event("u1", "i3", 3), event("u1", "i4", 4)
    with db.transaction():
        first = insert_events(db, [stored_one, late])
        second = insert_events(db, [stored_one, later])
    # THEN each returns only its own new event, and the rolled-back one left nothing
    assert (first, second) == ([late.event_id], [later.event_id])
    assert count(db, "SELECT count(*) FROM events") == 3
    db.rollback()


def test_insert_events_leaves_the_transaction_to_the_caller(db: psycopg.Connection) -> None:
    # GIVEN two calls in one transaction that the caller rolls back
    insert_events(db, [event("u1", "i1", 1)])
    insert_events(db, [event("u1", "i2", 2)])
    assert count(db, "SELECT count(*) FROM events") == 2
    # WHEN rolling back
    db.rollback()
    # THEN nothing was stored
    assert count(db, "SELECT count(*) FROM events") == 0
    db.rollback()


def test_insert_events_stores_every_field(db: psycopg.Connection) -> None:
    # GIVEN an event with a value, a recommendation id and a context
    row = EventRow(str(uuid.uuid4()), "u1", "i1", "rating", 4.5, T0, "rec-1", {"page": "home", "pos": 3})
    # WHEN inserting it on an autocommit connection
    db.autocommit = True
    assert insert_events(db, [row]) == [row.event_id]
    # THEN it is stored as given
    stored = db.execute(
        "SELECT user_id, item_id, event_type, value, ts, recommendation_id, context FROM events"
    ).fetchone()
    assert stored == ("u1", "i1", "rating", 4.5, T0, "rec-1", {"page": "home", "pos": 3})


def test_insert_events_stores_unicode_nested_context_and_offsets_exactly(db: psycopg.Connection) -> None:
    # GIVEN events in the binary COPY's harder cases: non-ASCII text, nested JSON, a non-UTC time, no value
    context = {"q": "café ☕ 😀", "path": ["a", {"b": [1, 2.5, None, True]}], "big": 10**20}
    tokyo = datetime(2025, 1, 15, 19, 0, 5, 123456, tzinfo=timezone(timedelta(hours=9)))
    rows = [
        EventRow(str(uuid.uuid4()), "ü-ser", "ïtem", "view", None, tokyo, "rëc", context),
        EventRow(str(uuid.uuid4()).upper(), "u1", "i1", "rating", -0.5, T0),
    ]
    # WHEN inserting them
    with db.transaction():
        inserted = insert_events(db, rows)
    # THEN every field reads back as given (ids in canonical lower case)
    assert inserted == [rows[0].event_id, rows[1].event_id.lower()]
    stored = db.execute(
        "SELECT event_id::text, user_id, item_id, value, ts, recommendation_id, context FROM events ORDER BY user_id"
    ).fetchall()
    assert stored[0] == (rows[1].event_id.lower(), "u1", "i1", -0.5, T0, None, None)
    assert stored[1] == (rows[0].event_id, "ü-ser", "ïtem", None, tokyo, "rëc", context)
    db.rollback()


def test_insert_events_refuses_an_id_that_is_not_a_uuid_before_writing(db: psycopg.Connection) -> None:
    # GIVEN a batch with one event_id that is not a UUID
    rows = [event("u1", "i1", 1), event("u1", "i2", 2, event_id="not-a-uuid")]
    # WHEN inserting it THEN the whole batch fails and nothing is stored
    with pytest.raises(ValueError, match="not a UUID"):
        insert_events(db, rows)
    assert count(db, "SELECT count(*) FROM events") == 0
    db.rollback()


def test_event_row_requires_an_aware_timestamp() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EventRow(str(uuid.uuid4()), "u1", "i1", "view", None, datetime(2024, 1, 1))


def test_recent_history_is_newest_first_and_limited(db: psycopg.Connection) -> None:
    # GIVEN five events of u1 inserted out of order, and one of another user
    rows = [event("u1", f"i{m}", m) for m in (3, 1, 5, 2, 4)] + [event("u2", "other", 10)]
    with db.transaction():
        insert_events(db, rows)
    # WHEN reading the last three
    history = recent_history(db, "u1", 3)
    # THEN they are the newest three, newest first, of this user only
    assert [e.item_id for e in history] == ["i5", "i4", "i3"]
    assert history[0].ts == T0 + timedelta(minutes=5)
    assert history[0].event_type == "view"
    assert [e.item_id for e in recent_history(db, "u1", 100)] == ["i5", "i4", "i3", "i2", "i1"]
    assert recent_history(db, "nobody", 10) == []
    db.rollback()


def test_removed_items_are_the_disliked_and_blocked_ones(db: psycopg.Connection) -> None:
    # GIVEN u1 viewed i1, disliked i2, blocked i3; u2 blocked i4
    rows = [
        event("u1", "i1", 1, "view"),
        event("u1", "i2", 2, "dislike"),
        event("u1", "i3", 3, "block"),
        event("u1", "i3", 4, "block"),
        event("u2", "i4", 5, "block"),
    ]
    with db.transaction():
        insert_events(db, rows)
    # WHEN reading u1's removed items, alone and together with the history
    removed = removed_items(db, "u1")
    history, removed_too, attributes = history_and_removed(db, "u1", 2)
    # THEN only u1's dislike/block items are removed, and the one-query variant agrees
    assert removed == {"i2", "i3"}
    assert removed_too == removed
    assert [e.item_id for e in history] == ["i3", "i3"]
    assert attributes is None
    assert history_and_removed(db, "nobody", 5) == ([], set(), None)
    db.rollback()


# --- catalogue --------------------------------------------------------------------------------------


def test_upsert_items_inserts_updates_and_skips_unchanged(db: psycopg.Connection) -> None:
    # GIVEN two items
    with db.transaction():
        first = upsert_items(db, [ItemRow("i1", "Heat", ["Action"], {"year": 1995}), ItemRow("i2", "Up")])
    # WHEN upserting one changed, one unchanged and one new item
    with db.transaction():
        second = upsert_items(
            db,
            [
                ItemRow("i1", "Heat", ["Action", "Crime"], {"year": 1995}),
                ItemRow("i2", "Up"),
                ItemRow("i3", "Alien", ["Sci-Fi"]),
            ],
        )
    # THEN the counts say so and the stored rows are the latest
    assert first == UpsertCount(inserted=2, updated=0)
    assert second == UpsertCount(inserted=1, updated=1)
    stored = db.execute("SELECT item_id, title, categories, attributes, active FROM items ORDER BY item_id").fetchall()
    assert stored == [
        ("i1", "Heat", ["Action", "Crime"], {"year": 1995}, True),
        ("i2", "Up", [], {}, True),
        ("i3", "Alien", ["Sci-Fi"], {}, True),
    ]
    db.rollback()


def test_upsert_keeps_the_active_flag_unless_given(db: psycopg.Connection) -> None:
    # GIVEN an item deactivated by an operator
    with db.transaction():
        upsert_items(db, [ItemRow("i1", "Heat"), ItemRow("i2", "Up")])
        set_item_active(db, "i1", False)
    # WHEN the catalogue is re-imported without an active column, then with one for i2
    with db.transaction():
        upsert_items(db, [ItemRow("i1", "Heat (1995)"), ItemRow("i2", "Up")])
        upsert_items(db, [ItemRow("i2", "Up", active=False)])
    # THEN i1 stays inactive and i2 follows the file
    assert inactive_items(db) == {"i1", "i2"}
    with db.transaction():
        set_item_active(db, "i1", True)
    assert inactive_items(db) == {"i2"}
    db.rollback()


def test_set_item_active_on_an_unknown_item_is_not_found(db: psycopg.Connection) -> None:
    with pytest.raises(NotFoundError):
        set_item_active(db, "missing", False)
    db.rollback()


def test_users_upsert_and_attributes(db: psycopg.Connection) -> None:
    # GIVEN a user stored twice, the last row winning within a batch
    with db.transaction():
        first = upsert_users(db, [UserRow("u1", {"age": 20}), UserRow("u1", {"age": 24, "gender": "M"})])
    with db.transaction():
        again = upsert_users(db, [UserRow("u1", {"age": 24, "gender": "M"})])
    # THEN the attributes read back, and an unchanged upsert writes nothing
    assert first == UpsertCount(inserted=1, updated=0)
    assert again == UpsertCount(inserted=0, updated=0)
    assert history_and_removed(db, "u1", 5, attributes=True) == ([], set(), {"age": 24, "gender": "M"})
    assert history_and_removed(db, "nobody", 5, attributes=True) == ([], set(), {})
    db.rollback()


# --- connections ------------------------------------------------------------------------------------


def test_connect_sets_the_statement_timeout(db_url: str) -> None:
    with connection.connect(timeout_ms=250) as conn:
        assert conn.autocommit is False
        assert conn.execute("SHOW statement_timeout").fetchone() == ("250ms",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(1)")


def test_shared_connection_is_reused_and_reopened(db_url: str) -> None:
    # GIVEN the shared connection, left inside a transaction by a previous "invocation"
    first = connection.shared_connection()
    first.execute("SELECT 1")
    # WHEN asking again
    again = connection.shared_connection()
    # THEN it is the same connection, back to idle
    assert again is first
    assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # WHEN it was closed behind our back
    first.close()
    reopened = connection.shared_connection()
    # THEN a new one replaces it
    assert reopened is not first
    assert reopened.execute("SELECT 1").fetchone() == (1,)
    connection.close_shared_connection()


def test_shared_connection_survives_a_server_side_disconnect(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the shared connection, killed by the server while the Lambda was frozen
    conn = connection.shared_connection()
    pid = conn.info.backend_pid
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    monkeypatch.setattr(connection, "PING_AFTER_IDLE_SECONDS", -1.0)
    # WHEN the next invocation asks for it
    fresh = connection.shared_connection()
    # THEN it gets a working connection
    assert fresh.execute("SELECT 1").fetchone() == (1,)
    assert fresh.info.backend_pid != pid
    connection.close_shared_connection()


def test_unreachable_database_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody@/nothing?host={tmp_path}&connect_timeout=1")
    get_settings.cache_clear()
    try:
        with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
            connection.connect()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_missing_configuration_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="DATABASE_URL"):
            connection.database_url()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_secret_arn_is_turned_into_a_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN only an RDS secret ARN, no keys in the environment (a profile or a role: boto3 reads the
    # secret), and Secrets Manager answering with the RDS JSON
    secret = '{"username": "app", "password": "p w", "host": "db.example", "port": 5433, "dbname": "tl"}'
    calls: list[str] = []

    class FakeSecrets:
        def get_secret_value(self, SecretId: str) -> dict[str, str]:
            calls.append(SecretId)
            return {"SecretString": secret}

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:db")
    monkeypatch.setattr("boto3.client", lambda name, **_: FakeSecrets())
    get_settings.cache_clear()
    connection._secret_conninfo.cache_clear()
    try:
        # WHEN resolving the URL twice
        url = connection.database_url()
        connection.database_url()
        # THEN it names the secret's server and the secret is read once
        params = psycopg.conninfo.conninfo_to_dict(url)
        assert params == {
            "host": "db.example",
            "port": "5433",
            "user": "app",
            "password": "p w",
            "dbname": "tl",
        }
        assert calls == ["arn:aws:secretsmanager:us-east-1:1:secret:db"]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        connection._secret_conninfo.cache_clear()


@pytest.mark.integration
def test_with_keys_in_the_environment_the_secret_is_read_without_importing_boto3(moto_endpoint: str) -> None:
    import boto3

    # GIVEN an RDS secret in Secrets Manager (moto's server) and a function environment as Lambda's: keys,
    # a region, DATABASE_SECRET_ARN and no DATABASE_URL
    secret = {"username": "app", "password": "p w", "host": "db.example", "port": 5433, "dbname": "tl"}
    arn = boto3.client("secretsmanager", endpoint_url=moto_endpoint).create_secret(
        Name=f"towerlight-db-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(secret)
    )["ARN"]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_SECRET_ARN": arn}
    # WHEN a fresh process resolves the database URL
    probe = (
        "import json, sys; from towerlight.db.connection import database_url; url = database_url();"
        " print(json.dumps({'url': url, 'boto3': 'boto3' in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # THEN it names the secret's server, and boto3 was never imported
    assert psycopg.conninfo.conninfo_to_dict(answer["url"]) == {
        "host": "db.example", "port": "5433", "user": "app", "password": "p w", "dbname": "tl",
    }  # fmt: skip
    assert answer["boto3"] is False


# --- embedded Postgres ------------------------------------------------------------------------------


def test_ensure_database_url_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.example/towerlight")
    assert ensure_database_url() == "postgresql://app@db.example/towerlight"


def test_ensure_database_url_starts_an_embedded_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no DATABASE_URL and a data directory of our own
    pgdata = Path(tempfile.mkdtemp(prefix="towerlight-pgdata-")) / "pgdata"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("TOWERLIGHT_PGDATA", str(pgdata))
    try:
        # WHEN asking for a database
        url = ensure_database_url()
        # THEN a real Postgres answers at the exported URL, and the settings see it
        assert os.environ["DATABASE_URL"] == url
        assert get_settings().database_url == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert (pgdata / "PG_VERSION").is_file()
    finally:
        pgserver_handle, _ = start_embedded_postgres(pgdata)
        pgserver_handle.cleanup()
        monkeypatch.undo()
        get_settings.cache_clear()
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def test_a_users_signals_are_read_in_one_statement(db: psycopg.Connection) -> None:
    # GIVEN a user with attributes, a click and a block stored
    with db.transaction():
        upsert_users(db, [UserRow("u1", {"age": 31})])
        insert_events(db, [event("u1", "i1", 1, "click"), event("u1", "i2", 2, "block")])
    statements: list[str] = []

    class Counting:
        """The connection, counting what is sent to the server."""

        def __getattr__(self, name: str) -> object:
            return getattr(db, name)

        def __setattr__(self, name: str, value: object) -> None:
            setattr(db, name, value)

        def execute(self, query: str, params: object = None) -> psycopg.Cursor:
            statements.append(query)
            return db.execute(query, params)

    # WHEN serving reads the user with their attributes
    signals = PostgresSignals(connection=lambda: Counting())  # type: ignore[arg-type, return-value]
    user = signals.user("u1", 200, attributes=True)

    # THEN history, removed items and attributes came from a single statement (one round trip)
    assert (user.history, user.removed, user.attributes) == (("i1",), frozenset({"i2"}), {"age": 31})
    assert len(statements) == 1
    assert db.autocommit is False  # the connection is handed back in its usual mode


def test_live_promotions_are_those_inside_their_window_pins_first(db: psycopg.Connection) -> None:
    # GIVEN a finished, a future, a live pin, and two live boosts
    now = datetime.now(UTC)
    for promotion in (
        Promotion("ended", "pin", position=1, ends_at=now - timedelta(hours=1)),
        Promotion("future", "boost", boost=0.5, starts_at=now + timedelta(hours=1)),
        Promotion("weak", "boost", boost=0.2, starts_at=now - timedelta(hours=1)),
        Promotion("strong", "boost", boost=0.9),
        Promotion("pinned", "pin", position=3, ends_at=now + timedelta(days=1)),
    ):
        set_promotion(db, promotion)
    # WHEN the live ones are read THEN only those three come back, the pin first, then by boost
    assert [p.item_id for p in live_promotions(db)] == ["pinned", "strong", "weak"]
    # AND replacing a promotion keeps one row per item; the list has every one, pins by position first
    set_promotion(db, Promotion("weak", "pin", position=2))
    assert [(p.item_id, p.mode) for p in list_promotions(db)][:3] == [
        ("ended", "pin"),
        ("weak", "pin"),
        ("pinned", "pin"),
    ]
    assert len(list_promotions(db)) == 5
    # AND an item without a promotion cannot be removed
    with pytest.raises(NotFoundError):
        remove_promotion(db, "nothing")


def test_consumers_writing_the_same_events_in_opposite_orders_never_deadlock(db_url: str) -> None:
    from towerlight.ingest import IngestBatch, write_events

    # GIVEN one SQS message set delivered to two consumers at once, in opposite orders (SQS keeps none)
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        event_record(str(uuid.uuid4()), f"u{n % 50}", f"i{n}", "click", None, ts, None, None) for n in range(3000)
    ]
    batches = []
    for order in (records, records[::-1]):
        batch = IngestBatch()
        for record in order:
            batch.add(record)
        batches.append(batch)
    stored: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def consume(batch: IngestBatch) -> None:
        start.wait()
        try:
            stored.append(write_events(batch))
        except BaseException as exc:  # a deadlock victim lands here
            failures.append(exc)
        finally:
            connection.close_shared_connection()

    # WHEN both write at the same time, each on its own connection
    threads = [threading.Thread(target=consume, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN neither fails (the rows are written in one order, whatever the delivery's), and each event is
    # stored once, by one of them
    assert failures == []
    assert sorted(stored) == [0, len(records)]
    with psycopg.connect(db_url) as conn:
        assert count(conn, "SELECT count(*) FROM events") == len(records)
