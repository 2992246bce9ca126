"""The raw snapshot assets through Dagster: the API stand-in on loopback, a real PostgreSQL."""

import dagster as dg
import pytest
import sqlalchemy as sa

from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.assets import RAW_KEYS, raw_assets
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager

pytestmark = pytest.mark.http


def resources_for(base_url: str, pg_url: str) -> dict[str, object]:
    postgres = PostgresResource(database_url=pg_url)
    return {
        "moovitamix_api": MoovitamixApiResource(base_url=base_url, backoff_factor=0.01),
        "postgres": postgres,
        "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
    }


def materialization_of(result: dg.ExecuteInProcessResult, endpoint: str) -> dg.AssetMaterialization:
    (materialization,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == RAW_KEYS[endpoint]
    ]
    return materialization


def test_every_endpoint_lands_with_its_manifest(api_server, pg_url):
    api = api_server(records=2345)
    today = utc_today().isoformat()
    result = dg.materialize(
        raw_assets, resources=resources_for(api.base_url, pg_url), partition_key=today
    )
    assert result.success
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        for endpoint in ("users", "tracks", "listen_history"):
            rows = conn.execute(sa.text(f"SELECT count(*) FROM raw.{endpoint}")).scalar_one()
            manifest = conn.execute(
                sa.text(
                    "SELECT api_total, pages, rows_valid, rows_rejected FROM raw.snapshot_manifest "
                    "WHERE endpoint = :e AND snapshot_date = :d"
                ),
                {"e": endpoint, "d": today},
            ).one()
            assert rows == manifest.api_total == manifest.rows_valid == 2345
            assert (manifest.pages, manifest.rows_rejected) == (24, 0)
    engine.dispose()
    metadata = materialization_of(result, "users").metadata
    assert metadata["dagster/row_count"].value == 2345
    assert metadata["api_total"].value == 2345
    assert metadata["pages"].value == 24
    # The seed pipeline's run figures: CPU and memory of the step, plotted over time.
    assert metadata["cpu_s"].value > 0
    assert metadata["peak_rss_mb"].value > 50


def test_a_malformed_record_is_kept_in_rejects_and_its_neighbours_load(api_server, pg_url):
    api = api_server(records=500, malformed_records=[(3, 7, "wrong_type")])
    today = utc_today().isoformat()
    result = dg.materialize(
        raw_assets,
        selection=[RAW_KEYS["users"]],
        resources=resources_for(api.base_url, pg_url),
        partition_key=today,
    )
    assert result.success
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM raw.users")).scalar_one() == 499
        reject = conn.execute(
            sa.text(
                "SELECT endpoint, snapshot_date, page, position, field, reason FROM raw.rejects"
            )
        ).one()
    engine.dispose()
    assert (reject.endpoint, str(reject.snapshot_date), reject.page, reject.position) == (
        "users", today, 3, 7,
    )  # fmt: skip
    assert reject.field == "id"
    assert reject.reason
    metadata = materialization_of(result, "users").metadata
    assert metadata["rejected_records"].value == 1
    assert metadata["dagster/row_count"].value == 499


def test_rematerializing_the_day_replaces_it(api_server, pg_url):
    api = api_server(records=300)
    today = utc_today().isoformat()
    resources = resources_for(api.base_url, pg_url)
    for _ in range(2):
        assert dg.materialize(
            raw_assets, selection=[RAW_KEYS["users"]], resources=resources, partition_key=today
        ).success
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM raw.users")).scalar_one() == 300
        assert conn.execute(sa.text("SELECT count(*) FROM raw.snapshot_manifest")).scalar_one() == 1
    engine.dispose()


def test_a_first_read_with_no_rows_creates_the_contract_types_and_later_rows_load(
    api_server, pg_url
):
    # A new deployment whose API is still empty: the tables come from the contract, not from
    # the (absent) values, so the first day with records loads into them.
    today = utc_today().isoformat()
    empty = api_server(records=0)
    result = dg.materialize(
        raw_assets, resources=resources_for(empty.base_url, pg_url), partition_key=today
    )
    assert result.success
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        types = dict(
            conn.execute(
                sa.text(
                    "SELECT table_name || '.' || column_name, data_type "
                    "FROM information_schema.columns WHERE table_schema = 'raw'"
                )
            ).all()
        )
    assert types["users.snapshot_date"] == "date"
    assert types["users.id"] == "bigint"
    assert types["users.created_at"] == "timestamp with time zone"
    assert types["tracks.duration"] == "text"
    assert types["listen_history.items"] == "ARRAY"
    assert types["listen_history.user_id"] == "bigint"

    grown = api_server(records=150)
    result = dg.materialize(
        raw_assets, resources=resources_for(grown.base_url, pg_url), partition_key=today
    )
    assert result.success
    with engine.connect() as conn:
        counts = [
            conn.execute(sa.text(f"SELECT count(*) FROM raw.{endpoint}")).scalar_one()
            for endpoint in ("users", "tracks", "listen_history")
        ]
        item_type = conn.execute(
            sa.text("SELECT pg_typeof(items)::text FROM raw.listen_history LIMIT 1")
        ).scalar_one()
    engine.dispose()
    assert counts == [150, 150, 150]
    assert item_type == "bigint[]"
