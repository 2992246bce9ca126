"""Recommendation layer assets: holdout, candidate training, gated promotion, daily serving,
thin wrappers over ``data.py``, ``moovitamix_assets.ml.pipeline`` and ``registry.py``."""

import tempfile
import time
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from moovitamix_assets.check_results import figure, percent
from moovitamix_assets.constants import RECOMMENDATION_GROUP
from moovitamix_assets.defs.core.assets import CORE_INTERACTIONS, CORE_TRACKS, CORE_USERS
from moovitamix_assets.defs.recommendation import keys, registry, serving
from moovitamix_assets.defs.recommendation.data import read_model_inputs
from moovitamix_assets.freshness import DAILY_FRESHNESS, WEEKLY_FRESHNESS
from moovitamix_assets.ml import pipeline
from moovitamix_assets.ml.artifacts import serialize_model
from moovitamix_assets.ml.evaluation import DEFAULT_K, METRIC_NAMES, PER_USER_COLUMNS, Metrics
from moovitamix_assets.ml.gating import GateSettings, decide_promotion
from moovitamix_assets.ml.models import AlsParams, ServingModel
from moovitamix_assets.ml.split import time_based_split
from moovitamix_assets.step_figures import StepStart, finish_step_figures, start_step_figures
from moovitamix_assets.warehouse import columns
from moovitamix_assets.warehouse.database import PostgresResource

_DEFAULTS = AlsParams()
_GATE = GateSettings()
# Interaction columns each step reads: training needs the weights, scoring only the pairs.
_TRAINING_COLUMNS = ("user_id", "track_id", "weight")
_PAIR_COLUMNS = ("user_id", "track_id")


class HoldoutConfig(dg.Config):
    """How much recent listening is held out for evaluation."""

    holdout_per_user: int = Field(
        default=1, ge=1, description="Most recent listens of each user held out of training."
    )


class ScoringConfig(dg.Config):
    candidate_pool: int = Field(
        default=pipeline.DEFAULT_CANDIDATE_POOL,
        ge=1,
        description="Most-listened tracks the model ranks for each user (serving and evaluation "
        "stay linear in users; the long tail has too little listening to rank anyway).",
    )

    def sizes(self) -> dict[str, int]:
        """These fields as keyword arguments of the ``ml.pipeline`` functions."""
        return {"candidate_pool_size": self.candidate_pool}


class EvaluatedScoringConfig(ScoringConfig):
    evaluation_users: int = Field(
        default=pipeline.DEFAULT_EVALUATION_USERS,
        ge=1,
        description="Held-out users scored by the evaluation (a seeded sample beyond that).",
    )
    k: int = Field(default=DEFAULT_K, ge=1, description="Cut-off of the evaluation metrics (@k).")
    confidence: float = Field(
        default=_GATE.confidence,
        gt=0,
        lt=1,
        description="Two-sided confidence level of the intervals (bootstrap over held-out users).",
    )

    def sizes(self) -> dict[str, int]:
        return {**super().sizes(), "evaluation_users": self.evaluation_users}


class CandidateModelConfig(EvaluatedScoringConfig):
    """Hyper-parameters of the ALS candidate and how sure its promotion gate must be."""

    factors: int = Field(
        default=_DEFAULTS.factors, ge=1, description="Number of latent factors per user and track."
    )
    regularization: float = Field(
        default=_DEFAULTS.regularization, ge=0, description="L2 regularisation of the factors."
    )
    alpha: float = Field(
        default=_DEFAULTS.alpha,
        gt=0,
        description="Confidence scaling: an interaction of weight w counts with confidence "
        "1 + alpha * w.",
    )
    iterations: int = Field(
        default=_DEFAULTS.iterations, ge=1, description="Alternating least squares sweeps."
    )
    random_state: int = Field(
        default=_DEFAULTS.random_state,
        description="Seed of the factor initialisation (same seed, same model).",
    )
    gate_metric: str = Field(
        default=_GATE.metric,
        description=f"Metric the promotion gate compares, one of {', '.join(PER_USER_COLUMNS)}.",
    )
    min_lift: float = Field(
        default=_GATE.min_lift,
        ge=0,
        description="Margin the lower confidence bound of the candidate's relative lift over "
        "the serving model must clear (0 = significantly better; 0.05 = at least +5 %).",
    )
    min_hits: int = Field(
        default=_GATE.min_hits,
        ge=0,
        description="Held-out listens both models must find together before the gate decides; "
        "fewer is 'not enough evidence' and the candidate is refused.",
    )


class EvaluationConfig(EvaluatedScoringConfig):
    """Cut-off and size of the daily evaluation."""

    metric: str = Field(
        default=_GATE.metric,
        description="Metric given a confidence interval and a lift over the fallback.",
    )


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
            metadata[f"{model}_{label}"] = figure(float(getattr(values, name)))
        metadata[f"{model}_users_evaluated"] = values.n_users_evaluated
        metadata[f"{model}_hits"] = values.hits
    return metadata


def _begin(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> tuple[sa.Engine, StepStart, sa.Row]:
    """The step's engine and start, and the serving model's registry row."""
    engine, start = postgres.engine(), start_step_figures()
    return engine, start, registry.serving_entry(engine, at=_now(), run_id=context.run.run_id)


def _result(
    context: dg.AssetExecutionContext, start: StepStart, rows: int, snapshot: Any, **metadata: Any
) -> dg.MaterializeResult:
    """The step's result: its rows, column lineage, ``metadata``, the ``data_*`` figures of
    ``snapshot`` (a ``DataSnapshot`` or a registry row) and step figures."""
    return dg.MaterializeResult(
        metadata=finish_step_figures(
            context,
            {
                "dagster/row_count": rows,
                **columns.lineage_metadata(context, context.asset_key),
                **metadata,
                **{name: getattr(snapshot, name) for name in registry.DataSnapshot._fields},
                "data_snapshot_date": str(snapshot.data_snapshot_date or "none"),
            },
            start,
        )
    )


def _load(engine: sa.Engine, entry: sa.Row) -> ServingModel:
    try:
        return registry.load_model(engine, entry.version)
    except ValueError as exc:
        raise dg.Failure(f"the production model {entry.name} cannot be loaded: {exc}") from exc


def _ml_asset(key: dg.AssetKey, deps: list[Any], freshness: Any, **kwargs: Any) -> Any:
    """An ``ml/*`` asset: its group, freshness and the table ``columns.yaml`` gives it."""
    return dg.asset(
        key=key,
        deps=deps,
        kinds=kwargs.pop("kinds", {"python", "postgres"}),
        freshness_policy=freshness,
        metadata=columns.for_asset(key).definition_metadata(),
        group_name=RECOMMENDATION_GROUP,
        **kwargs,
    )


_HOLDOUT_IN = {"holdout": dg.AssetIn(key=keys.EVALUATION_HOLDOUT)}


@_ml_asset(
    keys.EVALUATION_HOLDOUT,
    [CORE_INTERACTIONS],
    DAILY_FRESHNESS,
    io_manager_key="warehouse_io_manager",
)
def evaluation_holdout(
    context: dg.AssetExecutionContext, config: HoldoutConfig, postgres: PostgresResource
) -> dg.Output[pd.DataFrame]:
    """Each user's most recent listen, held out of training so every model is judged honestly."""
    start = start_step_figures()
    interactions, _, _, snapshot = read_model_inputs(postgres.engine(), with_users_and_tracks=False)
    split = time_based_split(interactions, holdout_per_user=config.holdout_per_user)
    metadata = {
        **split.as_dict(),
        "data_interactions": snapshot.data_interactions,
        "data_snapshot_date": str(snapshot.data_snapshot_date or "none"),
        **columns.lineage_metadata(context, keys.EVALUATION_HOLDOUT),
    }
    return dg.Output(
        # The interaction columns (read_model_inputs' default), in a stable order for storage.
        split.test.sort_values(["user_id", "track_id"], kind="stable", ignore_index=True),
        metadata=finish_step_figures(context, metadata, start),
    )


@_ml_asset(
    keys.CANDIDATE_MODEL,
    [CORE_INTERACTIONS, CORE_USERS, CORE_TRACKS],
    WEEKLY_FRESHNESS,
    ins=_HOLDOUT_IN,
)
def candidate_model(
    context: dg.AssetExecutionContext,
    config: CandidateModelConfig,
    postgres: PostgresResource,
    holdout: pd.DataFrame,
) -> dg.MaterializeResult:
    """A newly trained ALS candidate, compared with what serves on the holdout, then registered."""
    engine, start, serving = _begin(context, postgres)
    train, users, tracks, snapshot = read_model_inputs(engine, columns=_TRAINING_COLUMNS)
    # Only the training half stays: every interaction never sits in memory beside the model.
    train = pipeline.training_half(train, holdout)
    if train.empty:
        context.log.warning("core.user_track_interactions is empty: no candidate trained today")
        rows = registry.table_rows(engine, registry.REGISTRY_TABLE)
        return _result(context, start, rows, snapshot, trained=False, serving_model=serving.name)
    read_s = time.perf_counter() - start.wall

    params = AlsParams(**config.model_dump(include=set(AlsParams.__dataclass_fields__)))
    model, metrics = pipeline.train_and_evaluate(
        train,
        holdout,
        users,
        tracks,
        params,
        config.k,
        lambda: _load(engine, serving),  # after the fit: see train_and_evaluate
        **config.sizes(),
    )
    gate = GateSettings(
        config.gate_metric, config.min_lift, config.confidence, config.min_hits, config.random_state
    )
    decision = decide_promotion(
        metrics[pipeline.CANDIDATE], metrics[pipeline.SERVING], serving.name, gate
    )
    # Through a temporary file: the ~250 MB payload at 1M users never sits beside the factors.
    with tempfile.TemporaryFile() as file:
        artifact = serialize_model(model, file)
        version = registry.register_candidate(
            engine,
            artifact,
            trained_at=_now(),
            run_id=context.run.run_id,
            **snapshot._asdict(),
            parameters={**params.as_dict(), "k": config.k, "n_train": len(train)},
            metrics={
                **{name: m.as_dict() for name, m in metrics.items()},
                "serving_version": serving.version,
            },
            gate_passed=decision.promote,
            gate_reason=decision.reason,
            gate_figures=decision.figures,
        )
    context.log.info("registered candidate version %d: %s", version, decision.reason)
    return _result(
        context,
        start,
        registry.table_rows(engine, registry.REGISTRY_TABLE),
        snapshot,
        trained=True,
        model_version=version,
        serving_model=serving.name,
        gate_passed=decision.promote,
        gate_verdict=decision.verdict,
        gate_reason=decision.reason,
        parameters=params.as_dict(),
        n_train=len(train),
        n_test=len(holdout),
        **metrics_metadata(metrics, config.k),
        artifact_sha256=artifact.sha256,
        artifact_mb=figure(artifact.size_bytes / 2**20),
        read_s=round(read_s, 3),
    )


@_ml_asset(keys.PRODUCTION_MODEL, [keys.CANDIDATE_MODEL], WEEKLY_FRESHNESS, kinds={"postgres"})
def production_model(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """The model that serves: the run's candidate when its gate passed, else what served before."""
    engine, start, before = _begin(context, postgres)
    candidate = registry.latest_trained_entry(engine, context.run.run_id)
    state = candidate.state if candidate else None  # "candidate": not yet promoted, gate passed
    if promoted := state == registry.STATUS_CANDIDATE:
        registry.promote(engine, candidate.version)
        context.log.info(f"{candidate.name} replaces {before.name} in production")
    elif state == "refused":
        context.log.warning(
            f"{before.name} keeps serving: {candidate.name} was refused ({candidate.gate_reason})"
        )
    serving = registry.production_entry(engine)
    return _result(
        context,
        start,
        registry.table_rows(engine, registry.REGISTRY_TABLE),
        serving,
        model_version=serving.version,
        model_type=serving.model_type,
        promoted=promoted,
        previous_version=before.version,
        candidate_version=candidate.version if candidate else 0,
        gate_reason=candidate.gate_reason if candidate else "no candidate trained yet",
        serving_since=serving.promoted_at.isoformat() if serving.promoted_at else "unknown",
    )


@_ml_asset(
    keys.PRODUCTION_MODEL_EVALUATION,
    [CORE_INTERACTIONS, CORE_TRACKS, keys.PRODUCTION_MODEL],
    DAILY_FRESHNESS,
    ins=_HOLDOUT_IN,
)
def production_model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    postgres: PostgresResource,
    holdout: pd.DataFrame,
) -> dg.MaterializeResult:
    """Today's metrics of the serving model with error bars, and its lift over the fallback."""
    engine, start, production = _begin(context, postgres)
    model = _load(engine, production)
    train, users, tracks, snapshot = read_model_inputs(engine, columns=_PAIR_COLUMNS)
    train = pipeline.training_half(train, holdout)
    metrics = pipeline.evaluate_model(
        model, train, holdout, users, tracks, config.k, **config.sizes()
    )
    summary = pipeline.evaluation_summary(metrics, config.metric, config.confidence)
    registry.record_evaluation(
        engine,
        version=production.version,
        evaluated_at=_now(),
        run_id=context.run.run_id,
        data_interactions=snapshot.data_interactions,
        data_snapshot_date=snapshot.data_snapshot_date,
        metrics={**{name: m.as_dict() for name, m in metrics.items()}, **summary.as_dict()},
    )
    context.log.info("%s on today's holdout: %s", production.name, summary.describe())
    label = config.metric.replace("_at_k", f"_at_{config.k}")
    return _result(
        context,
        start,
        registry.table_rows(engine, registry.EVALUATIONS_TABLE),
        snapshot,
        model_version=production.version,
        model_type=production.model_type,
        **metrics_metadata(metrics, config.k),
        # Beside production_<metric>: the plot shows whether a dip is larger than the noise.
        **{
            f"production_{label}_{b}": figure(getattr(summary.interval, b)) for b in ("low", "high")
        },
        lift_over_fallback_pct=percent(summary.lift.lift),
        lift_over_fallback_low_pct=percent(summary.lift.low),
        lift_over_fallback_high_pct=percent(summary.lift.high),
        summary=summary.describe(),
    )


@_ml_asset(
    keys.USER_RECOMMENDATIONS,
    [CORE_USERS, CORE_TRACKS, CORE_INTERACTIONS, keys.PRODUCTION_MODEL],
    DAILY_FRESHNESS,
)
def user_recommendations(
    context: dg.AssetExecutionContext, config: RecommendationsConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Top-K unheard tracks per active user from the production model, audited before they serve."""
    engine, start, production = _begin(context, postgres)
    model = _load(engine, production)
    interactions, users, tracks, snapshot = read_model_inputs(engine, columns=_PAIR_COLUMNS)
    now = _now()
    batches = pipeline.recommendation_batches(
        model, production.version, users, tracks, interactions, config.k, now, **config.sizes()
    )
    # Write, audit, publish: today's rows replace yesterday's only if every audit passes.
    offending, figures = serving.stage_and_publish(
        engine, batches, config.k, production.version, now
    )
    if any(offending.values()):
        raise dg.Failure(
            "today's recommendations failed their audits and were not published (yesterday's "
            "still serve; today's are in ml.user_recommendations_staging): "
            + "; ".join(serving.describe(a, n) for a, n in offending.items() if n)
        )
    return _result(
        context,
        start,
        figures.pop("rows"),
        snapshot,
        model_version=production.version,
        model_type=production.model_type,
        k=config.k,
        active_users=len(users),
        **figures,
        # The audits ran on exactly these rows: the checks report them, not run them again.
        **{serving.AUDITS_METADATA_KEY: offending},
    )


recommendation_assets = [
    evaluation_holdout,
    candidate_model,
    production_model,
    production_model_evaluation,
    user_recommendations,
]
