"""Binary COPY: PostgreSQL stores exactly what the text format would have stored."""

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest

from moovitamix_assets.resources import copy_binary
from moovitamix_assets.resources.database import connect_psycopg2
from moovitamix_assets.resources.io_manager import (
    copy_format,
    iter_copy_chunks,
    read_frame,
    write_frame,
)

TYPES = {
    "i": "bigint",
    "f": "double precision",
    "b": "boolean",
    "d": "date",
    "ts": "timestamp with time zone",
    "iso": "timestamp with time zone",
    "t": "text",
    "l": "bigint[]",
}


def every_type() -> pd.DataFrame:
    """Values of every binary type, NULLs of every kind, and the awkward cases."""
    paris = dt.timezone(dt.timedelta(hours=2))
    return pd.DataFrame(
        {
            "i": pd.array([np.iinfo(np.int64).min, None, 0, np.iinfo(np.int64).max], "Int64"),
            "f": [np.inf, np.nan, -0.5, 1e-300],
            "b": pd.array([True, None, False, True], "boolean"),
            "d": [dt.date(2000, 1, 1), None, dt.date(1999, 12, 31), dt.date(2026, 11, 28)],
            # Naive values are UTC, aware ones are converted.
            "ts": [
                dt.datetime(1970, 1, 1),
                None,
                dt.datetime(2026, 3, 29, 1, 30, tzinfo=paris),
                dt.datetime(2000, 2, 29, 23, 59, 59, 999999),
            ],
            "iso": [
                "2026-04-09T12:31:25.269777",
                None,
                "2026-04-09T12:31:25+02:00",
                "1999-12-31 23:59:59",
            ],
            "t": ["", None, "tab\there \\N", "🎵 ünïcode"],
            "l": [[1, 2**40], None, [], [np.int64(3), None]],
        }
    )


def load(pg_url: str, fmt: str, frame: pd.DataFrame) -> list[tuple]:
    """COPY the frame into a fresh table in ``fmt``; the rows as PostgreSQL reads them back."""
    conn = connect_psycopg2(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(f"DROP TABLE IF EXISTS copied_{fmt}")
            columns = ", ".join(f"{name} {pg_type}" for name, pg_type in TYPES.items())
            cur.execute(f"CREATE TABLE copied_{fmt} (n serial, {columns})")
            data = b"".join(iter_copy_chunks(frame, TYPES, 3, fmt))
            if fmt == "binary":
                data = copy_binary.HEADER + data + copy_binary.TRAILER
            names = ", ".join(TYPES)
            cur.copy_expert(
                f"COPY copied_{fmt} ({names}) FROM STDIN (FORMAT {fmt})", io.BytesIO(data)
            )
            cur.execute(f"SELECT {names} FROM copied_{fmt} ORDER BY n")
            return cur.fetchall()
    finally:
        conn.close()


def test_binary_stores_what_text_stores_for_every_type(pg_url: str) -> None:
    frame = every_type()
    binary = load(pg_url, "binary", frame)
    assert binary == load(pg_url, "text", frame)
    assert binary[1] == (None,) * len(TYPES)  # every kind of NA is a NULL
    assert binary[3][TYPES_INDEX["d"]] == dt.date(2026, 11, 28)
    assert binary[2][TYPES_INDEX["ts"]] == dt.datetime(2026, 3, 28, 23, 30, tzinfo=dt.UTC)
    assert binary[3][TYPES_INDEX["l"]] == [3, None]
    assert binary[2][TYPES_INDEX["l"]] == []


TYPES_INDEX = {name: i for i, name in enumerate(TYPES)}


def test_the_io_manager_writes_binary_when_every_column_allows_it(pg_url: str) -> None:
    assert copy_format(TYPES) == "binary"
    assert copy_format({**TYPES, "j": "jsonb"}) == "text"
    assert copy_format({"n": "integer"}) == "text"  # an existing int4 column: text reads it
    frame = every_type().assign(j=[{"a": 1}, None, {"b": [1]}, {}])
    conn = connect_psycopg2(pg_url)
    try:
        write_frame(conn, "core", "mixed", frame)  # jsonb: the whole write goes as text
        write_frame(conn, "core", "binary_only", frame.drop(columns="j"))
        mixed = read_frame(conn, "core", "mixed").drop(columns="j")
        binary = read_frame(conn, "core", "binary_only")
    finally:
        conn.close()
    pd.testing.assert_frame_equal(binary, mixed)


def test_a_value_of_the_wrong_kind_names_its_column() -> None:
    frame = pd.DataFrame({"id": [1, 2], "name": ["a", 7]})
    with pytest.raises(TypeError, match="column 'name'"):
        copy_binary.encode_rows(frame, {"id": "bigint", "name": "text"})
    with pytest.raises(TypeError, match="column 'l'.*unsupported array element 'x'"):
        copy_binary.encode_rows(pd.DataFrame({"l": [[1, "x"]]}), {"l": "bigint[]"})
