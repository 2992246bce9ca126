"""Type inference and CSV rendering, then a round trip of the edge values through PostgreSQL."""

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from moovitamix_assets.warehouse.database import connect_psycopg2
from moovitamix_assets.warehouse.io_manager import (
    SchemaMismatchError,
    column_types,
    copy_csv,
    infer_pg_type,
    read_frame,
    write_frame,
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, None, 3], "bigint"),
        ([1, 2.5], "double precision"),
        ([True, None], "boolean"),
        (["a", None], "text"),
        ([dt.date(2024, 1, 1), None], "date"),
        (
            [dt.datetime(2024, 1, 1), pd.Timestamp("2024-01-02", tz="UTC")],
            "timestamp with time zone",
        ),
        ([[1, None], None], "bigint[]"),
        ([("a",), []], "text[]"),
        ([[], None], None),
        ([{"a": 1}], "jsonb"),
        ([None, None], None),
    ],
)
def test_object_columns_are_inferred_from_their_values(values: list[Any], expected: str) -> None:
    assert infer_pg_type(pd.Series(values, dtype=object, name="c")) == expected


@pytest.mark.parametrize(
    "values",
    [[1, "a"], [dt.date(2024, 1, 1), dt.datetime(2024, 1, 1)], [[1, "a"]], [True, 1], [object()]],
)
def test_mixed_or_unsupported_values_are_a_type_error_naming_the_column(values: list[Any]) -> None:
    with pytest.raises(TypeError, match="'c'"):
        infer_pg_type(pd.Series(values, dtype=object, name="c"))


def test_all_null_column_adopts_the_existing_type_and_floats_do_not_fit_bigint() -> None:
    frame = pd.DataFrame({"a": [None, None], "b": [1.5, 2.0], "l": [[], None]})
    assert column_types(frame[["a"]], {"a": "date"}, "raw.t") == {"a": "date"}
    assert column_types(frame[["a", "l"]], {}, "raw.t") == {"a": "text", "l": "bigint[]"}
    with pytest.raises(SchemaMismatchError, match=r"raw\.t\.b.*bigint.*double precision"):
        column_types(frame[["b"]], {"b": "bigint"}, "raw.t")


def test_copy_csv_quotes_every_text_and_leaves_nulls_bare() -> None:
    frame = pd.DataFrame(
        {
            "t": pd.Series(["a\tb", None, 'c\\d"\r\n', ""], dtype="str"),
            "l": [[1, 2], [np.int64(3), None], None, ['x"y']],
        }
    )
    rendered = copy_csv(frame, {"t": "text", "l": "bigint[]"}).decode()
    # An empty text is quoted, a NULL is not: COPY's CSV tells them apart that way.
    expected = '"a\tb","{1,2}"\n,"{3,NULL}"\n"c\\d""\r\n",\n"","{""x\\""y""}"\n'
    assert rendered == expected


def test_edge_values_round_trip(pg_url: str) -> None:
    frame = pd.DataFrame(
        {
            "f": [np.inf, -np.inf, 1 / 3, 1e-300],
            "i": np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, -1]),
            "l": [[np.int64(1)], [None], [], [2**40]],
            "t": ["", " ", "\\N", "🎵 ünïcode"],
            "ts": pd.to_datetime(
                ["1970-01-01", "2262-04-11", "2000-02-29 23:59:59.999999", None],
                format="ISO8601",
            ),
        }
    )
    conn = connect_psycopg2(pg_url)
    try:
        write_frame(conn, "core", "edges", frame)
        out = read_frame(conn, "core", "edges")
    finally:
        conn.close()
    assert out["f"].tolist() == frame["f"].tolist()
    assert out["i"].tolist() == frame["i"].tolist()
    assert out["l"].tolist() == [[1], [None], [], [2**40]]
    # An empty string and the text "\N" are values, not NULLs.
    assert out["t"].tolist() == ["", " ", "\\N", "🎵 ünïcode"]
    assert out["ts"].tolist()[:3] == frame["ts"].dt.tz_localize("UTC").tolist()[:3]
    assert pd.isna(out["ts"][3])
