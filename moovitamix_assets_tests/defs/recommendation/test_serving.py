"""Publishing the recommendations on a real PostgreSQL: today's table swapped in behind the view."""

from datetime import datetime, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from moovitamix_assets.defs.recommendation import registry, serving
from moovitamix_assets.warehouse.database import PostgresResource


@pytest.fixture
def engine(postgres_resource: PostgresResource) -> sa.Engine:
    return postgres_resource.engine()


def recommendations(version: int) -> pd.DataFrame:
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
    """Stage and publish as the daily run does once the audits passed."""
    registry.ensure_registry_schema(engine)
    with engine.begin() as conn:
        serving.stage(conn, [recs])
        serving.publish_staging(conn)


def served_versions(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        query = "SELECT DISTINCT model_version FROM ml.user_recommendations"
        return sorted(conn.execute(sa.text(query)).scalars())


def test_each_publication_replaces_the_served_rows_whole(engine: sa.Engine) -> None:
    publish(engine, recommendations(1))
    publish(engine, recommendations(2).head(2))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT user_id, rank, model_version FROM ml.user_recommendations")
        )
        tables = conn.execute(
            sa.text("SELECT to_regclass('ml.user_recommendations_staging') IS NULL")
        ).scalar_one()
    assert sorted(rows.all()) == [(1, 1, 2), (1, 2, 2)]
    assert tables, "the staging table became the served one"


def test_a_reader_that_does_not_finish_fails_the_publication_not_serving(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "SWAP_LOCK_TIMEOUT_MS", 300)
    publish(engine, recommendations(1))
    with engine.connect() as reader, reader.begin():
        reader.execute(sa.text("SELECT count(*) FROM ml.user_recommendations")).scalar_one()
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            publish(engine, recommendations(2))
    assert served_versions(engine) == [1]  # yesterday's rows still serve
    publish(engine, recommendations(2))  # once the reader is done, the next attempt goes through
    assert served_versions(engine) == [2]
