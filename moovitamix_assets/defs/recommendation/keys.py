"""Asset keys of the recommendation layer, importable by jobs and sensors without the assets."""

from typing import Final

import dagster as dg

from moovitamix_assets.constants import ML_SCHEMA

EVALUATION_HOLDOUT: Final = dg.AssetKey([ML_SCHEMA, "evaluation_holdout"])
CANDIDATE_MODEL: Final = dg.AssetKey([ML_SCHEMA, "candidate_model"])
PRODUCTION_MODEL: Final = dg.AssetKey([ML_SCHEMA, "production_model"])
PRODUCTION_MODEL_EVALUATION: Final = dg.AssetKey([ML_SCHEMA, "production_model_evaluation"])
USER_RECOMMENDATIONS: Final = dg.AssetKey([ML_SCHEMA, "user_recommendations"])

# Rebuilt every day by the daily job, right after the core layer.
DAILY_KEYS: Final = (EVALUATION_HOLDOUT, PRODUCTION_MODEL_EVALUATION, USER_RECOMMENDATIONS)
