"""The recommendation graph on a real PostgreSQL: train, gate, promote, serve, refuse, replace."""

import threading

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from moovitamix_assets.assets.recommendation import keys, registry
from moovitamix_assets.assets.recommendation.assets import recommendation_assets
from moovitamix_assets.assets.recommendation.checks import recommendation_checks
from moovitamix_assets.ml.synthetic import make_synthetic_dataset
from moovitamix_assets.resources.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager

from .core_data import load_core_frames, load_standin_core

K = 10
MIN_LIFT = 0.2  # the gate's default margin over popularity
COLD_START_USERS = (9_000_001, 9_000_002, 9_000_003)


def resources(postgres: PostgresResource) -> dict[str, object]:
    return {
        "postgres": postgres,
        "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
    }


def run(
    postgres: PostgresResource, selection: list[dg.AssetKey] | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*recommendation_assets, *recommendation_checks],
        resources=resources(postgres),
        selection=selection,
        raise_on_error=False,
    )


def gate_evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name]
    assert evaluation.check_name == "promotion_gate"
    return evaluation


def frame(engine: sa.Engine, query: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.text(query)).mappings().all())


def assert_recommendations_serve_everyone(engine: sa.Engine, version: int) -> pd.DataFrame:
    recs = frame(engine, "SELECT * FROM ml.user_recommendations")
    active = set(frame(engine, "SELECT id FROM core.users WHERE is_active")["id"])
    assert set(recs["user_id"]) == active
    assert recs.groupby("user_id").size().eq(K).all()
    assert recs.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, K + 1))).all()
    listened = frame(engine, "SELECT user_id, track_id FROM core.user_track_interactions")
    assert recs.merge(listened, on=["user_id", "track_id"]).empty
    assert set(recs["model_version"]) == {version}
    assert recs["generated_at"].nunique() == 1
    return recs


def add_cold_start_users(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for user_id in COLD_START_USERS:
            conn.execute(
                sa.text(
                    "INSERT INTO core.users (id, favorite_genres, first_seen, last_seen, is_active)"
                    " VALUES (:id, 'Jazz', DATE '2026-11-20', DATE '2026-11-20', true)"
                ),
                {"id": user_id},
            )


def test_on_standin_data_the_model_beats_popularity_and_the_graph_promotes_it(
    postgres_resource: PostgresResource,
) -> None:
    engine = postgres_resource.engine()
    load_standin_core(engine)
    add_cold_start_users(engine)

    result = run(postgres_resource)

    assert result.success
    evaluation = gate_evaluation(result)
    assert evaluation.passed
    assert "no production model to compare with" in evaluation.description
    production = registry.production_entry(engine)
    assert production is not None and production.version == 1
    candidate = production.metric("candidate", "precision_at_k")
    popularity = production.metric("popularity", "precision_at_k")
    assert candidate is not None and popularity is not None
    # The gate's margin, and the quality target (at least twice popularity).
    assert candidate >= (1 + MIN_LIFT) * popularity
    assert candidate >= 2 * popularity
    assert production.snapshot.interactions == int(
        frame(engine, "SELECT count(*) AS n FROM core.user_track_interactions")["n"][0]
    )
    assert str(production.snapshot.snapshot_date) == "2026-11-20"
    assert production.parameters["random_state"] == 42

    recs = assert_recommendations_serve_everyone(engine, version=1)
    cold = recs[recs["user_id"].isin(COLD_START_USERS)]
    assert len(cold) == K * len(COLD_START_USERS) and set(cold["source"]) == {"cold_start"}
    assert (recs["source"] == "als").sum() > 0.9 * len(recs)
    evaluation_row = registry.latest_evaluation(engine, 1)
    assert evaluation_row is not None
    assert evaluation_row.metrics["production"]["precision_at_k"] == pytest.approx(candidate)

    materialized = {
        e.event_specific_data.materialization.asset_key: e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
    }
    metadata = materialized[keys.CANDIDATE_MODEL].metadata
    assert metadata["candidate_precision_at_10"].value == pytest.approx(candidate)
    assert {"popularity_ndcg_at_10", "genre_popularity_coverage", "candidate_map_at_10"} <= set(
        metadata
    )


def test_recommendations_are_replaced_atomically(postgres_resource: PostgresResource) -> None:
    engine = postgres_resource.engine()
    data = make_synthetic_dataset(1_500, 600, 30_000, structured=True, seed=3)
    load_core_frames(engine, data.users, data.tracks, data.interactions)
    assert run(postgres_resource).success
    before = assert_recommendations_serve_everyone(engine, version=1)
    expected_rows = len(before)

    # A reader polling during the rewrite sees the old rows or the new ones, never a mix.
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def poll() -> None:
        with engine.connect() as conn:
            while not stop.is_set():
                row = conn.execute(
                    sa.text(
                        "SELECT count(*), count(DISTINCT generated_at) FROM ml.user_recommendations"
                    )
                ).one()
                conn.rollback()
                seen.append((int(row[0]), int(row[1])))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        result = run(postgres_resource, selection=[keys.USER_RECOMMENDATIONS])
    finally:
        stop.set()
        reader.join()
    assert result.success
    assert seen and set(seen) == {(expected_rows, 1)}
    after = assert_recommendations_serve_everyone(engine, version=1)
    assert after["generated_at"].iloc[0] > before["generated_at"].iloc[0]

    # A write that fails half-way (a duplicate key) leaves the previous rows in place.
    @dg.asset(key=keys.USER_RECOMMENDATIONS, io_manager_key="warehouse_io_manager")
    def broken_recommendations() -> pd.DataFrame:
        return pd.concat([after, after.head(1)], ignore_index=True)

    failed = dg.materialize(
        [broken_recommendations], resources=resources(postgres_resource), raise_on_error=False
    )
    assert not failed.success
    kept = assert_recommendations_serve_everyone(engine, version=1)
    assert kept["generated_at"].iloc[0] == after["generated_at"].iloc[0]


def test_on_random_data_the_gate_refuses_and_production_stays(
    postgres_resource: PostgresResource,
) -> None:
    engine = postgres_resource.engine()
    structured = make_synthetic_dataset(1_500, 600, 30_000, structured=True, seed=3)
    load_core_frames(engine, structured.users, structured.tracks, structured.interactions)
    assert run(postgres_resource).success
    served = frame(engine, "SELECT * FROM ml.user_recommendations")

    noise = make_synthetic_dataset(1_500, 600, 36_000, structured=False, seed=4)
    load_core_frames(engine, noise.users, noise.tracks, noise.interactions)
    result = run(postgres_resource)

    assert not result.success
    evaluation = gate_evaluation(result)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description.startswith("refused:")
    assert evaluation.metadata["reason"].value == evaluation.description
    assert {"observed", "threshold", "candidate_version"} <= set(evaluation.metadata)
    production = registry.production_entry(engine)
    assert production is not None and production.version == 1
    refused = registry.get_entry(engine, 2)
    assert refused is not None and refused.status == "candidate" and not refused.gate_passed
    assert refused.gate_reason == evaluation.description
    assert refused.metrics["production_version"] == 1
    assert refused.snapshot.interactions == len(noise.interactions)
    # production_model and everything downstream of it did not run.
    materialized = {
        e.event_specific_data.materialization.asset_key
        for e in result.get_asset_materialization_events()
    }
    assert keys.PRODUCTION_MODEL not in materialized
    assert keys.USER_RECOMMENDATIONS not in materialized
    pd.testing.assert_frame_equal(frame(engine, "SELECT * FROM ml.user_recommendations"), served)


def test_a_first_model_that_does_not_beat_popularity_is_refused(
    postgres_resource: PostgresResource,
) -> None:
    engine = postgres_resource.engine()
    noise = make_synthetic_dataset(1_500, 600, 36_000, structured=False, seed=4)
    load_core_frames(engine, noise.users, noise.tracks, noise.interactions)
    result = run(postgres_resource)
    assert not result.success and not gate_evaluation(result).passed
    assert registry.production_entry(engine) is None
    assert "does not beat the popularity baseline" in registry.get_entry(engine, 1).gate_reason

    # Before any promotion every user is still served, from genre-aware popularity.
    assert run(postgres_resource, selection=[keys.USER_RECOMMENDATIONS]).success
    recs = assert_recommendations_serve_everyone(engine, version=0)
    assert set(recs["source"]) == {"cold_start"}
