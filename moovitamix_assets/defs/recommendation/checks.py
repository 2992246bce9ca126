"""Asset checks of the recommendation layer: one or more on every ``ml/*`` asset.

Severities follow what a data scientist would do with the answer:

* ``promotion_gate`` (WARN): a refused candidate is news, not a failure. What serves keeps
  serving, today's recommendations are still written, and one alert says why.
* ``holdout_not_empty`` (WARN): without held-out listens nothing can be judged, but serving goes on.
* ``holdout_disjoint_from_training`` (ERROR, blocking): a leaky holdout makes every verdict a lie.
* ``production_artifact_loads`` (ERROR, blocking): a corrupt model must not serve.
* ``evaluation_recorded`` (WARN): today's evaluation, with its lift over the fallback, is on file.
* the four recommendation audits (ERROR, blocking): the same audits already stopped bad rows
  before publication (``serving.stage_and_publish``); here they show on the served table.
"""

from typing import Any

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.alerts import Alert, AlertNotifier
from moovitamix_assets.check_results import figure, percent
from moovitamix_assets.defs.core.assets import INTERACTIONS_TABLE, core_table
from moovitamix_assets.defs.recommendation import keys, registry, serving
from moovitamix_assets.ml.evaluation import DEFAULT_K
from moovitamix_assets.warehouse.database import PostgresResource

_HOLDOUT = registry.ml_table("evaluation_holdout")


def _figure(value: Any) -> dg.MetadataValue:
    if isinstance(value, bool) or value is None:
        return dg.MetadataValue.text(str(value))
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return figure(value)
    return dg.MetadataValue.text(str(value))


# The gate's relative figures, in percent as every ``*_pct`` figure (a lift of 0.125 is 12.5).
_GATE_PERCENT = frozenset({"lift", "lift_low", "lift_high", "min_lift", "detectable_lift"})


def _gate_figure(name: str, value: Any) -> tuple[str, dg.MetadataValue]:
    if name in _GATE_PERCENT:
        return f"gate_{name}_pct", percent(value)
    return f"gate_{name}", _figure(value)


def gate_result(entry: registry.RegistryEntry | None) -> dg.AssetCheckResult:
    """Turn a registry row's stored verdict into the check's result and metadata."""
    if entry is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no candidate was trained (no interactions yet): what serves stays",
            metadata={"reason": dg.MetadataValue.text("no candidate registered")},
        )
    figures = entry.gate_figures
    metadata: dict[str, Any] = {
        "reason": dg.MetadataValue.text(entry.gate_reason),
        "candidate_version": dg.MetadataValue.int(entry.version),
        # The alert sensor quotes observed against threshold.
        "observed": _figure(figures.get("lift_low")),
        "threshold": _figure(figures.get("min_lift")),
        **dict(_gate_figure(name, value) for name, value in sorted(figures.items())),
    }
    return dg.AssetCheckResult(
        passed=entry.gate_passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=entry.gate_reason,
        metadata=metadata,
    )


@dg.asset_check(
    asset=keys.CANDIDATE_MODEL,
    name="promotion_gate",
    description=(
        "Promotes the candidate only when the lower bound of its lift over the serving model "
        "(paired bootstrap over the same held-out users) clears the margin. A refusal is a "
        "warning: what serves keeps serving."
    ),
)
def promotion_gate(
    context: dg.AssetCheckExecutionContext,
    postgres: PostgresResource,
    alert_notifier: AlertNotifier,
) -> dg.AssetCheckResult:
    engine = postgres.engine()
    # The candidate of this run; a check run on its own judges the newest candidate.
    entry = registry.entry_for_run(engine, context.run.run_id) or registry.latest_trained_entry(
        engine
    )
    result = gate_result(entry)
    if entry is not None and not entry.gate_passed:
        alert_notifier.send(
            Alert(
                kind="model_refused",
                title=f"Candidate model {entry.name} refused: "
                f"{entry.gate_figures.get('verdict', 'not promoted')}",
                asset_key=keys.CANDIDATE_MODEL.to_user_string(),
                partition=None,
                observed=str(entry.gate_figures.get("lift_low")),
                expected=f"lift lower bound > {entry.gate_figures.get('min_lift')}",
                run_id=context.run.run_id,
                link=alert_notifier.asset_url(keys.CANDIDATE_MODEL),
                dedupe_key=f"model_refused:v{entry.version}",
                details=entry.gate_reason,
            ),
            context.log,
        )
    return result


@dg.asset_check(
    asset=keys.EVALUATION_HOLDOUT,
    name="holdout_not_empty",
    description="At least one held-out listen: without one no model can be judged today.",
)
def holdout_not_empty(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.engine().connect() as conn:
        rows, users = conn.execute(
            sa.text(f"SELECT count(*), count(DISTINCT user_id) FROM {_HOLDOUT}")
        ).one()
    return dg.AssetCheckResult(
        passed=rows > 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{rows} held-out listens of {users} users",
        metadata={"observed": dg.MetadataValue.int(rows), "users": dg.MetadataValue.int(users)},
    )


@dg.asset_check(
    asset=keys.EVALUATION_HOLDOUT,
    name="holdout_disjoint_from_training",
    blocking=True,
    description=(
        "Every held-out listen is a real listen left out of training, and every held-out user "
        "keeps at least one listen to train on."
    ),
)
def holdout_disjoint_from_training(postgres: PostgresResource) -> dg.AssetCheckResult:
    interactions = core_table(INTERACTIONS_TABLE)
    with postgres.engine().connect() as conn:
        duplicated, unknown, untrainable = conn.execute(
            sa.text(
                f"""
                SELECT
                    (SELECT count(*) FROM (SELECT 1 FROM {_HOLDOUT}
                        GROUP BY user_id, track_id HAVING count(*) > 1) d),
                    (SELECT count(*) FROM {_HOLDOUT} h
                        WHERE NOT EXISTS (SELECT 1 FROM {interactions} i
                            WHERE i.user_id = h.user_id AND i.track_id = h.track_id)),
                    (SELECT count(*) FROM (SELECT h.user_id, count(*) AS held
                        FROM {_HOLDOUT} h GROUP BY h.user_id) h
                        JOIN (SELECT user_id, count(*) AS n FROM {interactions}
                            GROUP BY user_id) i USING (user_id)
                        WHERE i.n <= h.held)
                """
            )
        ).one()
    offending = duplicated + unknown + untrainable
    return dg.AssetCheckResult(
        passed=offending == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{duplicated} duplicated held-out pairs, {unknown} not in the interactions, "
            f"{untrainable} held-out users left with nothing to train on"
        ),
        metadata={
            "observed": dg.MetadataValue.int(offending),
            "threshold": dg.MetadataValue.int(0),
        },
    )


@dg.asset_check(
    asset=keys.PRODUCTION_MODEL,
    name="production_artifact_loads",
    blocking=True,
    description="The serving model's artifact loads and matches its recorded sha256.",
)
def production_artifact_loads(postgres: PostgresResource) -> dg.AssetCheckResult:
    engine = postgres.engine()
    entry = registry.production_entry(engine)
    if entry is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description="no production model is registered",
        )
    try:
        registry.load_model(engine, entry.version)
    except (ValueError, registry.RegistryError) as exc:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{entry.name} cannot be loaded: {exc}",
        )
    return dg.AssetCheckResult(
        passed=True,
        description=f"{entry.name} loads ({entry.artifact_bytes} bytes, sha256 verified)",
        metadata={"model_version": dg.MetadataValue.int(entry.version)},
    )


@dg.asset_check(
    asset=keys.PRODUCTION_MODEL_EVALUATION,
    name="evaluation_recorded",
    description="Today's evaluation of the serving model is on file with its lift over fallback.",
)
def evaluation_recorded(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource
) -> dg.AssetCheckResult:
    engine = postgres.engine()
    entry = registry.production_entry(engine)
    evaluation = registry.latest_evaluation(engine, entry.version) if entry else None
    if evaluation is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no evaluation of the serving model is recorded",
        )
    lift = evaluation.metrics.get("lift_over_fallback") or {}
    interval = evaluation.metrics.get("interval") or {}
    return dg.AssetCheckResult(
        passed="lift" in lift,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{entry.name if entry else '?'} evaluated at {evaluation.evaluated_at:%Y-%m-%d %H:%M} "
            f"UTC on {lift.get('users', 0)} users"
        ),
        metadata={
            "model_version": dg.MetadataValue.int(evaluation.version),
            "metric_mean": _figure(interval.get("mean")),
            "metric_low": _figure(interval.get("low")),
            "metric_high": _figure(interval.get("high")),
            # In percent, as the evaluation asset reports them (+12.5 = 12.5 % better).
            **{
                f"lift_over_fallback{suffix}_pct": percent(lift.get(name))
                for name, suffix in (("lift", ""), ("low", "_low"), ("high", "_high"))
            },
        },
    )


_AUDIT_DESCRIPTIONS = {
    "exactly_k_per_active_user": "Every active user has exactly K recommendations (fewer only "
    "when they heard every other active track), and nobody else has any.",
    "none_already_listened": "No user is recommended a track they already listened to.",
    "only_active_tracks": "Every recommended track is in the active catalogue.",
    "no_duplicates": "No track twice for a user and no rank twice.",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            name=audit.name,
            asset=keys.USER_RECOMMENDATIONS,
            blocking=True,
            description=_AUDIT_DESCRIPTIONS[audit.name],
        )
        for audit in serving.AUDITS
    ],
    can_subset=True,
)
def recommendation_audits(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource
) -> Any:
    """The publication audits of ``serving``: as they ran on the rows this run published, or
    run again on the served table when the check runs on its own."""
    outcomes, k = _audited_in_this_run(context)
    if outcomes is None:
        k = _served_k(postgres.engine())
        with postgres.engine().connect() as conn:
            outcomes = serving.audit_recommendations(conn, serving.PUBLISHED, k)
    selected = {key.name for key in context.selected_asset_check_keys}
    for outcome in outcomes:
        if outcome.name in selected:
            yield dg.AssetCheckResult(
                check_name=outcome.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=outcome.description,
                metadata={
                    "observed": dg.MetadataValue.int(outcome.offending),
                    "threshold": dg.MetadataValue.int(0),
                    "k": dg.MetadataValue.int(k),
                },
            )


def _audited_in_this_run(
    context: dg.AssetCheckExecutionContext,
) -> tuple[list[serving.AuditOutcome] | None, int]:
    """The audits the asset ran in this run, in the transaction that published the rows.

    They were run on exactly the rows that serve now, so running them again over millions of
    rows would only double the step's time.
    """
    event = context.instance.get_latest_materialization_event(keys.USER_RECOMMENDATIONS)
    if event is None or event.run_id != context.run.run_id or event.asset_materialization is None:
        return None, DEFAULT_K
    metadata = event.asset_materialization.metadata
    audits = metadata.get(serving.AUDITS_METADATA_KEY)
    if audits is None:
        return None, DEFAULT_K
    offending: dict[str, int] = audits.value
    return serving.outcomes(offending), int(metadata["k"].value)


def _served_k(engine: sa.Engine) -> int:
    """K of the served table: its deepest rank (the configured K), or the default when empty."""
    registry.ensure_registry_schema(engine)
    with engine.connect() as conn:
        deepest = conn.execute(sa.text(f"SELECT max(rank) FROM {serving.PUBLISHED}")).scalar()
    return int(deepest) if deepest else DEFAULT_K


recommendation_checks = [
    promotion_gate,
    holdout_not_empty,
    holdout_disjoint_from_training,
    production_artifact_loads,
    evaluation_recorded,
    recommendation_audits,
]
