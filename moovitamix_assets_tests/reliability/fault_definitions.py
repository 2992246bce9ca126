"""The raw and core assets alone, for the fault suite's ``dagster asset materialize`` processes.

The platform's ``definitions.py`` also carries checks, sensors and the recommendation layer; a
run killed mid-load only needs the daily load, configured from the same environment variables,
with backoffs short enough for a test.
"""

import dagster as dg

from moovitamix_assets.defs.core.assets import core_assets
from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.assets import raw_assets
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager

_postgres = PostgresResource(database_url=dg.EnvVar("MOOVITAMIX_DATABASE_URL"))

defs = dg.Definitions(
    assets=[*raw_assets, *core_assets],
    resources={
        "moovitamix_api": MoovitamixApiResource(
            base_url=dg.EnvVar("MOOVITAMIX_API_URL"), backoff_factor=0.01, backoff_jitter=0.0
        ),
        "postgres": _postgres,
        "warehouse_io_manager": PostgresPandasIOManager(database=_postgres),
    },
    executor=dg.in_process_executor,
)
