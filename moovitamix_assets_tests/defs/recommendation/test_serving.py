"""Publishing the recommendations on a real PostgreSQL: today's table swapped in behind the view."""

import pytest
import sqlalchemy as sa

from moovitamix_assets.defs.recommendation import serving
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.defs.recommendation.publishing import publish, recommendations


@pytest.fixture
def engine(postgres_resource: PostgresResource) -> sa.Engine:
    return postgres_resource.engine()


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
