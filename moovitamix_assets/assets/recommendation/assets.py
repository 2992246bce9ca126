"""Recommendation layer assets: holdout, candidate training, gated promotion, daily serving.

Thin wrappers: the data reads are in ``data.py``, the steps in ``pipeline.py`` (over the pure
``moovitamix_assets.ml`` package) and the registry SQL in ``registry.py``.
"""

import time
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from moovitamix_assets.assets.recommendation import keys, pipeline, registry
from moovitamix_assets.assets.recommendation.data import read_model_inputs
from moovitamix_assets.constants import ML_SCHEMA, RECOMMENDATION_GROUP
from moovitamix_assets.defs.core.assets import CORE_INTERACTIONS, CORE_TRACKS, CORE_USERS
from moovitamix_assets.freshness import DAILY_FRESHNESS, WEEKLY_FRESHNESS
from moovitamix_assets.ml.artifacts import serialize_model
from moovitamix_assets.ml.evaluation import DEFAULT_K, METRIC_NAMES, Metrics
from moovitamix_assets.ml.gating import decide_promotion
from moovitamix_assets.ml.models import (
    ALPHA_DESCRIPTION,
    FACTORS_DESCRIPTION,
    ITERATIONS_DESCRIPTION,
    RANDOM_STATE_DESCRIPTION,
    REGULARIZATION_DESCRIPTION,
    AlsParams,
)
from moovitamix_assets.ml.split import time_based_split
from moovitamix_assets.resources.database import PostgresResource

_DEFAULTS = AlsParams()
_COMMON: dict[str, Any] = {"group_name": RECOMMENDATION_GROUP}
_TABLE = "dagster/table_name"


class HoldoutConfig(dg.Config):
    """How much recent listening is held out for evaluation."""

    holdout_per_user: int = Field(
        default=1, ge=1, description="Most recent listens of each user held out of training."
    )


class ScoringConfig(dg.Config):
    """How much of the catalogue the model ranks."""

    candidate_pool: int = Field(
        default=pipeline.DEFAULT_CANDIDATE_POOL,
        ge=1,
        description="Most-listened tracks the model ranks for each user (serving and evaluation "
        "stay linear in users; the long tail has too little listening to rank anyway).",
    )


class EvaluatedScoringConfig(ScoringConfig):
    """How much of the catalogue the model ranks, and for how many held-out users."""

    evaluation_users: int = Field(
        default=pipeline.DEFAULT_EVALUATION_USERS,
        ge=1,
        description="Held-out users scored by the evaluation (a seeded sample beyond that).",
    )


class CandidateModelConfig(EvaluatedScoringConfig):
    """Hyper-parameters of the ALS candidate and the thresholds of its promotion gate."""

    factors: int = Field(default=_DEFAULTS.factors, ge=1, description=FACTORS_DESCRIPTION)
    regularization: float = Field(
        default=_DEFAULTS.regularization, ge=0, description=REGULARIZATION_DESCRIPTION
    )
    alpha: float = Field(default=_DEFAULTS.alpha, gt=0, description=ALPHA_DESCRIPTION)
    iterations: int = Field(default=_DEFAULTS.iterations, ge=1, description=ITERATIONS_DESCRIPTION)
    random_state: int = Field(default=_DEFAULTS.random_state, description=RANDOM_STATE_DESCRIPTION)
    k: int = Field(default=DEFAULT_K, ge=1, description="Cut-off of the evaluation metrics (@k).")
    gate_metric: str = Field(
        default="precision_at_k",
        description=f"Metric the promotion gate compares, one of {', '.join(METRIC_NAMES)}.",
    )
    min_lift_over_popularity: float = Field(
        default=0.2,
        ge=0,
        description="Relative margin by which the candidate must beat the popularity baseline "
        "(0.2 = +20 %).",
    )
    max_regression_vs_production: float = Field(
        default=0.05,
        ge=0,
        description="Tolerated relative drop against the production model on the same "
        "held-out data (0.05 = -5 %).",
    )

    def als_params(self) -> AlsParams:
        return AlsParams(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.random_state,
        )


class EvaluationConfig(EvaluatedScoringConfig):
    """Cut-off and size of the daily evaluation."""

    k: int = Field(default=DEFAULT_K, ge=1, description="Cut-off of the evaluation metrics (@k).")


class RecommendationsConfig(ScoringConfig):
    """How many recommendations each user gets."""

    k: int = Field(default=DEFAULT_K, ge=1, description="Recommendations per user (top-K).")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def metrics_metadata(metrics: dict[str, Metrics], k: int) -> dict[str, Any]:
    """Numeric metadata ``<model>_<metric>`` (plotted over time in the UI) for every model."""
    metadata: dict[str, Any] = {}
    for model, values in metrics.items():
        for name in METRIC_NAMES:
            label = name.replace("_at_k", f"_at_{k}")
            metadata[f"{model}_{label}"] = dg.MetadataValue.float(float(getattr(values, name)))
        metadata[f"{model}_users_evaluated"] = dg.MetadataValue.int(values.n_users_evaluated)
    return metadata


def _snapshot_metadata(snapshot: registry.DataSnapshot) -> dict[str, Any]:
    return {
        "data_interactions": dg.MetadataValue.int(snapshot.interactions),
        "data_users": dg.MetadataValue.int(snapshot.users),
        "data_tracks": dg.MetadataValue.int(snapshot.tracks),
        "data_snapshot_date": dg.MetadataValue.text(
            snapshot.snapshot_date.isoformat() if snapshot.snapshot_date else "none"
        ),
    }


@dg.asset(
    key=keys.EVALUATION_HOLDOUT,
    deps=[CORE_INTERACTIONS],
    io_manager_key="warehouse_io_manager",
    kinds={"python", "postgres"},
    freshness_policy=DAILY_FRESHNESS,
    **_COMMON,
)
def evaluation_holdout(
    context: dg.AssetExecutionContext, config: HoldoutConfig, postgres: PostgresResource
) -> dg.Output[pd.DataFrame]:
    """Each user's most recent listen, held out of training so every model is judged honestly."""
    started = time.perf_counter()
    inputs = read_model_inputs(postgres.engine(), with_users_and_tracks=False)
    split = time_based_split(inputs.interactions, holdout_per_user=config.holdout_per_user)
    holdout = pipeline.holdout_frame(split.test)
    context.log.info(
        "held out %d of %d interactions (%d users)",
        split.n_test,
        len(inputs.interactions),
        split.n_users_held_out,
    )
    return dg.Output(
        holdout,
        metadata={
            **{name: dg.MetadataValue.int(value) for name, value in split.as_dict().items()},
            "data_interactions": dg.MetadataValue.int(inputs.snapshot.interactions),
            "data_snapshot_date": _snapshot_metadata(inputs.snapshot)["data_snapshot_date"],
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        },
    )


@dg.asset(
    key=keys.CANDIDATE_MODEL,
    deps=[CORE_INTERACTIONS, CORE_USERS, CORE_TRACKS],
    ins={"holdout": dg.AssetIn(key=keys.EVALUATION_HOLDOUT)},
    kinds={"python", "postgres"},
    freshness_policy=WEEKLY_FRESHNESS,
    metadata={_TABLE: f"{ML_SCHEMA}.{registry.REGISTRY_TABLE}"},
    **_COMMON,
)
def candidate_model(
    context: dg.AssetExecutionContext,
    config: CandidateModelConfig,
    postgres: PostgresResource,
    holdout: pd.DataFrame,
) -> dg.MaterializeResult:
    """A newly trained ALS candidate, scored with the baselines and production, then registered."""
    engine = postgres.engine()
    started = time.perf_counter()
    inputs = read_model_inputs(engine)
    train = pipeline.training_half(inputs.interactions, holdout)
    if len(train) == 0:
        raise dg.Failure("core.user_track_interactions is empty: nothing to train on")
    production = registry.production_entry(engine)
    production_model = registry.load_model(engine, production.version) if production else None
    read_seconds = time.perf_counter() - started

    params = config.als_params()
    result = pipeline.train_and_evaluate(
        train,
        holdout,
        inputs.users,
        inputs.tracks,
        params,
        config.k,
        production_model,
        candidate_pool_size=config.candidate_pool,
        evaluation_users=config.evaluation_users,
    )
    decision = decide_promotion(
        result.metrics[pipeline.CANDIDATE],
        result.metrics[pipeline.POPULARITY],
        result.metrics.get(pipeline.PRODUCTION),
        min_lift_over_baseline=config.min_lift_over_popularity,
        max_regression=config.max_regression_vs_production,
        metric=config.gate_metric,
    )
    artifact = serialize_model(result.model)
    version = registry.register_candidate(
        engine,
        artifact,
        trained_at=_now(),
        run_id=context.run.run_id,
        snapshot=inputs.snapshot,
        parameters={**params.as_dict(), "k": config.k, "n_train": len(train)},
        metrics=result.metrics_json(production.version if production else None),
        gate_passed=decision.promote,
        gate_reason=decision.reason,
        gate_figures={
            **decision.figures,
            "min_lift_over_popularity": config.min_lift_over_popularity,
            "max_regression_vs_production": config.max_regression_vs_production,
        },
    )
    context.log.info("registered candidate version %d: %s", version, decision.reason)
    return dg.MaterializeResult(
        metadata={
            "model_version": dg.MetadataValue.int(version),
            "production_version": dg.MetadataValue.int(production.version if production else 0),
            "gate_passed": dg.MetadataValue.bool(decision.promote),
            "gate_reason": dg.MetadataValue.text(decision.reason),
            "parameters": dg.MetadataValue.json(params.as_dict()),
            "n_train": dg.MetadataValue.int(len(train)),
            "n_test": dg.MetadataValue.int(len(holdout)),
            **_snapshot_metadata(inputs.snapshot),
            **metrics_metadata(result.metrics, config.k),
            "artifact_sha256": dg.MetadataValue.text(artifact.sha256),
            "artifact_bytes": dg.MetadataValue.int(artifact.size_bytes),
            "read_seconds": dg.MetadataValue.float(round(read_seconds, 3)),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
    )


@dg.asset(
    key=keys.PRODUCTION_MODEL,
    deps=[keys.CANDIDATE_MODEL],
    kinds={"postgres"},
    freshness_policy=WEEKLY_FRESHNESS,
    metadata={_TABLE: f"{ML_SCHEMA}.{registry.REGISTRY_TABLE}"},
    **_COMMON,
)
def production_model(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """The model serving recommendations: the run's candidate, promoted once its gate passed."""
    engine = postgres.engine()
    candidate = registry.entry_for_run(engine, context.run.run_id) or registry.latest_entry(engine)
    if candidate is None:
        raise dg.Failure("no candidate model is registered: materialize ml/candidate_model first")
    try:
        previous = registry.promote(engine, candidate.version)
    except registry.RegistryError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info("version %d is the production model (was %s)", candidate.version, previous)
    return dg.MaterializeResult(
        metadata={
            "model_version": dg.MetadataValue.int(candidate.version),
            "previous_version": dg.MetadataValue.int(previous or 0),
            "gate_reason": dg.MetadataValue.text(candidate.gate_reason),
            "trained_at": dg.MetadataValue.text(candidate.trained_at.isoformat()),
            **_snapshot_metadata(candidate.snapshot),
        }
    )


@dg.asset(
    key=keys.PRODUCTION_MODEL_EVALUATION,
    deps=[CORE_INTERACTIONS, CORE_TRACKS, keys.PRODUCTION_MODEL],
    ins={"holdout": dg.AssetIn(key=keys.EVALUATION_HOLDOUT)},
    kinds={"python", "postgres"},
    freshness_policy=DAILY_FRESHNESS,
    metadata={_TABLE: f"{ML_SCHEMA}.{registry.EVALUATIONS_TABLE}"},
    **_COMMON,
)
def production_model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    postgres: PostgresResource,
    holdout: pd.DataFrame,
) -> dg.MaterializeResult:
    """Today's precision, recall, NDCG and coverage of the production model, next to popularity."""
    engine = postgres.engine()
    started = time.perf_counter()
    production = registry.production_entry(engine)
    if production is None:
        context.log.info("no production model yet: nothing to evaluate")
        return dg.MaterializeResult(metadata={"model_version": dg.MetadataValue.int(0)})
    inputs = read_model_inputs(engine)
    train = pipeline.training_half(inputs.interactions, holdout)
    model = registry.load_model(engine, production.version)
    metrics = pipeline.evaluate_model(
        model,
        train,
        holdout,
        inputs.tracks,
        config.k,
        candidate_pool_size=config.candidate_pool,
        evaluation_users=config.evaluation_users,
    )
    registry.record_evaluation(
        engine,
        production.version,
        evaluated_at=_now(),
        run_id=context.run.run_id,
        snapshot=inputs.snapshot,
        metrics={name: m.as_dict() for name, m in metrics.items()},
    )
    return dg.MaterializeResult(
        metadata={
            "model_version": dg.MetadataValue.int(production.version),
            **_snapshot_metadata(inputs.snapshot),
            **metrics_metadata(metrics, config.k),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
    )


@dg.asset(
    key=keys.USER_RECOMMENDATIONS,
    deps=[CORE_USERS, CORE_TRACKS, CORE_INTERACTIONS, keys.PRODUCTION_MODEL],
    io_manager_key="warehouse_io_manager",
    kinds={"python", "postgres"},
    freshness_policy=DAILY_FRESHNESS,
    **_COMMON,
)
def user_recommendations(
    context: dg.AssetExecutionContext, config: RecommendationsConfig, postgres: PostgresResource
) -> dg.Output[pd.DataFrame]:
    """Top-K unheard tracks per active user from the production model; cold starts by genre."""
    engine = postgres.engine()
    started = time.perf_counter()
    # The table (and its primary key) must exist before the IO manager replaces its rows.
    registry.ensure_registry_schema(engine)
    inputs = read_model_inputs(engine)
    production = registry.production_entry(engine)
    model = registry.load_model(engine, production.version) if production else None
    version = production.version if production else pipeline.NO_MODEL_VERSION
    if model is None:
        context.log.warning("no production model yet: every user gets genre-aware popularity")
    recs = pipeline.build_recommendations(
        model,
        version,
        inputs.users,
        inputs.tracks,
        inputs.interactions,
        config.k,
        _now(),
        candidate_pool_size=config.candidate_pool,
    )
    per_user = recs.groupby("user_id").size()
    rows_by_source = recs["source"].value_counts()
    return dg.Output(
        recs,
        metadata={
            "model_version": dg.MetadataValue.int(version),
            "k": dg.MetadataValue.int(config.k),
            "users": dg.MetadataValue.int(len(per_user)),
            "active_users": dg.MetadataValue.int(len(inputs.users)),
            "users_short_of_k": dg.MetadataValue.int(int((per_user < config.k).sum())),
            "cold_start_users": dg.MetadataValue.int(
                int(recs.loc[recs["rank"] == 1, "source"].eq("cold_start").sum())
            ),
            "distinct_tracks": dg.MetadataValue.int(int(recs["track_id"].nunique())),
            "rows_by_source": dg.MetadataValue.json(
                {str(name): int(count) for name, count in rows_by_source.items()}
            ),
            **_snapshot_metadata(inputs.snapshot),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        },
    )


recommendation_assets = [
    evaluation_holdout,
    candidate_model,
    production_model,
    production_model_evaluation,
    user_recommendations,
]
