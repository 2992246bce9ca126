"""The model registry on a real PostgreSQL: promote, refuse, roll back (library and command)."""

import subprocess
import sys
import uuid
from datetime import datetime, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from moovitamix_assets import registry_cli
from moovitamix_assets.defs.recommendation import registry
from moovitamix_assets.ml.artifacts import serialize_model
from moovitamix_assets.ml.models import AlsModel, AlsParams, FallbackModel
from moovitamix_assets.warehouse.database import PostgresResource


def tiny_model(seed: int) -> AlsModel:
    rng = np.random.default_rng(seed)
    return AlsModel(
        params=AlsParams(factors=2, random_state=seed),
        user_ids=np.array([1, 2, 3], dtype=np.int64),
        item_ids=np.array([10, 20], dtype=np.int64),
        user_factors=rng.random((3, 2), dtype=np.float32),
        item_factors=rng.random((2, 2), dtype=np.float32),
    )


def register(
    engine: sa.Engine, *, passed: bool = True, interactions: int = 1_000, precision: float = 0.05
) -> int:
    return registry.register_candidate(
        engine,
        serialize_model(tiny_model(interactions)),
        trained_at=datetime(2026, 11, 20, 4, tzinfo=timezone.utc),
        run_id=None,
        **registry.DataSnapshot(interactions, 3, 2, None)._asdict(),
        parameters=AlsParams().as_dict(),
        metrics={
            "candidate": {"precision_at_k": precision},
            "popularity": {"precision_at_k": 0.01},
            "production_version": None,
        },
        gate_passed=passed,
        gate_reason="promoted: test" if passed else "refused: test does not beat the baseline",
        gate_figures={"candidate": precision, "baseline": 0.01},
    )


@pytest.fixture
def engine(postgres_resource: PostgresResource) -> sa.Engine:
    return postgres_resource.engine()


def entry(engine: sa.Engine, version: int) -> sa.Row:
    return {e.version: e for e in registry.list_entries(engine)}[version]


def log(engine: sa.Engine) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT version, action, detail FROM ml.model_registry_log ORDER BY id")
        ).all()
    return [tuple(row) for row in rows]


def statuses(engine: sa.Engine) -> dict[int, str]:
    return {e.version: e.status for e in registry.list_entries(engine)}


def test_promotion_retires_the_previous_production_model(engine: sa.Engine) -> None:
    assert registry.production_entry(engine) is None
    first = register(engine)
    assert registry.promote(engine, first) is None
    second = register(engine, interactions=2_000)
    assert (first, second) == (1, 2)
    assert registry.promote(engine, second) == first
    assert statuses(engine) == {1: "retired", 2: "production"}
    # Promoting the production model again is a no-op.
    assert registry.promote(engine, second) is None
    production = registry.production_entry(engine)
    assert production is not None and production.data_interactions == 2_000
    assert [action for _, action, _ in log(engine)] == [
        "registered",
        "promoted",
        "registered",
        "promoted",
    ]


def test_a_refused_candidate_is_never_promoted(engine: sa.Engine) -> None:
    registry.promote(engine, register(engine))
    refused = register(engine, passed=False)
    with pytest.raises(registry.RegistryError, match="gate refused it"):
        registry.promote(engine, refused)
    assert statuses(engine) == {1: "production", 2: "candidate"}
    refused_entry = entry(engine, refused)
    assert not refused_entry.gate_passed
    assert refused_entry.gate_reason.startswith("refused")
    assert (2, "refused", refused_entry.gate_reason) in log(engine)


def test_the_database_refuses_two_production_models(engine: sa.Engine) -> None:
    registry.promote(engine, register(engine))
    register(engine)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ml.model_registry SET status = 'production' WHERE version = 2")
        )


def test_artifacts_round_trip_and_tampering_is_detected(engine: sa.Engine) -> None:
    version = register(engine, interactions=7)
    model = registry.load_model(engine, version)
    np.testing.assert_array_equal(model.user_factors, tiny_model(7).user_factors)
    with engine.begin() as conn:
        # One byte of the stored model changed behind the registry's back.
        conn.execute(sa.text("SELECT lo_put(artifact, 100, '\\x00'::bytea) FROM ml.model_registry"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        registry.load_model(engine, version)


def test_rollback_command_restores_a_previous_version(
    engine: sa.Engine, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.promote(engine, register(engine))
    registry.promote(engine, register(engine, interactions=2_000))
    refused = register(engine, passed=False)

    assert registry_cli.main(["--database-url", pg_url, "rollback", "--to-version", "1"]) == 0
    assert "version 1 is the production model again (was version 2)" in capsys.readouterr().out
    assert statuses(engine) == {1: "production", 2: "retired", 3: "candidate"}
    assert log(engine)[-1][:2] == (1, "rollback")

    # Neither a never-promoted candidate nor the current model is a rollback target.
    assert registry_cli.main(["--database-url", pg_url, "rollback", "--to-version", "3"]) == 1
    assert "never in production" in capsys.readouterr().err
    assert registry_cli.main(["--database-url", pg_url, "rollback", "--to-version", "1"]) == 1
    assert registry_cli.main(["--database-url", pg_url, "rollback", "--to-version", "9"]) == 1
    assert statuses(engine) == {1: "production", 2: "retired", refused: "candidate"}


def test_the_documented_command_runs_as_a_module(engine: sa.Engine, pg_url: str) -> None:
    registry.promote(engine, register(engine))
    registry.promote(engine, register(engine))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "moovitamix_assets.registry_cli",
            "--database-url",
            pg_url,
            "rollback",
            "--to-version",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert statuses(engine) == {1: "production", 2: "retired"}
    listing = subprocess.run(
        [sys.executable, "-m", "moovitamix_assets.registry_cli", "--database-url", pg_url, "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "v1    production" in listing.stdout and "v2    retired" in listing.stdout


NOW = datetime(2026, 12, 6, 4, tzinfo=timezone.utc)


def test_the_fallback_is_a_registered_model_that_serves_until_a_model_beats_it(
    engine: sa.Engine, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    serving = registry.serving_entry(engine, at=NOW, run_id="run-1")
    assert (serving.version, serving.status, serving.model_type) == (
        1,
        "production",
        "genre_popularity",
    )
    assert isinstance(registry.load_model(engine, 1), FallbackModel)
    assert [action for _, action, _ in log(engine)] == ["registered", "promoted"]
    # Asking again registers nothing more.
    assert registry.serving_entry(engine, at=NOW).version == 1

    trained = register(engine)
    registry.promote(engine, trained)
    assert statuses(engine) == {1: "retired", 2: "production"}
    assert registry.serving_entry(engine, at=NOW).version == 2

    # The fallback never "served" through a promotion of its own, yet it is a rollback target.
    assert registry_cli.main(["--database-url", pg_url, "rollback", "--to-version", "1"]) == 0
    assert registry.serving_entry(engine, at=NOW).model_type == "genre_popularity"
    capsys.readouterr()
    assert registry_cli.main(["--database-url", pg_url, "list"]) == 0
    listing = capsys.readouterr().out
    assert "v1    production genre_popularity" in listing
    assert "v2    retired    als" in listing


def test_an_older_registry_gets_its_fallback_beside_the_serving_model(engine: sa.Engine) -> None:
    trained = register(engine)
    registry.promote(engine, trained)
    serving = registry.serving_entry(engine, at=NOW)
    assert serving.version == trained
    fallback = entry(engine, 2)
    assert (fallback.model_type, fallback.status) == ("genre_popularity", "retired")
    assert registry.promote(engine, 2, rollback=True) == trained


def test_refused_candidates_are_listed_as_refused(engine: sa.Engine) -> None:
    registry.serving_entry(engine, at=NOW)
    refused = register(engine, passed=False)
    refused_entry = entry(engine, refused)
    assert refused_entry.state == "refused" and refused_entry.status == "candidate"
    assert registry.latest_trained_entry(engine).version == refused
    assert registry.production_entry(engine).name == "genre_popularity v1"


def test_a_registry_from_before_the_fallback_gets_its_model_type_column(engine: sa.Engine) -> None:
    trained = register(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE ml.model_registry DROP COLUMN model_type"))
    registry.ensure_registry_schema(engine)
    assert entry(engine, trained).model_type == "als"
    registry.ensure_registry_schema(engine)  # and again: nothing to do


def test_a_published_table_becomes_the_served_table_behind_the_view(engine: sa.Engine) -> None:
    """A database published by the release before the view: its rows and readers carry over."""
    reader = f"mvx_reader_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS ml"))
        conn.execute(
            sa.text(
                "CREATE TABLE ml.user_recommendations (user_id bigint NOT NULL, track_id bigint "
                "NOT NULL, score double precision NOT NULL, rank bigint NOT NULL, source text "
                "NOT NULL, model_version bigint NOT NULL, generated_at timestamptz NOT NULL, "
                "PRIMARY KEY (user_id, rank))"
            )
        )
        conn.execute(
            sa.text("INSERT INTO ml.user_recommendations VALUES (1, 10, 0.5, 1, 'als', 3, now())")
        )
        conn.execute(sa.text(f"CREATE ROLE {reader}"))
        conn.execute(sa.text(f"GRANT SELECT ON ml.user_recommendations TO {reader}"))
    try:
        registry.ensure_registry_schema(engine)
        registry.ensure_registry_schema(engine)  # idempotent once migrated
        with engine.connect() as conn:
            kinds = dict(
                conn.execute(
                    sa.text(
                        "SELECT relname, relkind FROM pg_class WHERE relname LIKE "
                        "'user_recommendations%' AND relnamespace = 'ml'::regnamespace"
                    )
                ).all()
            )
            rows = conn.execute(sa.text("SELECT user_id, track_id FROM ml.user_recommendations"))
            readable = conn.execute(
                sa.text("SELECT has_table_privilege(:r, 'ml.user_recommendations', 'SELECT')"),
                {"r": reader},
            ).scalar_one()
        assert kinds == {
            "user_recommendations": "v",
            "user_recommendations_served": "r",
            "user_recommendations_served_pkey": "i",
        }
        assert rows.all() == [(1, 10)]
        assert readable
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {reader}"))
            conn.execute(sa.text(f"DROP ROLE {reader}"))
