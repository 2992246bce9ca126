"""Store pandas DataFrames in PostgreSQL tables with COPY, and load them back with their types.

As dagster-duckdb's ``DbIOManager``: key prefix = schema, asset name = table, ``partition_expr``
metadata = partition column; a write deletes the partition's rows and COPYs the new ones in one
transaction. An existing table keeps its columns, keys, indexes and grants. The index is not stored.

Types are declared, not inferred: a column the table has keeps its type, a new one takes the
asset's ``dagster/column_schema`` type (a stream's ``types``); naive datetimes mean UTC. Loaded
back: integers as int64 (Int64 with NULLs), texts as str, timestamps in UTC, the rest as objects.
"""

import datetime as dt
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from functools import partial
from typing import Any, Final, NamedTuple

import dagster as dg
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

TIMESTAMPTZ: Final = "timestamp with time zone"
# A column type's pandas dtype as loaded (with NULLs, without); other types stay Python objects.
_DTYPES: Final[dict[str, tuple[str, str]]] = {
    **dict.fromkeys(("smallint", "integer", "bigint"), ("Int64", "int64")),
    **dict.fromkeys(("real", "double precision", "numeric"), ("float64", "float64")),
    **dict.fromkeys(("text", "character varying", "character"), ("str", "str")),
    "boolean": ("boolean", "bool"),
}


class SchemaMismatchError(TypeError):
    """A column's declared type is not the table's, or a new column has no declared type."""


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
    """A table's rows as chunks, COPY'd as produced in one transaction: ``types`` names every column
    (None: the table's type); ``finish``, run after the last chunk, gives sidecars and metadata."""

    types: Mapping[str, str | None]
    chunks: Iterable[pd.DataFrame]
    finish: Callable[[], tuple[Sequence[Sidecar], Mapping[str, Any]]] = lambda: ((), {})


def copy_csv(df: pd.DataFrame, types: Mapping[str, str]) -> bytes:
    """Render rows as COPY's CSV (NULL unquoted, every text quoted), in C++ by pyarrow."""
    columns = {}
    for name, pg_type in types.items():
        series = df[name]
        if pg_type.endswith("[]"):
            series = series.map(_array_literal, na_action="ignore")
        elif pg_type in ("jsonb", "json"):
            json_text = partial(json.dumps, ensure_ascii=False, allow_nan=False)
            series = series.map(json_text, na_action="ignore")
        elif pg_type == TIMESTAMPTZ and pd.api.types.is_object_dtype(series.dtype):
            # ISO texts (the API's) or datetimes; naive ones are UTC, the session's time zone.
            series = series.map(str, na_action="ignore")
        columns[name] = pa.array(series, from_pandas=True)
    out = io.BytesIO()
    pa_csv.write_csv(pa.table(columns), out, pa_csv.WriteOptions(include_header=False))
    return out.getvalue()


def _array_literal(value: Iterable[Any]) -> str:
    """An array's text: elements quoted (the column's type parses them), NULL bare."""
    if all(type(item) is int for item in value):  # track ids: the common case, in C
        return "{" + ",".join(map(str, value)) + "}"

    def quoted(v: Any) -> str:
        return "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "{" + ",".join(map(quoted, value)) + "}"


def table_columns(cur: Any, schema: str, table: str) -> dict[str, str]:
    """Name -> type of a table's columns in stored order, empty when there is no such table."""
    cur.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (sql.Identifier(schema, table).as_string(cur),),
    )
    return dict(cur.fetchall())


def _slice_where(
    part: PartitionSlice | None, types: Mapping[str, str]
) -> tuple[sql.Composable, tuple]:
    """The condition (and its bounds) that selects a partition slice; TRUE without one."""
    if part is None:
        return sql.SQL("TRUE"), ()
    pg_type = types.get(part.column)
    if pg_type not in ("date", TIMESTAMPTZ, None):
        raise TypeError(f"partition column {part.column!r} is {pg_type}: use date or timestamptz")
    bounds = (
        (part.start, part.end) if pg_type == TIMESTAMPTZ else (part.start.date(), part.end.date())
    )
    return sql.SQL("{c} >= %s AND {c} < %s").format(c=sql.Identifier(part.column)), bounds


def check_partition_values(df: pd.DataFrame, part: PartitionSlice, table: str) -> None:
    """Refuse rows whose partition column is NULL or outside the partition(s) being written."""
    if part.column not in df.columns:
        raise PartitionMismatchError(f"{table}: the rows have no partition column {part.column!r}")
    values = pd.Series(df[part.column].unique())
    stamps = pd.to_datetime(values, utc=True)
    bad = values[stamps.isna() | (stamps < part.start) | (stamps >= part.end)]
    if len(bad):
        rows = int(df[part.column].isin(bad).sum())
        raise PartitionMismatchError(
            f"{table}: {rows} row(s) have {part.column} NULL or outside the partition(s) written "
            f"[{part.start.isoformat()}, {part.end.isoformat()}), e.g. "
            + ", ".join(map(str, bad[:3]))
        )


def write_frame(
    conn: Any,
    schema: str,
    table: str,
    stream: FrameStream,
    part: PartitionSlice | None = None,
) -> dict[str, Any]:
    """Replace a table (or its partition slice) with ``stream``, then its sidecars, in one
    transaction of ``conn`` (psycopg2), rolled back on failure; return the write's metadata."""
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")  # timestamps travel as UTC wall-clock text
            metadata = _replace(cur, schema, table, stream, part, {})
            sidecars, extra = stream.finish()
            for car in sidecars:  # into existing tables: their types
                rows = FrameStream(dict.fromkeys(car.frame.columns), [car.frame])
                _replace(cur, car.schema, car.table, rows, part, car.match)
        conn.commit()
    except BaseException:
        with suppress(Exception):  # a dropped connection cannot roll back; the server does
            conn.rollback()
        raise
    return {**metadata, **extra}


def _replace(
    cur: Any,
    schema: str,
    table: str,
    stream: FrameStream,
    part: PartitionSlice | None,
    match: Mapping[str, Any],
) -> dict[str, Any]:
    qualified = f"{validate_identifier(schema, 'schema')}.{validate_identifier(table, 'table')}"
    target = sql.Identifier(schema, table)
    # Serialise writers of one table until the transaction ends.
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"table/{qualified}",))
    existing = table_columns(cur, schema, table)
    types = {}
    for name, declared in stream.types.items():
        validate_identifier(name, f"column name in {qualified}")
        types[name] = existing.get(name, declared)
        if types[name] is None or declared not in (None, types[name]):
            raise SchemaMismatchError(
                f"cannot write column {qualified}.{name}: the table column is "
                f"{existing.get(name, 'missing')} but the asset declares {declared or 'no type'} "
                f"in its {COLUMN_SCHEMA_KEY} metadata"
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
    if part is not None:
        # BRIN-index the partition column unless an index starts with it or another role owns
        # the table: a partition is COPY'd at once, so DELETE and SELECT of a slice skip blocks.
        cur.execute(
            "SELECT pg_has_role(c.relowner, 'USAGE') AND NOT EXISTS (SELECT 1 FROM pg_index i "
            "WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum) FROM pg_class c "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s "
            "WHERE c.oid = to_regclass(%s)",
            (part.column, target.as_string(cur)),
        )
        if cur.fetchone() == (True,):
            brin = sql.SQL("CREATE INDEX ON {} USING brin ({})")
            cur.execute(brin.format(target, sql.Identifier(part.column)))
    where, bounds = _slice_where(part, types)
    matches = [sql.SQL(" AND {} = %s").format(sql.Identifier(name)) for name in match]
    delete = sql.SQL("DELETE FROM {} WHERE {}{}").format(target, where, sql.SQL("").join(matches))
    cur.execute(delete, [*bounds, *match.values()])
    replaced, rows, preview = max(cur.rowcount, 0), 0, pd.DataFrame()
    names = sql.SQL(", ").join(map(sql.Identifier, types))
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(target, names).as_string(cur)
    for chunk in stream.chunks:
        if preview.empty:
            preview = chunk.head(PREVIEW_ROWS)
        if part is not None and len(chunk):
            check_partition_values(chunk, part, qualified)
        for start in range(0, len(chunk), CHUNK_ROWS):
            rendered = copy_csv(chunk.iloc[start : start + CHUNK_ROWS], types)
            cur.copy_expert(copy, io.BytesIO(rendered))
        rows += len(chunk)
    # ADD COLUMN appends: this is the table's stored order.
    columns = [dg.TableColumn(name, t) for name, t in {**existing, **types}.items()]
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/table_name": dg.MetadataValue.text(qualified),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
        "rows_replaced": dg.MetadataValue.int(replaced),
        COLUMN_SCHEMA_KEY: dg.MetadataValue.table_schema(dg.TableSchema(columns)),
    }


def read_frame(
    conn: Any, schema: str, table: str, part: PartitionSlice | None = None
) -> pd.DataFrame:
    """Load a table, or one partition slice of it, as a typed DataFrame; LookupError if missing."""
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            stored = table_columns(cur, schema, table)
            if not stored:
                raise LookupError(f"table {schema}.{table} does not exist: materialize it first")
            where, bounds = _slice_where(part, stored)
            select = sql.SQL("SELECT * FROM {} WHERE {}")
            cur.execute(select.format(sql.Identifier(schema, table), where), bounds)
            rows = cur.fetchall()
    finally:
        conn.rollback()
    frame = pd.DataFrame(rows, columns=[*stored], dtype=object)
    for name, pg_type in stored.items():
        if pg_type.startswith("timestamp"):
            frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[us, UTC]")
        elif pg_type in _DTYPES:
            with_null, without = _DTYPES[pg_type]
            frame[name] = frame[name].astype(with_null if frame[name].isna().any() else without)
    return frame


def _target(
    context: dg.InputContext | dg.OutputContext, metadata: Mapping[str, Any]
) -> tuple[str, str, PartitionSlice | None]:
    """The asset's schema (its key's prefix) and table, and its partition slice if any."""
    path = context.asset_key.path
    schema = validate_identifier(path[-2] if len(path) > 1 else "public", "schema")
    table = validate_identifier(path[-1], "table")
    if not context.has_asset_partitions:
        return schema, table, None
    column = metadata.get(PARTITION_EXPR_KEY)
    if not isinstance(column, str):
        raise ValueError(
            f"asset {context.asset_key.to_user_string()} is partitioned but has no "
            f"'{PARTITION_EXPR_KEY}' metadata naming its partition column"
        )
    # Dagster refuses a partition that is no time window.
    column = validate_identifier(column, PARTITION_EXPR_KEY)
    return schema, table, PartitionSlice(column, *context.asset_partitions_time_window)


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
        declared = context.definition_metadata or {}
        schema, table, part = _target(context, declared)
        if isinstance(obj, pd.DataFrame):
            found = declared.get(COLUMN_SCHEMA_KEY)  # a TableSchema or its MetadataValue
            columns = getattr(found, "schema", found).columns if found else []
            types = {c.name: c.type for c in columns}
            obj = FrameStream({name: types.get(name) for name in obj.columns}, [obj])
        conn = self.database.engine().raw_connection()
        try:
            metadata = write_frame(conn.driver_connection, schema, table, obj, part)
        except BaseException:
            conn.invalidate()  # maybe broken mid-COPY: never back to the pool
            raise
        finally:
            conn.close()
        context.log.info(
            f"wrote {metadata['dagster/row_count'].value} rows to {schema}.{table} "
            f"({metadata['rows_replaced'].value} replaced) on {self.database.masked_url()}"
        )
        # An asset that declares its columns (with their descriptions) keeps them: the table's
        # would replace the declared ones in the UI's latest materialization.
        if COLUMN_SCHEMA_KEY in declared:
            del metadata[COLUMN_SCHEMA_KEY]
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        """Read the upstream asset's table, restricted to the requested partition(s)."""
        target = _target(context, context.upstream_output.definition_metadata or {})
        conn = self.database.engine().raw_connection()
        try:
            return read_frame(conn.driver_connection, *target)
        finally:
            conn.close()
