"""Writes are atomic and serialised: readers see old or new rows, failures leave old rows intact.

Every case runs against a real PostgreSQL; a stream of chunks is the seam that holds, breaks or
kills a write midway (its chunks are COPY'd as they are produced).
"""

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import psycopg2
import pytest

from moovitamix_assets.warehouse.database import connect_psycopg2
from moovitamix_assets.warehouse.io_manager import (
    FrameStream,
    PartitionMismatchError,
    PartitionSlice,
    Sidecar,
    read_frame,
    write_frame,
)

DAY = dt.date(2024, 1, 1)
WINDOW = (
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc),
)
PART = PartitionSlice("snapshot_date", *WINDOW)
TYPES = {"snapshot_date": "date", "id": "bigint"}


def _count(pg_conn: Any, query: str = "SELECT count(*) FROM raw.t") -> int:
    with pg_conn.cursor() as cur:
        cur.execute("SET statement_timeout = '5s'")  # a blocked reader fails instead of hanging
        cur.execute(query)
        return cur.fetchone()[0]


def _ids(pg_conn: Any) -> list[int]:
    with pg_conn.cursor() as cur:
        cur.execute("SELECT id FROM raw.t ORDER BY id")
        return [r[0] for r in cur.fetchall()]


def _frame(ids: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"snapshot_date": [DAY] * len(ids), "id": ids})


def _stream(batches: list[list[int]], between: Callable[[], None] = lambda: None) -> FrameStream:
    """Chunks of ``_frame`` rows; ``between`` runs after the first chunk was handed over."""

    def chunks() -> Iterator[pd.DataFrame]:
        yield _frame(batches[0])
        between()
        for ids in batches[1:]:
            yield _frame(ids)

    return FrameStream(TYPES, chunks())


def _run(name: str, target: Any, errors: list[BaseException]) -> threading.Thread:
    def wrapped() -> None:
        try:
            target()
        except BaseException as exc:  # collected and asserted by the test
            errors.append(exc)

    thread = threading.Thread(target=wrapped, name=name)
    thread.start()
    return thread


class _Hold:
    """Holds a write after its first chunk until released."""

    def __init__(self) -> None:
        self.held, self.release = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.held.set()
        assert self.release.wait(30)


def test_reader_sees_old_rows_until_the_replace_commits(pg_url: str, pg_conn: Any) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _stream([[1, 2, 3]]))
    hold, errors = _Hold(), []
    stream = _stream([list(range(50)), list(range(50, 100))], hold)
    thread = _run("writer", lambda: write_frame(writer, "raw", "t", stream), errors)
    assert hold.held.wait(30)
    # Mid-write (old rows deleted, new rows being sent, nothing committed): the reader is not
    # blocked and sees exactly the old table.
    assert _count(pg_conn) == 3
    hold.release.set()
    thread.join(30)
    assert not errors
    assert _count(pg_conn) == 100
    writer.close()


def test_dropped_connection_mid_copy_keeps_old_rows(pg_url: str, pg_conn: Any) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _stream([[1, 2, 3]]), PART)

    def kill() -> None:
        with pg_conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (writer.get_backend_pid(),))

    with pytest.raises(psycopg2.Error):
        write_frame(writer, "raw", "t", _stream([list(range(10, 30)), [40, 41]], kill), PART)
    assert _ids(pg_conn) == [1, 2, 3]


def test_an_error_raised_by_the_stream_rolls_back_and_the_connection_is_reusable(
    pg_url: str, pg_conn: Any
) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _stream([[1, 2, 3]]), PART)

    def fail() -> None:
        raise RuntimeError("page 7 is not a page")

    with pytest.raises(RuntimeError, match="page 7 is not a page"):
        write_frame(writer, "raw", "t", _stream([[10, 11], [12]], fail), PART)
    assert _ids(pg_conn) == [1, 2, 3]
    write_frame(writer, "raw", "t", _stream([[4]]), PART)
    assert _ids(pg_conn) == [4]
    writer.close()


def test_concurrent_writes_of_one_partition_serialise(pg_url: str, pg_conn: Any) -> None:
    first, second = connect_psycopg2(pg_url), connect_psycopg2(pg_url)
    write_frame(first, "raw", "t", _stream([[0]]), PART)  # the table exists: both writers DELETE
    hold, errors = _Hold(), []
    stream = _stream([[1, 2], [3]], hold)
    t1 = _run("first", lambda: write_frame(first, "raw", "t", stream, PART), errors)
    assert hold.held.wait(30)
    t2 = _run("second", lambda: write_frame(second, "raw", "t", _stream([[7, 8, 9]]), PART), errors)
    # The second writer waits on the table's advisory lock while the first is mid-COPY.
    waiting = 0
    for _ in range(100):
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        if waiting := _count(pg_conn, query):
            break
        threading.Event().wait(0.05)
    assert waiting == 1
    hold.release.set()
    t1.join(30)
    t2.join(30)
    assert not errors
    assert _ids(pg_conn) == [7, 8, 9]
    first.close()
    second.close()


def test_large_frame_round_trips(pg_url: str) -> None:
    conn = connect_psycopg2(pg_url)
    frame = pd.DataFrame({"id": range(120_000), "name": [f"n{i}" for i in range(120_000)]})
    big = FrameStream({"id": "bigint", "name": "text"}, [frame])
    assert write_frame(conn, "raw", "big", big)["dagster/row_count"].value == 120_000
    loaded = read_frame(conn, "raw", "big")
    assert len(loaded) == 120_000
    assert loaded["id"].sum() == frame["id"].sum()
    conn.close()


def test_a_stream_is_written_with_its_sidecars_in_one_replace(pg_url: str, pg_conn: Any) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _stream([[1, 2, 3]]), PART)
    write_frame(writer, "raw", "manifest", _stream([[0]]))  # a sidecar's table exists: its types
    copied: list[int] = []

    def finish() -> tuple[list[Sidecar], dict[str, int]]:
        # Called once every chunk is COPY'd, inside the transaction: the rows are there.
        with writer.cursor() as cur:
            cur.execute("SELECT count(*) FROM raw.t")
            copied.append(cur.fetchone()[0])
        return [Sidecar("raw", "manifest", _frame([42]), {})], {"api_total": 7}

    chunks = iter([_frame([10, 11]), _frame([12]), _frame([13, 14, 15])])
    result = write_frame(writer, "raw", "t", FrameStream(TYPES, chunks, finish), PART)
    assert (result["dagster/row_count"].value, result["rows_replaced"].value) == (6, 3)
    assert result["api_total"] == 7 and copied == [6]
    preview = result["preview"].value  # the first chunk's rows
    assert "   10 |" in preview and "   11 |" in preview and "   12 |" not in preview
    assert _ids(pg_conn) == [10, 11, 12, 13, 14, 15]
    assert _count(pg_conn, "SELECT count(*) FROM raw.manifest") == 1
    writer.close()


def test_a_stream_chunk_outside_the_partition_is_refused(pg_url: str, pg_conn: Any) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _stream([[1, 2, 3]]), PART)
    late = pd.DataFrame({"snapshot_date": [DAY + dt.timedelta(days=1)], "id": [11]})
    stream = FrameStream(TYPES, iter([_frame([10]), late]))
    with pytest.raises(PartitionMismatchError, match="outside the partition"):
        write_frame(writer, "raw", "t", stream, PART)
    assert _count(pg_conn) == 3
    writer.close()


def test_an_empty_stream_creates_the_declared_table(pg_url: str) -> None:
    conn = connect_psycopg2(pg_url)
    result = write_frame(conn, "raw", "empty", FrameStream(TYPES, iter([])), PART)
    columns = [(c.name, c.type) for c in result["dagster/column_schema"].value.columns]
    assert (result["dagster/row_count"].value, columns) == (0, [*TYPES.items()])
    conn.close()
