"""Jobs: the daily refresh of the whole dated graph, and the retraining of the model."""

import dagster as dg

from moovitamix_assets.assets.recommendation.keys import DAILY_KEYS, RETRAINING_KEYS

# Everything that is rebuilt every day for that day's partition: raw snapshots, the core merge and
# then the daily recommendation assets (holdout, production evaluation, user_recommendations), so
# recommendations are refreshed right after core in the same run. Training has its own job.
daily_refresh_job = dg.define_asset_job(
    name="daily_refresh",
    selection=(
        dg.AssetSelection.all().materializable() - dg.AssetSelection.groups("recommendation")
    )
    | dg.AssetSelection.assets(*DAILY_KEYS),
    description=(
        "Snapshot the MooVitamix API, rebuild the core layer for one day, then evaluate the "
        "production model and refresh every user's recommendations."
    ),
)

# Weekly (schedule) or on demand (retraining sensor): split, train, gate, promote, serve.
retraining_job = dg.define_asset_job(
    name="model_retraining",
    selection=dg.AssetSelection.assets(*RETRAINING_KEYS),
    description=(
        "Train a candidate model, promote it only if its blocking gate passes, then refresh the "
        "recommendations from the production model."
    ),
)
