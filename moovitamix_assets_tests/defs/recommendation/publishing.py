"""Recommendations published in tests as the daily run publishes them once its audits passed."""

from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa

from moovitamix_assets.defs.recommendation import registry, serving


def recommendations(version: int = 1) -> pd.DataFrame:
    """Two users' lists, as the model of ``version`` would write them."""
    return pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "track_id": [10, 11, 10],
            "score": [0.9, 0.5, 0.7],
            "rank": [1, 2, 1],
            "source": ["als", "als", "als"],
            "model_version": [version] * 3,
            "generated_at": [datetime(2026, 1, version, tzinfo=timezone.utc)] * 3,
        }
    )


def publish(engine: sa.Engine, recs: pd.DataFrame) -> None:
    """Stage ``recs`` and swap them in behind ``ml.user_recommendations``."""
    registry.ensure_registry_schema(engine)
    with engine.begin() as conn:
        serving.stage(conn, [recs], 2, int(recs["model_version"][0]), recs["generated_at"][0])
        serving.publish_staging(conn)
