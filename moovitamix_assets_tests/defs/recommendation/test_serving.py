"""Publishing the recommendations on a real PostgreSQL: today's table swapped in behind the view."""

from datetime import datetime, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from moovitamix_assets.defs.recommendation import registry, serving
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.defs.recommendation.core_data import load_core_frames
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


def test_the_count_audit_allows_fewer_than_k_only_to_who_heard_the_rest(engine: sa.Engine) -> None:
    tracks = pd.DataFrame({"id": [10, 11, 12, 13, 14, 15], "genres": "Rock"})
    users = pd.DataFrame({"id": [1, 2, 3, 4, 5, 6, 7], "favorite_genres": "Rock"})
    heard = [(3, 10), (3, 11), (3, 12), *[(6, t) for t in (10, 11, 12, 13, 14)]]
    interactions = pd.DataFrame(heard, columns=["user_id", "track_id"]).assign(
        play_count=1, weight=1.0, last_position=0
    )
    load_core_frames(engine, users, tracks, interactions, inactive_tracks=(15,))
    lists = {
        1: [10, 11, 12],  # K
        2: [10, 11],  # short, with 3 more active tracks unheard
        3: [13, 14],  # short, but it heard every other active track
        4: [10, 11, 12, 13],  # more than K
        # 5: none, with every active track unheard; 6: none, having heard them all
        7: [10, 11, 12],  # not an active user
    }
    rows = [(u, t, r) for u, ts in lists.items() for r, t in enumerate(ts, start=1)]
    recs = pd.DataFrame(rows, columns=["user_id", "track_id", "rank"]).assign(
        score=0.5, source="als"
    )
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE core.users SET is_active = false WHERE id = 7"))
    registry.ensure_registry_schema(engine)
    with engine.connect() as conn, conn.begin():
        serving.stage(conn, [recs], 3, 1, datetime(2026, 1, 1, tzinfo=timezone.utc))
        offending = serving.audit_recommendations(conn, serving.STAGING, 3)
    assert offending == {
        "exactly_k_per_active_user": 4,  # users 2, 4, 5 and 7
        "none_already_listened": 0,
        "only_active_tracks": 0,
        "no_duplicates": 0,
    }
