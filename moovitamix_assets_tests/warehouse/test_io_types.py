"""CSV rendering, then a round trip of the edge values through PostgreSQL."""

import numpy as np
import pandas as pd

from moovitamix_assets.warehouse.database import connect_psycopg2
from moovitamix_assets.warehouse.io_manager import FrameStream, copy_csv, read_frame, write_frame


def test_copy_csv_quotes_every_text_and_leaves_nulls_bare() -> None:
    frame = pd.DataFrame(
        {
            "t": pd.Series(["a\tb", None, 'c\\d"\r\n', ""], dtype="str"),
            "l": [[1, 2], [np.int64(3), None], None, ['x"y']],
        }
    )
    rendered = copy_csv(frame, {"t": "text", "l": "bigint[]"}).decode()
    # An empty text is quoted, a NULL is not: COPY's CSV tells them apart that way.
    expected = '"a\tb","{1,2}"\n,"{""3"",NULL}"\n"c\\d""\r\n",\n"","{""x\\""y""}"\n'
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
        types = {"f": "double precision", "i": "bigint", "l": "bigint[]", "t": "text"}
        types["ts"] = "timestamp with time zone"
        write_frame(conn, "core", "edges", FrameStream(types, [frame]))
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
