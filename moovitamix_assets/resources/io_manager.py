"""Store pandas DataFrames in PostgreSQL tables with COPY, and load them back with their types.

The contract follows dagster-duckdb's ``DbIOManager``: the asset key prefix is the schema, the last
key component the table; a partitioned asset names its partition column in the ``partition_expr``
metadata, and writing a partition replaces that partition's rows in one transaction.

Types (DataFrame -> PostgreSQL -> DataFrame again):

================================  ======================  =================================
written                           column type             loaded as
================================  ======================  =================================
int64, Int64, python int          bigint                  int64; Int64 when a NULL is read
float64, python float             double precision        float64 (NULL -> NaN)
bool, boolean                     boolean                 bool; boolean when a NULL is read
datetime64 tz-aware or naive      timestamptz             datetime64[us, UTC] (naive = UTC)
``datetime.date`` objects         date                    object of ``datetime.date``
str, python str                   text                    str (NULL -> NaN)
lists/tuples of int               bigint[]                object of ``list[int]``
lists/tuples of str               text[]                  object of ``list[str]``
dict                              jsonb                   object of ``dict``
================================  ======================  =================================

A column holding only NULLs (or only empty lists) takes the existing column's type, else ``text``
(``bigint[]`` for lists). The DataFrame index is not stored.
"""

import datetime as dt
import hashlib
import io
import itertools
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

import dagster as dg
import msgspec
import numpy as np
import pandas as pd
import psycopg2
from psycopg2 import sql
from pydantic import Field

from moovitamix_assets.resources import copy_binary
from moovitamix_assets.resources.database import (
    PostgresResource,
    create_schema_sql,
    validate_identifier,
)
from moovitamix_assets.resources.pg_types import (
    BIGINT,
    BIGINT_ARRAY,
    BOOLEAN,
    DATE,
    DOUBLE,
    JSONB,
    TEXT,
    TEXT_ARRAY,
    TIMESTAMPTZ,
)

PARTITION_EXPR_KEY: Final = "partition_expr"
CHUNK_ROWS: Final = 50_000
PREVIEW_ROWS: Final = 5
_BINARY_SLICE_ROWS: Final = 5_000
# psycopg2 reads the COPY source in blocks of this size.
_COPY_READ_SIZE: Final = 1 << 20
_NULL: Final = "\\N"
# COPY text format escapes (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.2).
_COPY_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

# Inference results that mean "no value to tell from": adopt the table's type, else a default.
_UNKNOWN: Final = "unknown"
_UNKNOWN_ARRAY: Final = "unknown[]"

_INT_TYPES: Final = frozenset({"smallint", "integer", BIGINT})
_FLOAT_TYPES: Final = frozenset({"real", DOUBLE, "numeric"})
_TEXT_TYPES: Final = frozenset({TEXT, "character varying", "character"})
# Existing column types that accept an inferred type without loss (PostgreSQL casts the COPY text).
_ACCEPTS: Final[dict[str, frozenset[str]]] = {
    BIGINT: _INT_TYPES | _FLOAT_TYPES,
    DOUBLE: _FLOAT_TYPES,
    TEXT: _TEXT_TYPES,
    TIMESTAMPTZ: frozenset({TIMESTAMPTZ}),
    DATE: frozenset({DATE}),
    BOOLEAN: frozenset({BOOLEAN}),
    BIGINT_ARRAY: frozenset({BIGINT_ARRAY, "integer[]", "smallint[]"}),
    TEXT_ARRAY: frozenset({TEXT_ARRAY, "character varying[]"}),
    JSONB: frozenset({JSONB, "json"}),
}


class SchemaMismatchError(TypeError):
    """A DataFrame column cannot be written to the existing table column."""


class PartitionMismatchError(ValueError):
    """A DataFrame holds rows outside the partition(s) being written."""


@dataclass(frozen=True)
class PartitionSlice:
    """The rows of a table that belong to the partition(s) of one run.

    Time-window partitions on a date/timestamp column select ``start <= column < end``; other
    partitions (or a text column) select ``column = ANY(keys)``.
    """

    column: str
    keys: tuple[str, ...]
    window: tuple[dt.datetime, dt.datetime] | None = None


@dataclass(frozen=True)
class Sidecar:
    """Rows of a bookkeeping table that must change together with an asset's own table.

    The sidecar's rows in the same partition slice that also match ``match`` (column -> value) are
    replaced by ``frame``, in the transaction that writes the asset's table: a reader never sees a
    table and its bookkeeping disagree, and a failed write leaves both as they were.
    """

    schema: str
    table: str
    frame: pd.DataFrame
    match: dict[str, Any]


class RestartStream(Exception):  # noqa: N818 - a signal to the writer, not an error
    """Raised by a stream's frames when its source changed mid-read: drop what was written of
    the stream and iterate it again."""


@dataclass(frozen=True)
class StreamEnd:
    """What a stream knows once its last frame is written: bookkeeping rows and metadata."""

    sidecars: tuple[Sidecar, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class FrameStream:
    """A frame written while it is produced: each chunk is COPY'd as it arrives.

    Everything still happens in the one transaction of the write (readers see the old rows until
    commit; any error rolls it all back), but the producer (an API read, say) and PostgreSQL work
    at the same time, and memory holds a chunk instead of the whole frame.

    Attributes:
        template: A zero-row frame with the stream's columns and dtypes: the table's types come
            from it, so an empty stream still creates or checks the table.
        frames: Returns a new iterator of chunks (the template's columns). Called again after
            it raised ``RestartStream``, once the rows written so far are rolled back.
        finish: Called after the last chunk is COPY'd, inside the transaction; its sidecars are
            replaced with the table and its metadata is added to the output's.
        types: PostgreSQL types declared for some columns instead of inferred, e.g.
            ``timestamptz`` for ISO 8601 strings the producer already validated: PostgreSQL
            parses them in the COPY (the session's zone is UTC), nothing is parsed in Python.
    """

    template: pd.DataFrame
    frames: Callable[[], Iterator[pd.DataFrame]]
    finish: Callable[[], StreamEnd] = StreamEnd
    types: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameWithSidecars:
    """An asset output: the asset's DataFrame (or stream) plus sidecar rows written with it."""

    frame: pd.DataFrame | FrameStream
    sidecars: tuple[Sidecar, ...] = ()


@dataclass(frozen=True)
class WriteResult:
    """What one write did, for metadata."""

    rows: int
    rows_replaced: int
    copy_bytes: int
    seconds: float
    columns: list[tuple[str, str]]
    preview: pd.DataFrame
    metadata: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Type inference and COPY serialisation (pure functions).
# ---------------------------------------------------------------------------------------------


def infer_pg_type(series: pd.Series) -> str:
    """PostgreSQL type for a DataFrame column (see the module table).

    Args:
        series: The column.

    Returns:
        A type name as ``format_type`` spells it, or ``"unknown"``/``"unknown[]"`` when the
        column has no value to tell the type from.

    Raises:
        TypeError: Unsupported dtype or a mix of value types.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        return TIMESTAMPTZ
    if pd.api.types.is_bool_dtype(dtype):
        return BOOLEAN
    if pd.api.types.is_integer_dtype(dtype):
        return BIGINT
    if pd.api.types.is_float_dtype(dtype):
        return DOUBLE
    if isinstance(dtype, pd.StringDtype):
        return TEXT
    if isinstance(dtype, pd.CategoricalDtype):
        return infer_pg_type(series.astype(object))
    if not pd.api.types.is_object_dtype(dtype):
        raise TypeError(f"column {series.name!r}: unsupported dtype {dtype}")
    values = series.to_numpy()[~series.isna().to_numpy()]
    if len(values) == 0:
        return _UNKNOWN
    # One pass over the types (C speed), not one isinstance chain per value.
    kind = _kind_of_types(set(map(type, values)))
    if kind == "list":
        return _infer_array_type(series.name, values)
    if kind is None:
        names = sorted({type(v).__name__ for v in values})
        raise TypeError(f"column {series.name!r}: unsupported or mixed value types {names}")
    return kind


def _kind_of_types(types: set[type]) -> str | None:
    """The PostgreSQL type shared by values of these Python types, "list", or None."""

    def every(*classes: type) -> bool:
        return all(issubclass(t, classes) for t in types)

    if every(bool, np.bool_):
        return BOOLEAN
    if not any(issubclass(t, bool | np.bool_) for t in types):
        if every(int, np.integer):
            return BIGINT
        if every(int, np.integer, float, np.floating):
            return DOUBLE
    if every(str):
        return TEXT
    # datetime is a subclass of date (and pd.Timestamp of datetime): test it first.
    if every(dt.datetime):
        return TIMESTAMPTZ
    if every(dt.date) and not any(issubclass(t, dt.datetime) for t in types):
        return DATE
    if every(list, tuple, np.ndarray):
        return "list"
    if every(dict):
        return JSONB
    return None


def _infer_array_type(name: object, values: Iterable[Any]) -> str:
    items = list(itertools.chain.from_iterable(values))
    types = set(map(type, items)) - {type(None)}
    if not types:
        return _UNKNOWN_ARRAY
    kind = _kind_of_types(types)
    if kind == BIGINT:
        return BIGINT_ARRAY
    if kind == TEXT:
        return TEXT_ARRAY
    raise TypeError(
        f"column {name!r}: lists must hold only integers or only strings, "
        f"found {sorted(t.__name__ for t in types)}"
    )


def resolve_column_types(df: pd.DataFrame, existing: dict[str, str], table: str) -> dict[str, str]:
    """Decide the PostgreSQL type of every DataFrame column against the table's current columns.

    Args:
        df: The frame to write.
        existing: The table's columns and types (empty when the table does not exist yet).
        table: ``schema.table``, for error messages.

    Returns:
        Column name -> type to write (the existing type for existing columns).

    Raises:
        SchemaMismatchError: A column's values do not fit the existing column's type.
        TypeError, ValueError: Unsupported dtype or invalid column name.
    """
    resolved: dict[str, str] = {}
    for name in df.columns:
        validate_identifier(name, f"column name in {table}")
        inferred = infer_pg_type(df[name])
        current = existing.get(name)
        if current is None:
            resolved[name] = {_UNKNOWN: TEXT, _UNKNOWN_ARRAY: BIGINT_ARRAY}.get(inferred, inferred)
        elif (
            inferred == _UNKNOWN
            or (inferred == _UNKNOWN_ARRAY and current.endswith("[]"))
            or current in _ACCEPTS.get(inferred, frozenset())
        ):
            resolved[name] = current
        else:
            shown = "array" if inferred == _UNKNOWN_ARRAY else inferred
            raise SchemaMismatchError(
                f"cannot write column {table}.{name}: the table column is {current} but the "
                f"DataFrame column ({df[name].dtype}) holds {shown} values; migrate or drop the "
                "table, or cast the column"
            )
    return resolved


def copy_text_column(series: pd.Series, pg_type: str) -> list[str]:
    """Render one column as COPY text-format fields (``\\N`` for NULL, escapes applied).

    Args:
        series: The column (any index).
        pg_type: Its resolved PostgreSQL type.

    Returns:
        One field per row.
    """
    mask = series.isna().to_numpy()
    # list/dict cells are never NA for isna(); arrays inside object columns are handled below.
    present = series[~mask]
    if pg_type in _INT_TYPES:
        rendered: Sequence[str] = present.astype("int64").to_numpy().astype(str).tolist()
    elif pg_type in _FLOAT_TYPES:
        # repr is the shortest text that round-trips; PostgreSQL reads inf/-inf too.
        rendered = list(map(repr, present.astype("float64").tolist()))
    elif pg_type == BOOLEAN:
        rendered = np.where(present.astype(bool).to_numpy(), "t", "f").tolist()
    elif pg_type == TIMESTAMPTZ and len(present) and isinstance(present.iloc[0], str):
        rendered = _escaped(present.tolist())  # declared ISO texts, parsed by PostgreSQL
    elif pg_type == TIMESTAMPTZ:
        rendered = _timestamp_texts(present)
    elif pg_type == DATE:
        rendered = _date_texts(present)
    elif pg_type in _TEXT_TYPES:
        rendered = _escaped(present.astype(object).tolist())
    elif pg_type.endswith("[]"):
        rendered = _escaped(_array_literals(present.tolist(), pg_type))
    elif pg_type in (JSONB, "json"):
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
        rendered = _escaped([dumps(v) for v in present.tolist()])
    else:
        raise TypeError(f"column {series.name!r}: cannot write to a {pg_type} column")
    if not mask.any():
        return list(rendered)
    out = np.full(len(series), _NULL, dtype=object)
    out[~mask] = np.asarray(rendered, dtype=object)
    return out.tolist()


def _escaped(texts: list[str]) -> list[str]:
    """Apply COPY text escapes, skipping the per-value work when no value needs any."""
    joined = "".join(texts)
    if any(char in joined for char in "\\\t\n\r"):
        return [text.translate(_COPY_ESCAPES) for text in texts]
    return texts


def _timestamp_texts(present: pd.Series) -> list[str]:
    """UTC wall-clock texts without offset: the COPY session runs with TIME ZONE 'UTC'."""
    if isinstance(present.dtype, pd.DatetimeTZDtype):
        naive_utc = present.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_object_dtype(present.dtype):
        # Python datetimes: aware ones are converted, naive ones taken as UTC.
        naive_utc = pd.to_datetime(present, utc=True).dt.tz_localize(None)
    else:
        naive_utc = present
    # ISO text with microseconds ("2026-04-09T12:31:25.269777"), which PostgreSQL reads as is.
    return naive_utc.to_numpy(dtype="datetime64[us]").astype(str).tolist()


def _date_texts(present: pd.Series) -> list[str]:
    values = present.tolist()
    # Date columns repeat a few values (snapshot dates): format each distinct date once.
    texts = {value: value.isoformat() for value in dict.fromkeys(values)}
    return list(map(texts.__getitem__, values))


def _array_literals(values: list[Any], pg_type: str) -> list[str]:
    """PostgreSQL array literals (before COPY escaping)."""
    if pg_type != TEXT_ARRAY:
        containers = set(map(type, values))
        items = set(map(type, itertools.chain.from_iterable(values)))
        if containers == {list} and items <= {int}:
            if not values:
                return []
            # One C call encodes the whole column, "[[1,2],[]]"; its inner lists become "{1,2}".
            inner = msgspec.json.encode(values).decode()[2:-2]
            return ["{" + text + "}" for text in inner.split("],[")]
    return [_array_literal(v) for v in values]


def _array_literal(value: Iterable[Any]) -> str:
    items = []
    for item in value:
        if item is None or (isinstance(item, float) and math.isnan(item)):
            items.append("NULL")
        elif isinstance(item, str):
            escaped = item.replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{escaped}"')
        elif isinstance(item, int | np.integer) and not isinstance(item, bool | np.bool_):
            items.append(str(int(item)))
        else:
            raise TypeError(f"unsupported array element {item!r}")
    return "{" + ",".join(items) + "}"


def copy_format(types: dict[str, str]) -> str:
    """``binary`` when every column's type has a binary encoding (``copy_binary``), else ``text``.

    Binary spares PostgreSQL parsing every value back from text (timestamps and arrays above
    all): half its CPU time on the raw tables, the cores the API and the fetching share.
    """
    return "binary" if copy_binary.supports(types) else "text"


def iter_copy_chunks(
    df: pd.DataFrame, types: dict[str, str], chunk_rows: int = CHUNK_ROWS, fmt: str = "text"
) -> Iterator[bytes]:
    """Serialise a frame's rows to COPY format, ``chunk_rows`` rows at a time.

    Only one chunk is rendered at a time, so memory stays bounded for large frames. The binary
    format's header and trailer are not included (``_copy`` adds them around the whole stream).

    Args:
        df: The frame (its columns in ``types`` order are written).
        types: Column -> resolved PostgreSQL type.
        chunk_rows: Rows per chunk.
        fmt: ``text`` or ``binary`` (see ``copy_format``).

    Yields:
        The rows, one chunk (whole rows) at a time.
    """
    names = list(types)
    for start in range(0, len(df), chunk_rows):
        chunk = df.iloc[start : start + chunk_rows]
        if fmt == "binary":
            # Slices of 5,000 rows keep the encoder's index arrays (8 bytes per byte written)
            # in the cache and a few MB, at the same speed.
            for at in range(0, len(chunk), _BINARY_SLICE_ROWS):
                yield copy_binary.encode_rows(chunk.iloc[at : at + _BINARY_SLICE_ROWS], types)
            continue
        fields = [copy_text_column(chunk[name], types[name]) for name in names]
        lines = map("\t".join, zip(*fields, strict=True))
        yield ("\n".join(lines) + "\n").encode("utf-8")


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END: Final = object()


def prefetch(chunks: Iterable[bytes], depth: int = 2) -> Iterator[bytes]:
    """Produce chunks in a background thread, at most ``depth`` ahead of the consumer.

    PostgreSQL parses one chunk while Python serialises the next (two cores instead of one
    taking turns); memory stays bounded by ``depth`` chunks. Closing the generator stops the
    producer.
    """
    pending: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))

    producer = threading.Thread(
        target=produce, name=f"{threading.current_thread().name}-copy", daemon=True
    )
    producer.start()
    try:
        while True:
            item = pending.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        producer.join()


class CopySource(io.RawIOBase):
    """A read-only file over a stream of byte chunks, for psycopg2's ``copy_expert``."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._current = memoryview(b"")
        self.bytes_read = 0
        # psycopg2 turns an exception raised in read() into a QueryCanceled with its text only;
        # keeping it lets the writer re-raise the real error (e.g. a value that cannot serialise).
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Return up to ``size`` bytes (everything left when negative); ``b""`` at the end.

        Like a raw read, it may return fewer bytes than asked (at most the rest of one chunk).
        """
        if size is None or size < 0:
            parts = [bytes(self._current)]
            self._current = memoryview(b"")
            while chunk := self._next_chunk():
                parts.append(chunk)
            data = b"".join(parts)
        else:
            if not self._current:
                self._current = memoryview(self._next_chunk())
            data = bytes(self._current[:size])
            self._current = self._current[size:]
        self.bytes_read += len(data)
        return data

    def _next_chunk(self) -> bytes:
        try:
            return next(self._chunks, b"")
        except BaseException as exc:
            self.error = exc
            raise

    def close(self) -> None:
        """Stop the chunk producer (if any) and release the buffer."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._current = memoryview(b"")
        super().close()


# ---------------------------------------------------------------------------------------------
# Loading back.
# ---------------------------------------------------------------------------------------------


def frame_from_rows(
    rows: Sequence[tuple[Any, ...]], columns: Sequence[tuple[str, str]]
) -> pd.DataFrame:
    """Build a typed DataFrame from psycopg2 rows (see the module table for the dtypes).

    Args:
        rows: Fetched rows.
        columns: (name, PostgreSQL type) of each selected column, in order.

    Returns:
        The frame, columns in the given order.
    """
    data = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    return pd.DataFrame(
        {
            name: _typed_column(list(values), pg_type)
            for (name, pg_type), values in zip(columns, data, strict=True)
        }
    )


def _typed_column(values: list[Any], pg_type: str) -> Any:
    has_null = any(v is None for v in values)
    if pg_type in _INT_TYPES:
        return pd.array(values, dtype="Int64") if has_null else np.array(values, dtype="int64")
    if pg_type in _FLOAT_TYPES:
        return np.array([np.nan if v is None else float(v) for v in values], dtype="float64")
    if pg_type == BOOLEAN:
        return pd.array(values, dtype="boolean") if has_null else np.array(values, dtype=bool)
    if pg_type in (TIMESTAMPTZ, "timestamp without time zone"):
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True).astype(
            "datetime64[us, UTC]"
        )
    if pg_type in _TEXT_TYPES:
        return pd.array(values, dtype="str")
    return pd.array(values, dtype=object)


# ---------------------------------------------------------------------------------------------
# Database side.
# ---------------------------------------------------------------------------------------------


def table_columns(cur: Any, schema: str, table: str) -> list[tuple[str, str]] | None:
    """(name, type) of a table's columns in stored order, or None when the table does not exist."""
    cur.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute a
        WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (sql.Identifier(schema, table).as_string(cur),),
    )
    rows = cur.fetchall()
    if rows:
        return [(name, pg_type) for name, pg_type in rows]
    cur.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(schema, table).as_string(cur),)
    )
    return [] if cur.fetchone()[0] else None


def _lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _slice_condition(
    part: PartitionSlice, column_type: str | None, table: str
) -> tuple[sql.Composable, tuple[Any, ...]]:
    column = sql.Identifier(part.column)
    if part.window is not None and column_type in (DATE, TIMESTAMPTZ):
        start, end = part.window
        bounds = (start.date(), end.date()) if column_type == DATE else (start, end)
        return sql.SQL("{col} >= %s AND {col} < %s").format(col=column), bounds
    if column_type is not None and column_type not in _TEXT_TYPES | {DATE}:
        raise TypeError(
            f"{table}: partition column {part.column!r} is {column_type}; it must be date, "
            "timestamptz or text"
        )
    cast = sql.SQL("::date[]") if column_type == DATE else sql.SQL("")
    return sql.SQL("{col} = ANY(%s{cast})").format(col=column, cast=cast), (list(part.keys),)


def check_partition_values(df: pd.DataFrame, part: PartitionSlice, table: str) -> None:
    """Refuse a frame whose partition column holds values outside the partitions being written.

    Raises:
        PartitionMismatchError: Missing column, NULLs or out-of-slice values.
    """
    if part.column not in df.columns:
        raise PartitionMismatchError(
            f"{table}: the DataFrame has no partition column {part.column!r} (partition_expr)"
        )
    values = df[part.column]
    if values.isna().any():
        raise PartitionMismatchError(f"{table}: partition column {part.column!r} holds NULLs")
    # Each distinct value is judged once: a partition column holds a few values in many rows.
    distinct = pd.Series(values.unique(), dtype=values.dtype)
    if part.window is not None and len(distinct):
        start, end = part.window
        first = distinct.iloc[0]
        if isinstance(first, dt.date) and not isinstance(first, dt.datetime):
            inside = [start.date() <= v < end.date() for v in distinct.tolist()]
        else:
            stamps = pd.to_datetime(distinct, utc=True)
            inside = ((stamps >= start) & (stamps < end)).tolist()
        bad_values = distinct[[not ok for ok in inside]]
        described = f"[{start.isoformat()}, {end.isoformat()})"
    else:
        as_text = distinct.map(lambda v: v.isoformat() if isinstance(v, dt.date) else str(v))
        bad_values = distinct[~as_text.isin(part.keys).to_numpy()]
        described = ", ".join(part.keys)
    if len(bad_values):
        rows = int(values.isin(bad_values).sum())
        sample = ", ".join(map(str, bad_values.head(3).tolist()))
        raise PartitionMismatchError(
            f"{table}: {rows} row(s) have {part.column} outside the partition(s) being "
            f"written ({described}), e.g. {sample}"
        )


def write_frame(
    conn: Any,
    schema: str,
    table: str,
    df: pd.DataFrame | FrameStream,
    part: PartitionSlice | None = None,
    chunk_rows: int = CHUNK_ROWS,
    sidecars: Sequence[Sidecar] = (),
    match: dict[str, Any] | None = None,
) -> WriteResult:
    """Replace a table (or one partition slice of it) with ``df`` in a single transaction.

    Takes a transaction-scoped advisory lock on the table so concurrent writers serialise; creates
    the schema/table, adds new columns, deletes the slice (the whole table when unpartitioned) and
    COPYs the frame. Readers see the old rows until commit (MVCC); on any error everything rolls
    back. Indexes, grants and constraints of an existing table are kept. Sidecar rows are replaced
    in the same transaction.

    Args:
        conn: A psycopg2 connection (not autocommit); committed on success, rolled back on error.
        schema: Target schema.
        table: Target table.
        df: Rows to write, or a stream of them (COPY'd chunk by chunk as they are produced;
            its ``finish()`` sidecars are replaced after them).
        part: The partition slice being written, or None for the whole table.
        chunk_rows: Rows serialised per COPY chunk.
        sidecars: Bookkeeping rows replaced in the same transaction (same partition slice).
        match: Restrict the replaced rows further to those with these column values.

    Returns:
        Row counts, bytes, duration and the table's final columns (of the main table).

    Raises:
        SchemaMismatchError, PartitionMismatchError, TypeError, ValueError, psycopg2.Error.
    """
    started = time.perf_counter()
    written = _Written(preview=df.template if isinstance(df, FrameStream) else df)
    end = StreamEnd()
    try:
        with conn.cursor() as cur:
            # Timestamps are sent as UTC wall-clock texts.
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            replaced, copied, final_columns = _replace_rows(
                cur, schema, table, df, part, chunk_rows, match, written
            )
            if isinstance(df, FrameStream):
                end = df.finish()
                sidecars = (*sidecars, *end.sidecars)
            for sidecar in sidecars:
                _replace_rows(
                    cur,
                    sidecar.schema,
                    sidecar.table,
                    sidecar.frame,
                    part,
                    chunk_rows,
                    sidecar.match,
                )
        conn.commit()
    except BaseException:
        # A dropped connection cannot roll back; the server discards the transaction anyway.
        with suppress(Exception):
            conn.rollback()
        raise
    return WriteResult(
        rows=written.rows,
        rows_replaced=max(replaced, 0),
        copy_bytes=copied,
        seconds=time.perf_counter() - started,
        columns=final_columns,
        preview=written.preview.head(PREVIEW_ROWS),
        metadata=end.metadata,
    )


@dataclass
class _Written:
    """Rows COPY'd into the main table, and the first rows (for the preview)."""

    preview: pd.DataFrame
    rows: int = 0


# Rolled back to when a stream restarts: the slice is deleted, nothing of the stream is written.
_STREAM_SAVEPOINT: Final = "moovitamix_stream"


def _replace_rows(
    cur: Any,
    schema: str,
    table: str,
    df: pd.DataFrame | FrameStream,
    part: PartitionSlice | None,
    chunk_rows: int,
    match: dict[str, Any] | None = None,
    written: _Written | None = None,
) -> tuple[int, int, list[tuple[str, str]]]:
    """Inside the caller's transaction: delete the slice's rows (matching ``match``), COPY ``df``.

    Returns:
        (rows deleted, bytes COPY'd, the table's columns afterwards).
    """
    qualified = f"{validate_identifier(schema, 'schema')}.{validate_identifier(table, 'table')}"
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("table", qualified),))
    existing_columns = table_columns(cur, schema, table)
    existing = dict(existing_columns or [])
    stream = df if isinstance(df, FrameStream) else None
    if stream is not None:
        # Types come from real rows: a zero-row template cannot tell a date from a text.
        frames, frame = _first_frame(stream)
    else:
        frame = df
    declared = dict(stream.types) if stream is not None else {}
    inferred = resolve_column_types(
        frame[[c for c in frame.columns if c not in declared]], existing, qualified
    )
    for name, pg_type in declared.items():
        if existing.get(name, pg_type) != pg_type:
            raise SchemaMismatchError(
                f"cannot write column {qualified}.{name}: the table column is {existing[name]} "
                f"but the stream declares {pg_type}; migrate or drop the table"
            )
    types = {name: declared.get(name) or inferred[name] for name in frame.columns}
    if part is not None:
        check_partition_values(frame, part, qualified)
    target = sql.Identifier(schema, table)
    if existing_columns is None:
        _create_table(cur, schema, table, types)
    else:
        for name, pg_type in types.items():
            if name not in existing:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        target, sql.Identifier(name), sql.SQL(pg_type)
                    )
                )
    if part is not None:
        _ensure_partition_index(cur, schema, table, part.column)
    conditions: list[sql.Composable] = []
    params: tuple[Any, ...] = ()
    if part is not None:
        condition, params = _slice_condition(part, types.get(part.column), qualified)
        conditions.append(condition)
    for column, value in (match or {}).items():
        conditions.append(sql.SQL("{} = %s").format(sql.Identifier(validate_identifier(column))))
        params = (*params, value)
    delete = sql.SQL("DELETE FROM {}").format(target)
    if conditions:
        delete = sql.SQL("{} WHERE {}").format(delete, sql.SQL(" AND ").join(conditions))
    cur.execute(delete, params)
    replaced = cur.rowcount
    copied = 0
    written = written or _Written(preview=frame)
    if stream is not None:
        cur.execute(sql.SQL("SAVEPOINT {}").format(sql.Identifier(_STREAM_SAVEPOINT)))
        while True:
            written.rows = 0
            fmt = copy_format(types)
            chunks = _stream_chunks(frames, frame, types, part, qualified, chunk_rows, written, fmt)
            try:
                copied = _copy(cur, target, types, chunks, fmt)
                break
            except RestartStream:
                # The source changed under the read and reads again from the start: forget
                # its rows so far, keep the deletion and the lock.
                cur.execute(
                    sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(_STREAM_SAVEPOINT))
                )
                frames = stream.frames()
    elif types and len(df):
        fmt = copy_format(types)
        copied = _copy(cur, target, types, iter_copy_chunks(df, types, chunk_rows, fmt), fmt)
        written.rows = len(df)
    return replaced, copied, table_columns(cur, schema, table) or []


def _first_frame(stream: FrameStream) -> tuple[Iterator[pd.DataFrame], pd.DataFrame]:
    """The stream's frames with the first one already in hand (the template if there is none)."""
    while True:
        frames = stream.frames()
        try:
            first = next(frames, None)
        except RestartStream:
            continue  # nothing written yet: just take the new read
        if first is None:
            return iter(()), stream.template
        return itertools.chain([first], frames), first


def _stream_chunks(
    frames: Iterator[pd.DataFrame],
    model: pd.DataFrame,
    types: dict[str, str],
    part: PartitionSlice | None,
    qualified: str,
    chunk_rows: int,
    written: _Written,
    fmt: str,
) -> Iterator[bytes]:
    """COPY rows of a stream's frames, checked like a whole frame, as they are produced."""
    for frame in frames:
        if list(frame.columns) != list(model.columns):
            raise ValueError(
                f"{qualified}: a streamed chunk has columns {list(frame.columns)}, not the "
                f"stream's {list(model.columns)}"
            )
        if part is not None:
            check_partition_values(frame, part, qualified)
        if not written.rows:
            written.preview = frame.head(PREVIEW_ROWS)
        written.rows += len(frame)
        yield from iter_copy_chunks(frame, types, chunk_rows, fmt)


def _copy(
    cur: Any, target: sql.Composable, types: dict[str, str], chunks: Iterator[bytes], fmt: str
) -> int:
    """COPY the chunks into ``target`` (PostgreSQL parses one while the next is serialised).

    Returns:
        The bytes COPY'd.
    """
    if fmt == "binary":
        chunks = itertools.chain([copy_binary.HEADER], chunks, [copy_binary.TRAILER])
    source = CopySource(prefetch(chunks))
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        target, sql.SQL(", ").join(map(sql.Identifier, types)), sql.SQL(fmt)
    )
    try:
        cur.copy_expert(copy.as_string(cur), source, size=_COPY_READ_SIZE)
    except psycopg2.Error as exc:
        if source.error is not None:
            raise source.error from exc
        raise
    finally:
        source.close()
    return source.bytes_read


def _create_table(cur: Any, schema: str, table: str, types: dict[str, str]) -> None:
    # Two tables of one new schema may be created at once: serialise the schema creation.
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("schema", schema),))
    cur.execute(create_schema_sql(schema))
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type))
        for name, pg_type in types.items()
    )
    cur.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table), columns))


def _ensure_partition_index(cur: Any, schema: str, table: str, column: str) -> None:
    """Give a partitioned table a BRIN index on its partition column, if it has no index there.

    Every write deletes its partition and every partitioned read selects it: without an index,
    both scan the whole history, which grows by a partition a day. The rows of a partition are
    COPY'd together, so block ranges hold one or a few partitions, and a BRIN index (a few pages
    for millions of rows, next to nothing to maintain during COPY) skips the rest. A table
    owned by another role is left as it is (its owner indexes it).
    """
    cur.execute(
        """
        SELECT pg_has_role(c.relowner, 'USAGE'),
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum)
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s
        WHERE c.oid = to_regclass(%s)
        """,
        (column, sql.Identifier(schema, table).as_string(cur)),
    )
    row = cur.fetchone()
    if row is not None and row[0] and not row[1]:
        cur.execute(
            sql.SQL("CREATE INDEX ON {} USING brin ({})").format(
                sql.Identifier(schema, table), sql.Identifier(column)
            )
        )


def read_frame(
    conn: Any,
    schema: str,
    table: str,
    part: PartitionSlice | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Load a table (or one partition slice of it) as a typed DataFrame.

    Args:
        conn: A psycopg2 connection.
        schema: Source schema.
        table: Source table.
        part: Partition slice to read, or None for every row.
        columns: Subset of columns to read (stored order otherwise).

    Returns:
        The rows, columns in stored order, dtypes per the module table.

    Raises:
        LookupError: The table or a requested column does not exist.
    """
    qualified = f"{validate_identifier(schema, 'schema')}.{validate_identifier(table, 'table')}"
    try:
        with conn.cursor() as cur:
            # Timestamps come back in UTC whatever the server's default time zone is.
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            stored = table_columns(cur, schema, table)
            if stored is None:
                raise LookupError(f"table {qualified} does not exist: materialize it first")
            selected = stored
            if columns is not None:
                by_name = dict(stored)
                missing = [c for c in columns if c not in by_name]
                if missing:
                    raise LookupError(f"{qualified} has no column(s) {missing}")
                selected = [(c, by_name[c]) for c in columns]
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(name) for name, _ in selected),
                sql.Identifier(schema, table),
            )
            params: tuple[Any, ...] = ()
            if part is not None:
                condition, params = _slice_condition(part, dict(stored).get(part.column), qualified)
                query = sql.SQL("{} WHERE {}").format(query, condition)
            cur.execute(query, params)
            rows = cur.fetchall()
    finally:
        conn.rollback()
    return frame_from_rows(rows, selected)


# ---------------------------------------------------------------------------------------------
# The IO manager.
# ---------------------------------------------------------------------------------------------


def table_for(
    context: dg.InputContext | dg.OutputContext, metadata: dict[str, Any]
) -> tuple[str, str]:
    """(schema, table) of an asset: metadata ``schema``, else the key prefix, else ``public``."""
    path = context.asset_key.path
    schema = metadata.get("schema") or (path[-2] if len(path) > 1 else "public")
    return validate_identifier(schema, "schema"), validate_identifier(path[-1], "table")


def partition_slice(
    context: dg.InputContext | dg.OutputContext, metadata: dict[str, Any]
) -> PartitionSlice | None:
    """The partition slice of a run, from ``partition_expr`` and the context's partition keys.

    Raises:
        ValueError: Partitioned asset without ``partition_expr`` or multi-dimensional partitions.
    """
    if not context.has_asset_partitions:
        return None
    column = metadata.get(PARTITION_EXPR_KEY)
    if not isinstance(column, str):
        raise ValueError(
            f"asset {context.asset_key.to_user_string()} is partitioned but has no "
            f"'{PARTITION_EXPR_KEY}' metadata naming its partition column"
        )
    validate_identifier(column, PARTITION_EXPR_KEY)
    partitions_def = context.asset_partitions_def
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        raise ValueError("multi-dimensional partitions are not supported by this IO manager")
    keys = tuple(context.asset_partition_keys)
    window = None
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition) and keys:
        time_window = context.asset_partitions_time_window
        window = (time_window.start, time_window.end)
    return PartitionSlice(column=column, keys=keys, window=window)


def _markdown_preview(df: pd.DataFrame) -> str:
    head = df.head(PREVIEW_ROWS)
    try:
        return head.to_markdown(index=False)
    except ImportError:
        return head.to_string(index=False)


class PostgresPandasIOManager(dg.ConfigurableIOManager):
    """Stores pandas DataFrames as PostgreSQL tables (schema = key prefix, table = asset name)."""

    database: dg.ResourceDependency[PostgresResource]
    chunk_rows: int = Field(
        default=CHUNK_ROWS, gt=0, description="Rows serialised per COPY chunk (bounds memory)."
    )

    def handle_output(
        self, context: dg.OutputContext, obj: pd.DataFrame | FrameStream | FrameWithSidecars
    ) -> None:
        """Write the frame: replace its partition(s) or the whole table, in one transaction.

        Args:
            context: The output context (asset key, partitions, definition metadata).
            obj: The DataFrame returned by the asset, or a FrameWithSidecars whose bookkeeping
                rows are replaced in the same transaction.

        Raises:
            TypeError: ``obj`` is not a DataFrame, or holds unsupported values.
            SchemaMismatchError: A column no longer fits the table's column type.
            PartitionMismatchError: Rows outside the partition(s) being written.
        """
        sidecars: tuple[Sidecar, ...] = ()
        if isinstance(obj, FrameWithSidecars):
            obj, sidecars = obj.frame, obj.sidecars
        if not isinstance(obj, pd.DataFrame | FrameStream):
            raise TypeError(
                f"{type(self).__name__} stores pandas DataFrames; asset "
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}"
            )
        metadata = dict(context.definition_metadata or {})
        schema, table = table_for(context, metadata)
        part = partition_slice(context, metadata)
        conn = self.database.engine().raw_connection()
        try:
            result = write_frame(
                conn.driver_connection, schema, table, obj, part, self.chunk_rows, sidecars
            )
        except BaseException:
            # The connection may be broken (dropped mid-COPY): never hand it back to the pool.
            conn.invalidate()
            raise
        finally:
            conn.close()
        context.log.info(
            "wrote %s rows to %s.%s in %.2fs (%s bytes COPY'd, %s rows replaced) on %s",
            result.rows,
            schema,
            table,
            result.seconds,
            result.copy_bytes,
            result.rows_replaced,
            self.database.masked_url(),
        )
        context.add_output_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(result.rows),
                "dagster/table_name": dg.MetadataValue.text(f"{schema}.{table}"),
                "dagster/column_schema": dg.MetadataValue.table_schema(
                    dg.TableSchema(
                        columns=[dg.TableColumn(name, pg_type) for name, pg_type in result.columns]
                    )
                ),
                "preview": dg.MetadataValue.md(_markdown_preview(result.preview)),
                "rows_replaced": dg.MetadataValue.int(result.rows_replaced),
                "copy_bytes": dg.MetadataValue.int(result.copy_bytes),
                "load_seconds": dg.MetadataValue.float(round(result.seconds, 4)),
                **result.metadata,
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        """Read the upstream asset's table, restricted to the requested partition(s).

        Args:
            context: The input context; ``columns`` in the input's metadata selects columns.

        Returns:
            The stored rows with the dtypes listed in the module docstring.

        Raises:
            LookupError: The table has not been materialized yet.
        """
        upstream = context.upstream_output
        metadata = dict((upstream.definition_metadata if upstream else None) or {})
        schema, table = table_for(context, metadata)
        part = partition_slice(context, metadata)
        columns = (context.definition_metadata or {}).get("columns")
        conn = self.database.engine().raw_connection()
        try:
            return read_frame(conn.driver_connection, schema, table, part, columns)
        finally:
            conn.close()
