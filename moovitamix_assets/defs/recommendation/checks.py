"""Checks of every ``ml/*`` asset. A refused candidate, an empty holdout or a missing evaluation
is news (WARN: what serves keeps serving); a leaky holdout, a corrupt model or bad
recommendations must not serve (ERROR, blocking)."""

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
# The gate's relative figures, in percent as every ``*_pct`` figure (a lift of 0.125 is 12.5).
_GATE_PERCENT = frozenset({"lift", "lift_low", "lift_high", "min_lift", "detectable_lift"})
_WARN = dg.AssetCheckSeverity.WARN


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
    # The candidate of this run; a check run on its own judges the newest candidate.
    entry = registry.latest_trained_entry(postgres.engine(), context.run.run_id)
    if entry is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=_WARN,
            description="no candidate was trained (no interactions yet): what serves stays",
            metadata={"reason": "no candidate registered"},
        )
    figures = entry.gate_figures
    if not entry.gate_passed:
        alert_notifier.send(
            Alert(
                kind="model_refused",
                title=f"Candidate model {entry.name} refused: "
                f"{figures.get('verdict', 'not promoted')}",
                asset_key=keys.CANDIDATE_MODEL.to_user_string(),
                observed=str(figures.get("lift_low")),
                expected=f"lift lower bound > {figures.get('min_lift')}",
                run_id=context.run.run_id,
                link=alert_notifier.asset_url(keys.CANDIDATE_MODEL),
                dedupe_key=f"model_refused:v{entry.version}",
                details=entry.gate_reason,
            ),
            context.log,
        )
    gate = {
        f"gate_{n}_pct" if n in _GATE_PERCENT else f"gate_{n}": (
            percent(v) if n in _GATE_PERCENT else figure(v) if isinstance(v, float) else v
        )
        for n, v in sorted(figures.items())
    }
    return dg.AssetCheckResult(
        passed=entry.gate_passed,
        severity=_WARN,
        description=entry.gate_reason,
        metadata={
            "reason": entry.gate_reason,
            "candidate_version": entry.version,
            # The alert sensor quotes observed against threshold.
            "observed": figure(figures.get("lift_low")),
            "threshold": figure(figures.get("min_lift")),
            **gate,
        },
    )


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
        severity=_WARN,
        description=f"{rows} held-out listens of {users} users",
        metadata={"observed": rows, "users": users},
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
        description=(
            f"{duplicated} duplicated held-out pairs, {unknown} not in the interactions, "
            f"{untrainable} held-out users left with nothing to train on"
        ),
        metadata={"observed": offending, "threshold": 0},
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
        return dg.AssetCheckResult(passed=False, description="no production model is registered")
    try:
        registry.load_model(engine, entry.version)
    except ValueError as exc:
        return dg.AssetCheckResult(
            passed=False, description=f"{entry.name} cannot be loaded: {exc}"
        )
    return dg.AssetCheckResult(
        passed=True,
        description=f"{entry.name} loads ({entry.artifact_bytes} bytes, sha256 verified)",
        metadata={"model_version": entry.version},
    )


@dg.asset_check(
    asset=keys.PRODUCTION_MODEL_EVALUATION,
    name="evaluation_recorded",
    description="Today's evaluation of the serving model is on file with its lift over fallback.",
)
def evaluation_recorded(postgres: PostgresResource) -> dg.AssetCheckResult:
    evaluation = registry.latest_evaluation(postgres.engine())
    if evaluation is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=_WARN,
            description="no evaluation of the serving model is recorded",
        )
    lift = evaluation.metrics.get("lift_over_fallback") or {}
    interval = evaluation.metrics.get("interval") or {}
    return dg.AssetCheckResult(
        passed="lift" in lift,
        severity=_WARN,
        description=(
            f"{evaluation.name} evaluated at {evaluation.evaluated_at:%Y-%m-%d %H:%M} UTC on "
            f"{lift.get('users', 0)} users"
        ),
        metadata={
            "model_version": evaluation.version,
            **{f"metric_{name}": figure(interval.get(name)) for name in ("mean", "low", "high")},
            # In percent, as the evaluation asset reports them (+12.5 = 12.5 % better).
            **{
                f"lift_over_fallback{suffix}_pct": percent(lift.get(name))
                for name, suffix in (("lift", ""), ("low", "_low"), ("high", "_high"))
            },
        },
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            name=name, asset=keys.USER_RECOMMENDATIONS, blocking=True, description=f"No {what}."
        )
        for name, what in serving.AUDITS.items()
    ],
    can_subset=True,
)
def recommendation_audits(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource
) -> Any:
    """The publication audits as they ran on the rows this run published (running them again
    over millions of rows would only double the step's time), else run on the served table."""
    event = context.instance.get_latest_materialization_event(keys.USER_RECOMMENDATIONS)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if event and event.run_id == context.run.run_id and serving.AUDITS_METADATA_KEY in metadata:
        k = int(metadata["k"].value)
        offending = metadata[serving.AUDITS_METADATA_KEY].value
    else:
        engine = postgres.engine()
        registry.ensure_registry_schema(engine)
        with engine.connect() as conn:
            # K of the served table: its deepest rank, or the default when empty.
            deepest = conn.execute(sa.text(f"SELECT max(rank) FROM {serving.PUBLISHED}")).scalar()
            k = int(deepest) if deepest else DEFAULT_K
            offending = serving.audit_recommendations(conn, serving.PUBLISHED, k)
    for key in context.selected_asset_check_keys:
        yield dg.AssetCheckResult(
            check_name=key.name,
            passed=offending[key.name] == 0,
            description=serving.describe(key.name, offending[key.name]),
            metadata={"observed": offending[key.name], "threshold": 0, "k": k},
        )


recommendation_checks = [
    promotion_gate,
    holdout_not_empty,
    holdout_disjoint_from_training,
    production_artifact_loads,
    evaluation_recorded,
    recommendation_audits,
]
