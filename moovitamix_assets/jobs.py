"""Jobs: the daily refresh of the whole dated graph."""

import dagster as dg

# Everything that is rebuilt every day for that day's partition: raw snapshots, the core merge and
# (once they exist) the daily recommendation assets. Weekly training has its own trigger.
daily_refresh_job = dg.define_asset_job(
    name="daily_refresh",
    selection=dg.AssetSelection.all().materializable() - dg.AssetSelection.groups("recommendation"),
    description="Snapshot the MooVitamix API and rebuild the core layer for one day.",
)
