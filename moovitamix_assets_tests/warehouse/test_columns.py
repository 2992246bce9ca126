"""columns.yaml against what it describes: the assets' definitions, the docs and the database."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from moovitamix_assets.alerts import AlertNotifier
from moovitamix_assets.definitions import defs
from moovitamix_assets.defs.recommendation.assets import recommendation_assets
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse import columns
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager
from moovitamix_assets_tests.checks.pipeline import run_day

REPO = Path(__file__).resolve().parents[2]
DATA_MODEL = REPO / "docs" / "data-model.md"
GRAPH = defs.resolve_asset_graph()
ASSET_KEYS = sorted(GRAPH.get_all_asset_keys(), key=lambda k: k.to_user_string())


def test_every_column_of_every_table_has_a_type_and_a_description() -> None:
    for table in columns.tables().values():
        assert table.description.strip(), table.name
        assert table.columns, table.name
        for column in table.columns:
            assert column.type.strip() and column.description.strip(), (table.name, column.name)


@pytest.mark.parametrize("key", ASSET_KEYS, ids=lambda k: k.to_user_string())
def test_every_asset_declares_its_table_and_columns_with_descriptions(key: dg.AssetKey) -> None:
    metadata = GRAPH.get(key).metadata
    table = columns.for_asset(key)
    assert metadata[columns.TABLE_NAME_KEY].value == table.name
    declared = metadata[columns.COLUMN_SCHEMA_KEY].value.columns
    assert [(c.name, c.type, c.description) for c in declared] == [
        (c.name, c.type, c.description) for c in table.columns
    ]
    assert all(c.description for c in declared)


def test_every_upstream_column_exists_and_is_upstream_of_the_table() -> None:
    tables_by_asset = {key: columns.for_asset(key) for key in ASSET_KEYS}
    for table in columns.tables().values():
        parents = {dep for key in table.assets for dep in GRAPH.get(key).parent_keys}
        for column in table.columns:
            for key, name in column.upstream:
                assert key in parents, (table.name, column.name, key.to_user_string())
                upstream_columns = tables_by_asset[key].pg_types()
                assert name in upstream_columns, (table.name, column.name, key, name)
    # Lineage runs from raw to core to ml: every core and ml table asset has some.
    for key in ASSET_KEYS:
        if key.path[0] != "raw":
            lineage = tables_by_asset[key].lineage(GRAPH.get(key).parent_keys)
            assert lineage.deps_by_column, key.to_user_string()


def test_the_data_model_doc_shows_every_table_as_the_yaml_describes_it() -> None:
    text = DATA_MODEL.read_text()
    assert sorted(re.findall(r"<!-- columns: (\S+) -->", text)) == sorted(columns.tables())
    assert columns.render_docs(text) == text, (
        "docs/data-model.md is stale: run "
        "`python -m moovitamix_assets.warehouse.columns docs/data-model.md`"
    )


def test_a_stale_column_table_is_regenerated() -> None:
    stale = "intro\n<!-- columns: core.users -->\n| id | old |\n<!-- /columns -->\nrest\n"
    rendered = columns.render_docs(stale)
    assert "| old |" not in rendered and rendered.startswith("intro\n")
    assert rendered.endswith("<!-- /columns -->\nrest\n")
    users = columns.table("core.users").columns
    assert "| column | type | meaning |\n|---|---|---|\n" in rendered
    assert all(f"| {c.name} | {c.type} | {c.description} |\n" in rendered for c in users)


def _stored_relations(engine: sa.Engine) -> dict[str, dict[str, str]]:
    query = sa.text(
        "SELECT n.nspname || '.' || c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname IN ('raw', 'core', 'ml') AND c.relkind IN ('r', 'v', 'p') "
        "ORDER BY 1, a.attnum"
    )
    relations: dict[str, dict[str, str]] = {}
    with engine.connect() as conn:
        for relation, column, pg_type in conn.execute(query):
            relations.setdefault(relation, {})[column] = pg_type
    return relations


def test_the_yaml_describes_exactly_the_tables_a_day_writes(api_server, pg_url: str) -> None:
    postgres = PostgresResource(database_url=pg_url)
    day = run_day(api_server(records=200).base_url, postgres, utc_today())
    assert day.success
    models = dg.materialize(
        recommendation_assets,
        resources={
            "postgres": postgres,
            "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
            "alert_notifier": AlertNotifier(),
        },
    )
    assert models.success

    stored = _stored_relations(postgres.engine())
    assert {name: table.pg_types() for name, table in columns.tables().items()} == stored

    events = [*day.get_asset_materialization_events(), *models.get_asset_materialization_events()]
    written = {e.asset_key: e.materialization.metadata for e in events}
    assert set(written) == set(ASSET_KEYS)
    for key, metadata in written.items():
        assert metadata["dagster/row_count"].value >= 1, key
        # The declared schema, with its descriptions, is the one the UI shows.
        assert columns.COLUMN_SCHEMA_KEY not in metadata, key
        if key.path[0] == "raw":
            continue
        lineage = metadata[columns.COLUMN_LINEAGE_KEY].value
        parents = GRAPH.get(key).parent_keys
        deps = [dep for found in lineage.deps_by_column.values() for dep in found]
        assert deps and {dep.asset_key for dep in deps} <= parents, key
    users = written[dg.AssetKey(["core", "users"])][columns.COLUMN_LINEAGE_KEY].value
    assert users.deps_by_column["email"] == [
        dg.TableColumnDep(dg.AssetKey(["raw", "users"]), "email")
    ]
