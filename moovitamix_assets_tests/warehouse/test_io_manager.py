"""PostgresPandasIOManager against a real PostgreSQL: round trips, partitions, atomicity, schema."""

import datetime as dt
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import (
    PartitionMismatchError,
    PostgresPandasIOManager,
    SchemaMismatchError,
)

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")
EVENTS = {"snapshot_date": "date", "value": "bigint"}


def _declare(types: dict[str, str], **metadata: Any) -> dict[str, Any]:
    """An asset's metadata declaring its columns' types (as columns.yaml's assets do)."""
    schema = dg.TableSchema([dg.TableColumn(name, pg_type) for name, pg_type in types.items()])
    return {"dagster/column_schema": dg.MetadataValue.table_schema(schema), **metadata}


@pytest.fixture
def io_manager(postgres_resource: PostgresResource) -> PostgresPandasIOManager:
    return PostgresPandasIOManager(database=postgres_resource)


def _resources(io_manager: PostgresPandasIOManager) -> dict[str, Any]:
    return {"warehouse_io_manager": io_manager}


def _rows(pg_conn: Any, query: str) -> list[tuple[Any, ...]]:
    with pg_conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """Metadata of the asset's materialization (a range run emits one per partition, all equal)."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset]
    materialization = events[-1].step_materialization_data.materialization
    return {key: value.value for key, value in materialization.metadata.items()}


def test_dtype_round_trip(io_manager: PostgresPandasIOManager, pg_conn: Any) -> None:
    frame = pd.DataFrame(
        {
            "nullable_int": pd.array([1, None, 3], dtype="Int64"),
            "plain_int": np.array([10, 20, 2**62], dtype="int64"),
            "ratio": [0.5, np.nan, -1.25e-8],
            "flag": [True, False, True],
            "name": pd.Series(["tab\there", None, 'quote" back\\slash\nnewline é'], dtype="str"),
            "aware_ts": pd.to_datetime(
                ["2024-01-01 10:00", None, "2024-06-01 12:00:00.123456"], format="ISO8601"
            ).tz_localize("Europe/Paris"),
            "naive_ts": pd.to_datetime(["2024-01-01 10:00:00", "2024-01-02 23:59:59", None]),
            "day": [dt.date(2024, 1, 1), None, dt.date(2024, 12, 31)],
            "track_ids": [[1, 2, 3], [], None],
            "labels": [["rock", 'a"b'], [], None],
            "payload": [{"k": [1, "x"], "n": None}, None, {}],
        }
    )
    types = {
        "nullable_int": "bigint",
        "plain_int": "bigint",
        "ratio": "double precision",
        "flag": "boolean",
        "name": "text",
        "aware_ts": "timestamp with time zone",
        "naive_ts": "timestamp with time zone",
        "day": "date",
        "track_ids": "bigint[]",
        "labels": "text[]",
        "payload": "jsonb",
    }
    loaded: list[pd.DataFrame] = []

    @dg.asset(key_prefix=["raw"], io_manager_key="warehouse_io_manager", metadata=_declare(types))
    def typed() -> pd.DataFrame:
        return frame

    bare = {"dagster/column_schema": _declare(types)["dagster/column_schema"].schema}  # works too

    @dg.asset(key_prefix=["core"], io_manager_key="warehouse_io_manager", metadata=bare)
    def reader(typed: pd.DataFrame) -> pd.DataFrame:
        loaded.append(typed)
        return typed.head(1)

    result = dg.materialize([typed, reader], resources=_resources(io_manager))
    assert result.success
    out = loaded[0]
    assert list(out.columns) == list(frame.columns)
    assert str(out["nullable_int"].dtype) == "Int64"
    assert out["nullable_int"].tolist()[0::2] == [1, 3] and pd.isna(out["nullable_int"][1])
    assert out["plain_int"].dtype == np.int64
    assert out["plain_int"].tolist() == [10, 20, 2**62]
    assert out["ratio"].dtype == np.float64
    assert out["ratio"][0] == 0.5 and np.isnan(out["ratio"][1]) and out["ratio"][2] == -1.25e-8
    assert out["flag"].dtype == bool and out["flag"].tolist() == [True, False, True]
    assert isinstance(out["name"].dtype, pd.StringDtype)
    assert out["name"][0] == "tab\there" and pd.isna(out["name"][1])
    assert out["name"][2] == 'quote" back\\slash\nnewline é'
    assert str(out["aware_ts"].dtype.tz) == "UTC"
    assert out["aware_ts"][0] == pd.Timestamp("2024-01-01 09:00", tz="UTC")
    assert out["aware_ts"][2] == pd.Timestamp("2024-06-01 10:00:00.123456", tz="UTC")
    assert pd.isna(out["aware_ts"][1])
    assert out["naive_ts"][1] == pd.Timestamp("2024-01-02 23:59:59", tz="UTC")
    assert pd.isna(out["naive_ts"][2])
    assert out["day"].tolist() == [dt.date(2024, 1, 1), None, dt.date(2024, 12, 31)]
    assert out["track_ids"].tolist() == [[1, 2, 3], [], None]
    assert out["labels"].tolist() == [["rock", 'a"b'], [], None]
    assert out["payload"].tolist() == [{"k": [1, "x"], "n": None}, None, {}]

    metadata = _metadata(result, "typed")
    assert metadata["dagster/row_count"] == 3
    assert metadata["dagster/table_name"] == "raw.typed"
    # The declared schema (with its descriptions) stays the asset's: none is added.
    assert "dagster/column_schema" not in metadata
    stored = "SELECT attname, format_type(atttypid, -1) FROM pg_attribute "
    stored += "WHERE attrelid = 'raw.typed'::regclass AND attnum > 0 ORDER BY attnum"
    assert dict(_rows(pg_conn, stored)) == types
    assert "nullable_int" in metadata["preview"]
    assert metadata["rows_replaced"] == 0


def _daily_asset(values: dict[str, list[int]]) -> dg.AssetsDefinition:
    """A daily-partitioned raw asset whose rows per day come from ``values`` (mutable per test)."""

    @dg.asset(
        key_prefix=["raw"],
        partitions_def=DAILY,
        metadata=_declare(EVENTS, partition_expr="snapshot_date"),
        io_manager_key="warehouse_io_manager",
    )
    def events(context: dg.AssetExecutionContext) -> pd.DataFrame:
        window = context.partition_time_window
        frames = []
        day = window.start.date()
        while day < window.end.date():
            ids = values[day.isoformat()]
            frames.append(pd.DataFrame({"snapshot_date": [day] * len(ids), "value": ids}))
            day += dt.timedelta(days=1)
        return pd.concat(frames, ignore_index=True)

    return events


def test_rematerializing_a_partition_replaces_only_it(
    io_manager: PostgresPandasIOManager, pg_conn: Any
) -> None:
    values = {"2024-01-01": [1, 2, 3], "2024-01-02": [10, 20]}
    events = _daily_asset(values)
    resources = _resources(io_manager)
    assert dg.materialize([events], resources=resources, partition_key="2024-01-01").success
    assert dg.materialize([events], resources=resources, partition_key="2024-01-02").success
    values["2024-01-01"] = [7, 8, 9, 11]
    result = dg.materialize([events], resources=resources, partition_key="2024-01-01")

    rows = _rows(
        pg_conn,
        "SELECT snapshot_date::text, array_agg(value ORDER BY value) FROM raw.events GROUP BY 1 "
        "ORDER BY 1",
    )
    assert rows == [("2024-01-01", [7, 8, 9, 11]), ("2024-01-02", [10, 20])]
    metadata = _metadata(result, "events")
    assert metadata["dagster/row_count"] == 4
    assert metadata["rows_replaced"] == 3


def test_a_partitioned_table_gets_one_brin_index_that_serves_the_partition_slice(
    io_manager: PostgresPandasIOManager, pg_conn: Any
) -> None:
    events = _daily_asset({f"2024-01-{d:02d}": list(range(2000)) for d in range(1, 6)})
    resources = _resources(io_manager)
    for day in range(1, 6):
        assert dg.materialize([events], resources=resources, partition_key=f"2024-01-0{day}")
    assert dg.materialize([events], resources=resources, partition_key="2024-01-03").success

    indexes = _rows(
        pg_conn, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'raw' AND tablename = 'events'"
    )
    assert len(indexes) == 1, indexes  # made once, not once per write
    assert "USING brin (snapshot_date)" in indexes[0][0]
    with pg_conn.cursor() as cur:
        cur.execute("SET enable_seqscan = off")  # the table is small: force the choice
        try:
            cur.execute(
                "EXPLAIN DELETE FROM raw.events "
                "WHERE snapshot_date >= '2024-01-03' AND snapshot_date < '2024-01-04'"
            )
            plan = "\n".join(row[0] for row in cur.fetchall())
        finally:
            cur.execute("RESET enable_seqscan")
    assert "Bitmap Index Scan on events_snapshot_date_idx" in plan, plan


def test_backfill_range_writes_and_loads_three_days(
    io_manager: PostgresPandasIOManager, pg_conn: Any
) -> None:
    values = {f"2024-01-0{d}": [d * 10 + i for i in range(d)] for d in range(1, 6)}
    events = _daily_asset(values)
    loaded: list[pd.DataFrame] = []

    @dg.asset(
        key_prefix=["core"],
        partitions_def=DAILY,
        metadata=_declare(EVENTS, partition_expr="snapshot_date"),
        io_manager_key="warehouse_io_manager",
    )
    def event_copy(events: pd.DataFrame) -> pd.DataFrame:
        loaded.append(events)
        return events

    resources = _resources(io_manager)
    assert dg.materialize([events], resources=resources, partition_key="2024-01-05").success
    result = dg.materialize(
        [events, event_copy],
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-03",
        },
    )
    assert result.success
    counts = _rows(
        pg_conn, "SELECT snapshot_date::text, count(*) FROM raw.events GROUP BY 1 ORDER BY 1"
    )
    assert counts == [("2024-01-01", 1), ("2024-01-02", 2), ("2024-01-03", 3), ("2024-01-05", 5)]
    # The downstream range run loads exactly the three requested days, not 2024-01-05.
    assert sorted({d.isoformat() for d in loaded[0]["snapshot_date"]}) == [
        "2024-01-01",
        "2024-01-02",
        "2024-01-03",
    ]
    assert len(loaded[0]) == 6
    assert _metadata(result, "events")["dagster/row_count"] == 6
    partitions = {
        e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "events"
    }
    assert partitions == {"2024-01-01", "2024-01-02", "2024-01-03"}


def test_partitioned_input_loads_only_its_partition(io_manager: PostgresPandasIOManager) -> None:
    events = _daily_asset({"2024-01-01": [1, 2], "2024-01-02": [3, 4, 5]})
    loaded: list[pd.DataFrame] = []

    @dg.asset(
        key_prefix=["core"],
        partitions_def=DAILY,
        io_manager_key="warehouse_io_manager",
        metadata=_declare(EVENTS, partition_expr="snapshot_date"),
    )
    def daily_copy(events: pd.DataFrame) -> pd.DataFrame:
        loaded.append(events)
        return events

    resources = _resources(io_manager)
    assert dg.materialize([events], resources=resources, partition_key="2024-01-01").success
    assert dg.materialize(
        [events, daily_copy], resources=resources, partition_key="2024-01-02"
    ).success
    assert loaded[0]["value"].tolist() == [3, 4, 5]
    assert set(loaded[0]["snapshot_date"]) == {dt.date(2024, 1, 2)}


def test_rows_outside_the_partition_are_refused(
    io_manager: PostgresPandasIOManager, pg_conn: Any
) -> None:
    @dg.asset(
        key_prefix=["raw"],
        partitions_def=DAILY,
        metadata=_declare(EVENTS, partition_expr="snapshot_date"),
        io_manager_key="warehouse_io_manager",
    )
    def stray() -> pd.DataFrame:
        return pd.DataFrame(
            {
                "snapshot_date": [dt.date(2024, 1, d) for d in (1, 9, 9, 1, 9)],
                "value": [1, 2, 3, 4, 5],
            }
        )

    # Rows are counted, distinct values named once.
    with pytest.raises(PartitionMismatchError, match=r"raw\.stray: 3 row\(s\).*e\.g\. 2024-01-09$"):
        dg.materialize([stray], resources=_resources(io_manager), partition_key="2024-01-01")
    # Nothing was written, not even the table.
    assert _rows(pg_conn, "SELECT to_regclass('raw.stray') IS NULL") == [(True,)]


def test_a_value_that_cannot_be_written_keeps_previous_rows(
    postgres_resource: PostgresResource, pg_conn: Any
) -> None:
    state = {"frame": pd.DataFrame({"id": [1, 2], "payload": [{"a": 1}, {"a": 2}]})}

    @dg.asset(
        key_prefix=["raw"],
        io_manager_key="warehouse_io_manager",
        metadata=_declare({"id": "bigint", "payload": "jsonb"}),
    )
    def docs() -> pd.DataFrame:
        return state["frame"]

    manager = PostgresPandasIOManager(database=postgres_resource)
    assert dg.materialize([docs], resources=_resources(manager)).success
    # Row 4's NaN is not valid JSON.
    state["frame"] = pd.DataFrame(
        {"id": [10, 11, 12, 13, 14], "payload": [{"a": 1}, {}, {}, {"bad": float("nan")}, {}]}
    )
    with pytest.raises(ValueError, match="JSON"):
        dg.materialize([docs], resources=_resources(manager))
    assert _rows(pg_conn, "SELECT id FROM raw.docs ORDER BY id") == [(1,), (2,)]


def test_new_column_is_added_and_missing_ones_are_null(
    io_manager: PostgresPandasIOManager, pg_conn: Any
) -> None:
    frames = {
        "2024-01-01": pd.DataFrame({"snapshot_date": [dt.date(2024, 1, 1)], "a": [1]}),
        "2024-01-02": pd.DataFrame(
            {"snapshot_date": [dt.date(2024, 1, 2)], "a": [2], "b": ["new"]}
        ),
        "2024-01-03": pd.DataFrame({"snapshot_date": [dt.date(2024, 1, 3)], "b": ["only b"]}),
    }

    @dg.asset(
        key_prefix=["raw"],
        partitions_def=DAILY,
        metadata=_declare(
            {"snapshot_date": "date", "a": "bigint", "b": "text"}, partition_expr="snapshot_date"
        ),
        io_manager_key="warehouse_io_manager",
    )
    def evolving(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return frames[context.partition_key]

    for key in frames:
        assert dg.materialize(
            [evolving], resources=_resources(io_manager), partition_key=key
        ).success
    rows = _rows(pg_conn, "SELECT snapshot_date::text, a, b FROM raw.evolving ORDER BY 1")
    assert rows == [
        ("2024-01-01", 1, None),
        ("2024-01-02", 2, "new"),
        ("2024-01-03", None, "only b"),
    ]


@pytest.mark.parametrize(
    ("first", "second", "old_type", "new_type"),
    [
        (["a", "b"], [1, 2], "text", "bigint"),
        ([1, 2], ["x", "y"], "bigint", "text"),
    ],
)
def test_a_type_change_is_refused_naming_table_column_and_types(
    io_manager: PostgresPandasIOManager,
    pg_conn: Any,
    first: list[Any],
    second: list[Any],
    old_type: str,
    new_type: str,
) -> None:
    def typed_col(values: list[Any], pg_type: str) -> dg.AssetsDefinition:
        metadata = _declare({"id": "bigint", "col": pg_type})

        @dg.asset(key_prefix=["raw"], io_manager_key="warehouse_io_manager", metadata=metadata)
        def typed_col() -> pd.DataFrame:
            return pd.DataFrame({"id": [1, 2], "col": values})

        return typed_col

    resources = _resources(io_manager)
    assert dg.materialize([typed_col(first, old_type)], resources=resources).success
    with pytest.raises(SchemaMismatchError) as raised:
        dg.materialize([typed_col(second, new_type)], resources=resources)
    message = str(raised.value)
    assert "raw.typed_col.col" in message
    assert f"table column is {old_type} but the asset declares {new_type}" in message
    # The failed write changed nothing.
    assert _rows(pg_conn, "SELECT col::text FROM raw.typed_col ORDER BY id") == [
        (str(v),) for v in first
    ]


def test_non_dataframe_output_is_a_clear_type_error(io_manager: PostgresPandasIOManager) -> None:
    @dg.asset(key_prefix=["raw"], io_manager_key="warehouse_io_manager")
    def not_a_frame() -> dict[str, int]:
        return {"a": 1}

    with pytest.raises(TypeError, match=r"stores pandas DataFrames.*returned dict"):
        dg.materialize([not_a_frame], resources=_resources(io_manager))


def test_partitioned_asset_without_partition_expr_is_refused(
    io_manager: PostgresPandasIOManager,
) -> None:
    @dg.asset(key_prefix=["raw"], partitions_def=DAILY, io_manager_key="warehouse_io_manager")
    def no_expr() -> pd.DataFrame:
        return pd.DataFrame({"a": [1]})

    with pytest.raises(ValueError, match="partition_expr"):
        dg.materialize([no_expr], resources=_resources(io_manager), partition_key="2024-01-01")


def test_build_contexts_write_then_read(io_manager: PostgresPandasIOManager) -> None:
    frame = pd.DataFrame({"id": [3, 1, 2], "name": ["c", "a", "b"]})
    key = dg.AssetKey(["ml", "scores"])
    # A new table's columns need declared types: none is guessed from the values.
    with pytest.raises(SchemaMismatchError, match=r"ml\.scores\.id: .* declares no type"):
        io_manager.handle_output(dg.build_output_context(asset_key=key), frame)
    metadata = _declare({"id": "bigint", "name": "text"})
    out_ctx = dg.build_output_context(asset_key=key, definition_metadata=metadata)
    io_manager.handle_output(out_ctx, frame)
    in_ctx = dg.build_input_context(asset_key=key, upstream_output=out_ctx)
    loaded = io_manager.load_input(in_ctx)
    pd.testing.assert_frame_equal(loaded, frame.astype({"name": "str"}))


def test_an_existing_table_keeps_its_primary_key_and_types_while_its_rows_are_replaced(
    io_manager: PostgresPandasIOManager, pg_conn: Any
) -> None:
    # Like ml.user_recommendations: created elsewhere with a key, its rows replaced by the asset.
    with pg_conn.cursor() as cur:
        cur.execute("CREATE SCHEMA ml")
        cur.execute(
            "CREATE TABLE ml.recs (user_id integer, rank smallint, PRIMARY KEY (user_id, rank))"
        )
    state = {"frame": pd.DataFrame({"user_id": [1, 1, 2], "rank": [1, 2, 1]})}

    @dg.asset(key_prefix=["ml"], io_manager_key="warehouse_io_manager")
    def recs() -> pd.DataFrame:
        return state["frame"]

    assert dg.materialize([recs], resources=_resources(io_manager)).success
    state["frame"] = pd.DataFrame({"user_id": [3], "rank": [1]})
    result = dg.materialize([recs], resources=_resources(io_manager))
    assert _rows(pg_conn, "SELECT user_id, rank FROM ml.recs") == [(3, 1)]
    # Undeclared, the asset's schema in the UI is the table's.
    schema = _metadata(result, "recs")["dagster/column_schema"].columns
    assert [(c.name, c.type) for c in schema] == [("user_id", "integer"), ("rank", "smallint")]
    constraints = (
        "SELECT conname FROM pg_constraint WHERE conrelid = 'ml.recs'::regclass AND contype = 'p'"
    )
    assert _rows(pg_conn, constraints) == [("recs_pkey",)]
    types = (
        "SELECT format_type(atttypid, -1) FROM pg_attribute "
        "WHERE attrelid = 'ml.recs'::regclass AND attnum > 0 ORDER BY attnum"
    )
    assert _rows(pg_conn, types) == [("integer",), ("smallint",)]
