"""Store pandas DataFrames in PostgreSQL tables with COPY, and load them back with their types.

As dagster-duckdb's ``DbIOManager``: key prefix = schema, asset name = table, ``partition_expr``
metadata = partition column; a write deletes the partition's rows and COPYs the new ones in one
transaction. An existing table keeps its columns, keys, indexes and grants. The index is not stored.

Types: int -> bigint (Int64 when a NULL is read), float -> double precision, bool -> boolean,
datetimes -> timestamptz (naive means UTC), date -> date, str -> text, lists of int / str ->
bigint[] / text[], dict -> jsonb. A column of NULLs takes the existing type, else text (bigint[]).
"""

import datetime as dt
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, NamedTuple

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg2 import sql

from moovitamix_assets.warehouse.columns import COLUMN_SCHEMA_KEY
from moovitamix_assets.warehouse.database import (
    PostgresResource,
    create_schema_sql,
    validate_identifier,
)

PARTITION_EXPR_KEY: Final = "partition_expr"
PREVIEW_ROWS: Final = 5
# Rows rendered to CSV at a time: bounds memory whatever the frame's size.
CHUNK_ROWS: Final = 20_000

BIGINT, DOUBLE, DATE, TEXT = "bigint", "double precision", "date", "text"
TIMESTAMPTZ, JSONB = "timestamp with time zone", "jsonb"
_INTS: Final = frozenset({"smallint", "integer", BIGINT})
_FLOATS: Final = frozenset({"real", DOUBLE, "numeric"})
_TEXTS: Final = frozenset({TEXT, "character varying", "character"})
# Existing column types that take a DataFrame column of the inferred type without loss.
_ACCEPTS: Final[dict[str, frozenset[str]]] = {
    BIGINT: _INTS | _FLOATS,
    DOUBLE: _FLOATS,
    TEXT: _TEXTS,
    "bigint[]": frozenset({"integer[]", "smallint[]"}),
    "text[]": frozenset({"character varying[]"}),
    JSONB: frozenset({"json"}),
}
# A column type's pandas dtype (with NULLs, without); dates, arrays and JSON stay Python objects.
_DTYPES: Final[dict[str, tuple[str, str]]] = {
    **dict.fromkeys(_INTS, ("Int64", "int64")),
    **dict.fromkeys(_FLOATS, ("float64", "float64")),
    **dict.fromkeys(_TEXTS, ("str", "str")),
    "boolean": ("boolean", "bool"),
}
# What pandas' infer_dtype finds in a column (and in its lists, "[]...") -> the column type.
_INFERRED: Final[dict[str, str | None]] = {
    "integer": BIGINT,
    "floating": DOUBLE,
    "mixed-integer-float": DOUBLE,
    "boolean": "boolean",
    "string": TEXT,
    "datetime64": TIMESTAMPTZ,
    "datetime": TIMESTAMPTZ,
    "date": DATE,
    "empty": None,
    "[]integer": "bigint[]",
    "[]string": "text[]",
    "[]empty": None,
}


class SchemaMismatchError(TypeError):
    """A DataFrame column cannot be written to the existing table column."""


class PartitionMismatchError(ValueError):
    """A DataFrame holds rows outside the partition(s) being written."""


class PartitionSlice(NamedTuple):
    """One run's rows of a time-partitioned asset: ``start <= column < end``."""

    column: str
    start: dt.datetime
    end: dt.datetime


class Sidecar(NamedTuple):
    """Bookkeeping rows replaced in the asset's transaction: the slice's rows matching ``match``."""

    schema: str
    table: str
    frame: pd.DataFrame
    match: Mapping[str, Any]


class FrameStream(NamedTuple):
    """A table's rows as chunks, COPY'd as produced in one transaction; ``types`` declares every
    column, ``finish`` runs after the last chunk and returns sidecars and extra metadata."""

    types: Mapping[str, str]
    chunks: Iterable[pd.DataFrame]
    finish: Callable[[], tuple[Sequence[Sidecar], Mapping[str, Any]]] = lambda: ((), {})


@dataclass
class WriteResult:
    """What one write did, for metadata."""

    rows: int = 0
    rows_replaced: int = 0
    columns: list[tuple[str, str]] = field(default_factory=list)
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)
    metadata: Mapping[str, Any] = field(default_factory=dict)


def infer_pg_type(series: pd.Series) -> str | None:
    """The PostgreSQL type of a column's values, None when no value tells; TypeError if mixed."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    values = series.dropna()
    # pandas names what a column holds in one C scan; True is no integer to it.
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind == "date" and any(isinstance(v, dt.datetime) for v in values):
        kind = "mixed"  # a datetime is a date to pandas, not to PostgreSQL
    elif kind == "mixed" and all(isinstance(v, dict) for v in values):
        return JSONB
    elif kind == "mixed" and all(isinstance(v, list | tuple | np.ndarray) for v in values):
        elements = pd.Series([item for value in values for item in value], dtype=object)
        kind = "[]" + pd.api.types.infer_dtype(elements, skipna=True)
    if kind not in _INFERRED:
        names = sorted({type(v).__name__ for v in values})
        raise TypeError(f"column {series.name!r}: unsupported or mixed value types {names}")
    return _INFERRED[kind]


def column_types(df: pd.DataFrame, existing: Mapping[str, str], table: str) -> dict[str, str]:
    """The type each column is written as: the table's for its columns, else the inferred one."""
    types: dict[str, str] = {}
    for name in df.columns:
        validate_identifier(name, f"column name in {table}")
        inferred, current = infer_pg_type(df[name]), existing.get(name)
        if current is None:
            is_list = df[name].map(lambda v: isinstance(v, list | tuple | np.ndarray)).any()
            types[name] = inferred or ("bigint[]" if is_list else TEXT)
        elif inferred is None or inferred == current or current in _ACCEPTS.get(inferred, ()):
            types[name] = current
        else:
            raise SchemaMismatchError(
                f"cannot write column {table}.{name}: the table column is {current} but the "
                f"DataFrame column ({df[name].dtype}) holds {inferred} values; migrate or drop "
                "the table, or cast the column"
            )
    return types


def copy_csv(df: pd.DataFrame, types: Mapping[str, str]) -> bytes:
    """Render rows as COPY's CSV (NULL unquoted, every text quoted), in C++ by pyarrow."""
    columns = {}
    for name, pg_type in types.items():
        series = df[name]
        if pg_type.endswith("[]"):
            series = series.map(_array_literal, na_action="ignore")
        elif pg_type in (JSONB, "json"):
            json_text = partial(json.dumps, ensure_ascii=False, allow_nan=False)
            series = series.map(json_text, na_action="ignore")
        elif pg_type == TIMESTAMPTZ and pd.api.types.is_object_dtype(series.dtype):
            # ISO texts (the API's) or datetimes; naive ones are UTC, the session's time zone.
            series = series.map(
                lambda v: v if isinstance(v, str) else pd.Timestamp(v).isoformat(),
                na_action="ignore",
            )
        columns[name] = pa.array(series, from_pandas=True)
    out = io.BytesIO()
    pa_csv.write_csv(pa.table(columns), out, pa_csv.WriteOptions(include_header=False))
    return out.getvalue()


def _array_literal(value: Iterable[Any]) -> str:
    if all(type(item) is int for item in value):  # track ids: the common case, in C
        return "{" + ",".join(map(str, value)) + "}"
    items = []
    for item in value:
        if item is None:
            items.append("NULL")
        elif isinstance(item, str):
            items.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif isinstance(item, int | np.integer) and not isinstance(item, bool | np.bool_):
            items.append(str(int(item)))
        else:
            raise TypeError(f"unsupported array element {item!r}")
    return "{" + ",".join(items) + "}"


def table_columns(cur: Any, schema: str, table: str) -> dict[str, str]:
    """Name -> type of a table's columns in stored order, empty when there is no such table."""
    cur.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (sql.Identifier(schema, table).as_string(cur),),
    )
    return dict(cur.fetchall())


def _slice_where(part: PartitionSlice, pg_type: str | None) -> tuple[sql.Composable, tuple]:
    if pg_type not in (DATE, TIMESTAMPTZ, None):
        raise TypeError(f"partition column {part.column!r} is {pg_type}: use date or timestamptz")
    bounds = (
        (part.start, part.end) if pg_type == TIMESTAMPTZ else (part.start.date(), part.end.date())
    )
    return sql.SQL("{c} >= %s AND {c} < %s").format(c=sql.Identifier(part.column)), bounds


def check_partition_values(df: pd.DataFrame, part: PartitionSlice, table: str) -> None:
    """Refuse rows whose partition column is NULL or outside the partition(s) being written."""
    if part.column not in df.columns:
        raise PartitionMismatchError(
            f"{table}: the DataFrame has no partition column {part.column!r}"
        )
    values = pd.Series(df[part.column].unique())
    if values.isna().any():
        raise PartitionMismatchError(f"{table}: partition column {part.column!r} holds NULLs")
    stamps = pd.to_datetime(values, utc=True)
    bad = values[(stamps < part.start) | (stamps >= part.end)]
    if len(bad):
        rows = int(df[part.column].isin(bad).sum())
        raise PartitionMismatchError(
            f"{table}: {rows} row(s) have {part.column} outside the partition(s) being written "
            f"[{part.start.isoformat()}, {part.end.isoformat()}), e.g. "
            + ", ".join(map(str, bad[:3]))
        )


def write_frame(
    conn: Any,
    schema: str,
    table: str,
    obj: pd.DataFrame | FrameStream,
    part: PartitionSlice | None = None,
) -> WriteResult:
    """Replace a table (or its partition slice) with ``obj``, then a stream's sidecars, in one
    transaction of ``conn`` (a psycopg2 connection): committed on success, else rolled back."""
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")  # timestamps travel as UTC wall-clock text
            result = _replace(cur, schema, table, obj, part, {})
            if isinstance(obj, FrameStream):
                sidecars, result.metadata = obj.finish()
                for car in sidecars:
                    _replace(cur, car.schema, car.table, car.frame, part, car.match)
        conn.commit()
    except BaseException:
        with suppress(Exception):  # a dropped connection cannot roll back; the server does
            conn.rollback()
        raise
    return result


def _replace(
    cur: Any,
    schema: str,
    table: str,
    obj: pd.DataFrame | FrameStream,
    part: PartitionSlice | None,
    match: Mapping[str, Any],
) -> WriteResult:
    qualified = f"{validate_identifier(schema, 'schema')}.{validate_identifier(table, 'table')}"
    target = sql.Identifier(schema, table)
    # Serialise writers of one table until the transaction ends.
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"table/{qualified}",))
    existing = table_columns(cur, schema, table)
    if isinstance(obj, pd.DataFrame):
        types, chunks = column_types(obj, existing, qualified), [obj]
    else:
        types, chunks = dict(obj.types), obj.chunks
        for name, pg_type in types.items():
            if existing.get(name, pg_type) != pg_type:
                raise SchemaMismatchError(
                    f"cannot write column {qualified}.{name}: the table column is "
                    f"{existing[name]} but the stream declares {pg_type}"
                )
    if not existing:
        # Serialise creators of one schema: concurrent CREATE SCHEMAs fail on the catalog's key.
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"schema/{schema}",))
        cur.execute(create_schema_sql(schema))
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ()").format(target))
    added = [
        sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(name), sql.SQL(pg_type))
        for name, pg_type in types.items()
        if name not in existing
    ]
    if added:
        cur.execute(sql.SQL("ALTER TABLE {} {}").format(target, sql.SQL(", ").join(added)))
    where = [sql.SQL("{} = %s").format(sql.Identifier(validate_identifier(n))) for n in match]
    params = [*match.values()]
    if part is not None:
        _ensure_brin_index(cur, schema, table, part.column)
        condition, bounds = _slice_where(part, types.get(part.column))
        where, params = [condition, *where], [*bounds, *params]
    where_sql = sql.SQL(" AND ").join(where or [sql.SQL("TRUE")])
    cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(target, where_sql), params)
    # ADD COLUMN appends: this is the table's stored order.
    result = WriteResult(
        rows_replaced=max(cur.rowcount, 0), columns=[*{**existing, **types}.items()]
    )
    names = sql.SQL(", ").join(map(sql.Identifier, types))
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(target, names).as_string(cur)
    for chunk in chunks:
        if result.preview.empty:
            result.preview = chunk.head(PREVIEW_ROWS)
        if part is not None and len(chunk):
            check_partition_values(chunk, part, qualified)
        for start in range(0, len(chunk), CHUNK_ROWS):
            rendered = copy_csv(chunk.iloc[start : start + CHUNK_ROWS], types)
            cur.copy_expert(copy, io.BytesIO(rendered))
        result.rows += len(chunk)
    return result


def _ensure_brin_index(cur: Any, schema: str, table: str, column: str) -> None:
    """BRIN-index the partition column unless an index starts with it or another role owns the
    table: a partition is COPY'd at once, so DELETE and SELECT of a slice skip other blocks."""
    cur.execute(
        "SELECT pg_has_role(c.relowner, 'USAGE') AND NOT EXISTS (SELECT 1 FROM pg_index i "
        "WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum) FROM pg_class c "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s "
        "WHERE c.oid = to_regclass(%s)",
        (column, sql.Identifier(schema, table).as_string(cur)),
    )
    if cur.fetchone() == (True,):
        create = sql.SQL("CREATE INDEX ON {} USING brin ({})")
        cur.execute(create.format(sql.Identifier(schema, table), sql.Identifier(column)))


def read_frame(
    conn: Any, schema: str, table: str, part: PartitionSlice | None = None
) -> pd.DataFrame:
    """Load a table, or one partition slice of it, as a typed DataFrame; LookupError if missing."""
    qualified = f"{validate_identifier(schema, 'schema')}.{validate_identifier(table, 'table')}"
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            stored = table_columns(cur, schema, table)
            if not stored:
                raise LookupError(f"table {qualified} does not exist: materialize it first")
            query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table))
            params: tuple[Any, ...] = ()
            if part is not None:
                where, params = _slice_where(part, stored.get(part.column))
                query = sql.SQL("{} WHERE {}").format(query, where)
            cur.execute(query, params)
            rows = cur.fetchall()
    finally:
        conn.rollback()
    data = list(zip(*rows, strict=True)) if rows else [() for _ in stored]
    return pd.DataFrame(
        {name: _typed(list(v), t) for (name, t), v in zip(stored.items(), data, strict=True)}
    )


def _typed(values: list[Any], pg_type: str) -> pd.Series:
    series = pd.Series(values, dtype=object)
    if pg_type in (TIMESTAMPTZ, "timestamp without time zone"):
        return pd.to_datetime(series, utc=True).astype("datetime64[us, UTC]")
    with_null, without = _DTYPES.get(pg_type, (object, object))
    return series.astype(with_null if None in values else without)


def _table_of(context: dg.InputContext | dg.OutputContext) -> tuple[str, str]:
    path = context.asset_key.path
    schema = path[-2] if len(path) > 1 else "public"
    return validate_identifier(schema, "schema"), validate_identifier(path[-1], "table")


def _partition_of(
    context: dg.InputContext | dg.OutputContext, metadata: Mapping[str, Any]
) -> PartitionSlice | None:
    if not context.has_asset_partitions:
        return None
    column = metadata.get(PARTITION_EXPR_KEY)
    if not isinstance(column, str):
        raise ValueError(
            f"asset {context.asset_key.to_user_string()} is partitioned but has no "
            f"'{PARTITION_EXPR_KEY}' metadata naming its partition column"
        )
    if not isinstance(context.asset_partitions_def, dg.TimeWindowPartitionsDefinition):
        raise ValueError("this IO manager stores time-window (e.g. daily) partitions only")
    column = validate_identifier(column, PARTITION_EXPR_KEY)
    return PartitionSlice(column, *context.asset_partitions_time_window)


class PostgresPandasIOManager(dg.ConfigurableIOManager):
    """Stores pandas DataFrames as PostgreSQL tables (schema = key prefix, table = asset name)."""

    database: dg.ResourceDependency[PostgresResource]

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | FrameStream) -> None:
        """Replace the output's partition(s), or the whole table, in one transaction."""
        if not isinstance(obj, pd.DataFrame | FrameStream):
            raise TypeError(
                f"{type(self).__name__} stores pandas DataFrames; asset "
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}"
            )
        schema, table = _table_of(context)
        part = _partition_of(context, context.definition_metadata or {})
        conn = self.database.engine().raw_connection()
        try:
            result = write_frame(conn.driver_connection, schema, table, obj, part)
        except BaseException:
            conn.invalidate()  # maybe broken mid-COPY: never back to the pool
            raise
        finally:
            conn.close()
        context.log.info(
            f"wrote {result.rows} rows to {schema}.{table} ({result.rows_replaced} replaced) on "
            f"{self.database.masked_url()}"
        )
        metadata = {
            "dagster/row_count": dg.MetadataValue.int(result.rows),
            "dagster/table_name": dg.MetadataValue.text(f"{schema}.{table}"),
            "preview": dg.MetadataValue.md(result.preview.to_markdown(index=False)),
            "rows_replaced": dg.MetadataValue.int(result.rows_replaced),
            **result.metadata,
        }
        # An asset that declares its columns (with their descriptions) keeps them: a schema
        # inferred here would replace the declared one in the UI's latest materialization.
        if COLUMN_SCHEMA_KEY not in (context.definition_metadata or {}):
            columns = [dg.TableColumn(name, pg_type) for name, pg_type in result.columns]
            metadata[COLUMN_SCHEMA_KEY] = dg.MetadataValue.table_schema(dg.TableSchema(columns))
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        """Read the upstream asset's table, restricted to the requested partition(s)."""
        upstream = context.upstream_output
        part = _partition_of(context, (upstream.definition_metadata if upstream else None) or {})
        conn = self.database.engine().raw_connection()
        try:
            return read_frame(conn.driver_connection, *_table_of(context), part)
        finally:
            conn.close()
