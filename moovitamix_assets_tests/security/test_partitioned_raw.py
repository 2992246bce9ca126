"""docs/operations.md's scaling recipe: a raw table under declarative partitioning by snapshot_date.

The IO manager replaces a day's slice with DELETE + COPY on the parent table, which PostgreSQL
routes to the right partition; the recipe pre-creates the parent, and the platform is unchanged.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import psycopg2

from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.assets import RAW_KEYS, raw_assets
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def test_a_range_partitioned_raw_table_is_loaded_and_reloaded_in_place(
    pg_conn: psycopg2.extensions.connection, pg_url: str, api_server
) -> None:
    today = utc_today()
    start, end = month_start(today), next_month(today)
    with pg_conn.cursor() as cur:
        cur.execute("CREATE SCHEMA raw")
        # Columns as the IO manager would create them; only the partitioning is added.
        cur.execute(
            """
            CREATE TABLE raw.users (
                snapshot_date date NOT NULL, id bigint, first_name text, last_name text,
                email text, gender text, favorite_genres text,
                created_at timestamptz, updated_at timestamptz
            ) PARTITION BY RANGE (snapshot_date)
            """
        )
        cur.execute(
            "CREATE TABLE raw.users_current PARTITION OF raw.users FOR VALUES FROM (%s) TO (%s)",
            (start, end),
        )
        cur.execute("CREATE TABLE raw.users_default PARTITION OF raw.users DEFAULT")
    api = api_server(records=40, seed=3)
    postgres = PostgresResource(database_url=pg_url)
    resources = {
        "moovitamix_api": MoovitamixApiResource(base_url=api.base_url),
        "postgres": postgres,
        "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
    }
    for _ in range(2):  # the second run replaces the day's rows, it does not add to them
        assert dg.materialize(
            raw_assets,
            selection=[RAW_KEYS["users"]],
            resources=resources,
            partition_key=today.isoformat(),
        )

    with pg_conn.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE oid = 'raw.users'::regclass")
        assert cur.fetchone() == ("p",)
        cur.execute("SELECT tableoid::regclass::text, count(*) FROM raw.users GROUP BY 1")
        assert cur.fetchall() == [("raw.users_current", 40)]
