"""Writes are atomic and serialised: readers see old or new rows, failures leave old rows intact."""

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import psycopg2
import pytest

from moovitamix_assets.resources import copy_binary, io_manager
from moovitamix_assets.resources.database import connect_psycopg2
from moovitamix_assets.warehouse.io_manager import PartitionSlice, read_frame, write_frame

DAY = dt.date(2024, 1, 1)
WINDOW = (
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc),
)
PART = PartitionSlice(column="snapshot_date", keys=("2024-01-01",), window=WINDOW)


def _count(pg_conn: Any, query: str = "SELECT count(*) FROM raw.t") -> int:
    with pg_conn.cursor() as cur:
        cur.execute("SET statement_timeout = '5s'")  # a blocked reader fails instead of hanging
        cur.execute(query)
        return cur.fetchone()[0]


def _frame(ids: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"snapshot_date": [DAY] * len(ids), "id": ids})


class _Pause:
    """Patches the COPY chunk stream so that a chosen thread stops after its first chunk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, thread_name: str) -> None:
        self.paused = threading.Event()
        self.resume = threading.Event()
        original = io_manager.iter_copy_chunks

        def chunks(*args: Any, **kwargs: Any) -> Iterator[bytes]:
            stream = original(*args, **kwargs)
            yield next(stream)
            # Chunks are produced in a helper thread named after the writing thread.
            if threading.current_thread().name.startswith(thread_name):
                self.paused.set()
                assert self.resume.wait(30)
            yield from stream

        monkeypatch.setattr(io_manager, "iter_copy_chunks", chunks)


def _run(name: str, target: Any, errors: list[BaseException]) -> threading.Thread:
    def wrapped() -> None:
        try:
            target()
        except BaseException as exc:  # collected and asserted by the test
            errors.append(exc)

    thread = threading.Thread(target=wrapped, name=name)
    thread.start()
    return thread


def test_reader_sees_old_rows_until_the_replace_commits(
    pg_url: str, pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _frame([1, 2, 3]))
    pause = _Pause(monkeypatch, "writer")
    errors: list[BaseException] = []
    thread = _run(
        "writer",
        lambda: write_frame(writer, "raw", "t", _frame(list(range(100))), chunk_rows=10),
        errors,
    )
    assert pause.paused.wait(30)
    # Mid-write (old rows deleted, 10 new rows sent, nothing committed): the reader is not blocked
    # and sees exactly the old table.
    assert _count(pg_conn) == 3
    pause.resume.set()
    thread.join(30)
    assert not errors
    assert _count(pg_conn) == 100
    writer.close()


def test_dropped_connection_mid_copy_keeps_old_rows(
    pg_url: str, pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _frame([1, 2, 3]), PART)
    original = io_manager.iter_copy_chunks

    def chunks(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        stream = original(*args, **kwargs)
        yield next(stream)
        with pg_conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (writer.get_backend_pid(),))
        yield from stream

    monkeypatch.setattr(io_manager, "iter_copy_chunks", chunks)
    with pytest.raises(psycopg2.Error):
        write_frame(writer, "raw", "t", _frame(list(range(10, 60))), PART, chunk_rows=5)
    assert _count(pg_conn, "SELECT count(*) FROM raw.t WHERE id < 10") == 3
    assert _count(pg_conn) == 3
    # The chunk producer thread stopped with the failed COPY.
    assert not [t for t in threading.enumerate() if t.name.endswith("-copy") and t.is_alive()]


def test_exception_raised_by_the_chunk_stream_rolls_back(
    pg_url: str, pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _frame([1, 2, 3]))
    original = io_manager.iter_copy_chunks

    def chunks(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        stream = original(*args, **kwargs)
        yield next(stream)
        raise RuntimeError("upstream broke mid-stream")

    monkeypatch.setattr(io_manager, "iter_copy_chunks", chunks)
    with pytest.raises(RuntimeError, match="upstream broke mid-stream"):
        write_frame(writer, "raw", "t", _frame(list(range(10, 60))), chunk_rows=5)
    assert _count(pg_conn) == 3
    # The connection is usable again after the rollback.
    monkeypatch.undo()
    write_frame(writer, "raw", "t", _frame([4]))
    assert _count(pg_conn) == 1
    writer.close()


def test_concurrent_writes_of_one_partition_serialise(
    pg_url: str, pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = connect_psycopg2(pg_url), connect_psycopg2(pg_url)
    write_frame(first, "raw", "t", _frame([0]), PART)  # the table exists: both writers DELETE
    pause = _Pause(monkeypatch, "first")
    errors: list[BaseException] = []
    t1 = _run("first", lambda: write_frame(first, "raw", "t", _frame([1, 2, 3]), PART, 1), errors)
    assert pause.paused.wait(30)
    t2 = _run("second", lambda: write_frame(second, "raw", "t", _frame([7, 8, 9]), PART), errors)
    # The second writer waits on the table's advisory lock while the first is mid-COPY.
    waiting = 0
    for _ in range(100):
        waiting = _count(
            pg_conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        if waiting:
            break
        threading.Event().wait(0.05)
    assert waiting == 1
    pause.resume.set()
    t1.join(30)
    t2.join(30)
    assert not errors
    with pg_conn.cursor() as cur:
        cur.execute("SELECT id FROM raw.t ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [7, 8, 9]
    first.close()
    second.close()


def test_large_frame_is_streamed_in_chunks(pg_url: str) -> None:
    conn = connect_psycopg2(pg_url)
    frame = pd.DataFrame({"id": range(120_000), "name": [f"n{i}" for i in range(120_000)]})
    types = {"id": "bigint", "name": "text"}
    assert io_manager.copy_format(types) == "binary"
    assert len(list(io_manager.iter_copy_chunks(frame, types, 50_000, "text"))) == 3
    chunks = list(io_manager.iter_copy_chunks(frame, types, 50_000, "binary"))
    assert len(chunks) == 24  # binary rows are encoded 5,000 at a time
    result = write_frame(conn, "raw", "big", frame)
    assert result.rows == 120_000
    framing = len(copy_binary.HEADER) + len(copy_binary.TRAILER)
    assert result.copy_bytes == sum(map(len, chunks)) + framing
    loaded = read_frame(conn, "raw", "big")
    assert len(loaded) == 120_000
    assert loaded["id"].sum() == frame["id"].sum()
    conn.close()


def _stream(
    batches: list[list[int]], finish: Any = None, restart_after: int | None = None
) -> io_manager.FrameStream:
    """A stream of ``_frame`` chunks; the first pass raises RestartStream after some chunks."""
    passes = []

    def frames() -> Iterator[pd.DataFrame]:
        passes.append(1)
        for index, ids in enumerate(batches):
            if restart_after is not None and len(passes) == 1 and index == restart_after:
                raise io_manager.RestartStream("the source changed")
            yield _frame([i + 1000 * (len(passes) - 1) for i in ids])

    return io_manager.FrameStream(
        template=_frame([]).iloc[:0], frames=frames, finish=finish or io_manager.StreamEnd
    )


def test_a_stream_is_written_chunk_by_chunk_with_its_sidecars_in_one_replace(
    pg_url: str, pg_conn: Any
) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _frame([1, 2, 3]), PART)
    copied: list[int] = []

    def finish() -> io_manager.StreamEnd:
        # Called once every chunk is COPY'd, inside the transaction: the rows are there.
        with writer.cursor() as cur:
            cur.execute("SELECT count(*) FROM raw.t")
            copied.append(cur.fetchone()[0])
        sidecar = io_manager.Sidecar("raw", "manifest", _frame([42]), {})
        return io_manager.StreamEnd(sidecars=(sidecar,), metadata={"api_total": 7})

    result = write_frame(writer, "raw", "t", _stream([[10, 11], [12], [13, 14, 15]], finish), PART)

    assert (result.rows, result.rows_replaced, dict(result.metadata)) == (6, 3, {"api_total": 7})
    assert copied == [6]
    assert result.preview["id"].tolist() == [10, 11]
    with pg_conn.cursor() as cur:
        cur.execute("SELECT id FROM raw.t ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [10, 11, 12, 13, 14, 15]
    assert _count(pg_conn, "SELECT count(*) FROM raw.manifest") == 1
    writer.close()


def test_a_stream_that_restarts_keeps_only_the_rows_of_its_last_pass(
    pg_url: str, pg_conn: Any
) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _frame([1, 2, 3]), PART)
    # The first pass COPYs two chunks, then its source changes: they must not survive.
    result = write_frame(writer, "raw", "t", _stream([[10], [11], [12]], restart_after=2), PART)
    assert result.rows == 3
    with pg_conn.cursor() as cur:
        cur.execute("SELECT id FROM raw.t ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [1010, 1011, 1012]
    writer.close()


def test_a_stream_failing_midway_leaves_the_old_partition(pg_url: str, pg_conn: Any) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _frame([1, 2, 3]), PART)

    def frames() -> Iterator[pd.DataFrame]:
        yield _frame([10, 11])
        raise RuntimeError("page 7 is not a page")

    stream = io_manager.FrameStream(template=_frame([]).iloc[:0], frames=frames)
    with pytest.raises(RuntimeError, match="page 7 is not a page"):
        write_frame(writer, "raw", "t", stream, PART)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT id FROM raw.t ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
    writer.close()


def test_a_stream_chunk_outside_the_partition_is_refused(pg_url: str, pg_conn: Any) -> None:
    writer = connect_psycopg2(pg_url)
    write_frame(writer, "raw", "t", _frame([1, 2, 3]), PART)

    def frames() -> Iterator[pd.DataFrame]:
        yield _frame([10])
        yield pd.DataFrame({"snapshot_date": [DAY + dt.timedelta(days=1)], "id": [11]})

    stream = io_manager.FrameStream(template=_frame([]).iloc[:0], frames=frames)
    with pytest.raises(io_manager.PartitionMismatchError, match="outside the partition"):
        write_frame(writer, "raw", "t", stream, PART)
    assert _count(pg_conn) == 3
    writer.close()
