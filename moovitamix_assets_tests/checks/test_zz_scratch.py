import dagster as dg
import sqlalchemy as sa
from moovitamix_assets.assets.core.assets import core_assets
from moovitamix_assets.assets.raw.api_snapshots import raw_assets
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.resources.api import MoovitamixApiResource
from moovitamix_assets.resources.io_manager import PostgresPandasIOManager


def test_scratch(api_server, postgres_resource):
    server = api_server(records=1000)
    res = {
        "moovitamix_api": MoovitamixApiResource(base_url=server.base_url),
        "postgres": postgres_resource,
        "warehouse_io_manager": PostgresPandasIOManager(database=postgres_resource),
    }
    import time
    t = time.time()
    r = dg.materialize([*raw_assets, *core_assets], partition_key=utc_today().isoformat(), resources=res)
    print("secs", time.time() - t)
    for m in r.get_asset_materialization_events():
        md = m.step_materialization_data.materialization.metadata
        print(m.asset_key.to_user_string(), {k: getattr(v, "value", v) for k, v in md.items() if k not in ("preview", "dagster/column_schema")})
    e = postgres_resource.engine()
    with e.connect() as c:
        print(c.execute(sa.text("select count(*) filter (where not (user_known and track_known)), count(*) from core.listen_events where is_active")).all())
        print(c.execute(sa.text("select count(*) filter (where updated_at < created_at), count(*) filter (where email !~ '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$'), count(*) from core.users")).all())
        print(c.execute(sa.text("select table_schema, table_name from information_schema.tables where table_schema in ('raw','core')")).all())
