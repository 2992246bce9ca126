"""Jobs: the daily refresh of the whole dated graph, and the retraining of the model."""

import dagster as dg

from moovitamix_assets.defs.recommendation.keys import DAILY_KEYS, RETRAINING_KEYS

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

RETRAINING_JOB_NAME = "model_retraining"
# The instance runs at most one run with this tag at a time (tag_concurrency_limits in
# deploy/dagster.yaml and in the local instance of the CLI): two trainings never collide.
EXCLUSIVE_TAG = "moovitamix/exclusive"

# Weekly (schedule) or on demand (retraining sensor): split, train, gate, promote, serve.
retraining_job = dg.define_asset_job(
    name=RETRAINING_JOB_NAME,
    selection=dg.AssetSelection.assets(*RETRAINING_KEYS),
    tags={EXCLUSIVE_TAG: RETRAINING_JOB_NAME},
    description=(
        "Train a candidate model and promote it only if it beats what serves beyond the noise; "
        "then evaluate what serves and refresh every user's recommendations."
    ),
)
