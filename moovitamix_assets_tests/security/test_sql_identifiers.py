"""Identifiers that reach SQL from configuration or metadata are validated before any statement.

Values always travel as bound parameters (see the audit in docs/operations.md); names cannot, so
every schema, table, column and partition column that comes from an asset key, asset metadata or a
DataFrame is checked against ``[a-z_][a-z0-9_]{0,62}`` and refused with an error naming the setting.
A victim table proves that nothing ran.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import psycopg2
import pytest

from moovitamix_assets.partitions import daily_partitions, utc_today
from moovitamix_assets.warehouse.database import (
    PostgresResource,
    create_schema_sql,
    quote_ident,
    validate_identifier,
)
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager

INJECTIONS = [
    "x; DROP TABLE victim.rows",
    'raw"; DROP TABLE victim.rows; --',
    "raw'",
    "Raw",  # would silently become a case-sensitive "Raw" schema next to raw
    "snapshot_date)",
    "a b",
    "",
    "1starts_with_digit",
    "x" * 64,
    "é",
]


@pytest.fixture
def victim(pg_conn: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    """A table an injection would drop, and nothing else in the database."""
    with pg_conn.cursor() as cur:
        cur.execute("CREATE SCHEMA victim")
        cur.execute("CREATE TABLE victim.rows AS SELECT 1 AS x")
    return pg_conn


def assert_untouched(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM victim.rows")
        assert cur.fetchone() == (1,)
        cur.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname NOT IN ('information_schema', 'public') ORDER BY 1"
        )
        assert cur.fetchall() == [("victim",)]


@pytest.mark.parametrize("name", INJECTIONS)
def test_unsafe_identifiers_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid partition_expr"):
        validate_identifier(name, "partition_expr")
    with pytest.raises(ValueError, match="invalid schema"):
        quote_ident(name, "schema")
    with pytest.raises(ValueError, match="invalid schema"):
        create_schema_sql(name)


def test_safe_identifiers_pass_and_are_quoted() -> None:
    assert quote_ident("listen_history") == '"listen_history"'
    assert validate_identifier("_x" + "9" * 61) == "_x" + "9" * 61


def test_the_schema_statement_creates_once_without_create_rights_when_present(
    pg_conn: psycopg2.extensions.connection,
) -> None:
    with pg_conn.cursor() as cur:
        for _ in range(2):  # idempotent
            cur.execute(create_schema_sql("ml"))
        cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'ml'")
        assert cur.fetchone() == (1,)


def partitioned_asset(metadata: dict[str, str], key_prefix: str = "raw") -> dg.AssetsDefinition:
    @dg.asset(
        name="users",
        key_prefix=[key_prefix],
        partitions_def=daily_partitions,
        io_manager_key="warehouse_io_manager",
        metadata=metadata,
    )
    def users() -> pd.DataFrame:
        return pd.DataFrame({"snapshot_date": [utc_today()], "id": [1]})

    return users


def materialize_failure(asset: dg.AssetsDefinition, pg_url: str) -> str:
    """Materialize; return the step failure's message (the run must fail)."""
    result = dg.materialize(
        [asset],
        resources={
            "warehouse_io_manager": PostgresPandasIOManager(
                database=PostgresResource(database_url=pg_url)
            )
        },
        partition_key=utc_today().isoformat(),
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1
    return failures[0].step_failure_data.error.to_string()


def test_a_malicious_partition_expr_is_refused(victim, pg_url: str) -> None:
    asset = partitioned_asset({"partition_expr": "snapshot_date; DROP TABLE victim.rows"})
    message = materialize_failure(asset, pg_url)
    assert "invalid partition_expr 'snapshot_date; DROP TABLE victim.rows'" in message
    assert_untouched(victim)


def test_an_upper_case_key_prefix_is_refused(victim, pg_url: str) -> None:
    # Dagster accepts it as a key; PostgreSQL would need it quoted forever after.
    message = materialize_failure(
        partitioned_asset({"partition_expr": "snapshot_date"}, "Raw"), pg_url
    )
    assert "invalid schema 'Raw'" in message
    assert_untouched(victim)


@pytest.mark.parametrize(
    "key",
    [
        ['raw"; DROP TABLE victim.rows; --', "users"],
        ["raw", "users; DROP TABLE victim.rows"],
        ["raw", "it's"],
    ],
)
def test_an_asset_key_with_quotes_is_refused_by_the_io_manager(victim, pg_url: str, key) -> None:
    # Dagster's decorators refuse such keys; the IO manager does not rely on it.
    io_manager = PostgresPandasIOManager(database=PostgresResource(database_url=pg_url))
    context = dg.build_output_context(asset_key=dg.AssetKey(key))
    with pytest.raises(ValueError, match=r"invalid (schema|table)"):
        io_manager.handle_output(context, pd.DataFrame({"id": [1]}))
    assert_untouched(victim)


def test_a_column_name_with_a_quote_is_refused(victim, pg_url: str) -> None:
    io_manager = PostgresPandasIOManager(database=PostgresResource(database_url=pg_url))
    context = dg.build_output_context(asset_key=dg.AssetKey(["core", "users"]))
    frame = pd.DataFrame({'id") ; DROP TABLE victim.rows; --': [1]})
    with pytest.raises(ValueError, match="invalid column name in core.users"):
        io_manager.handle_output(context, frame)
    assert_untouched(victim)
