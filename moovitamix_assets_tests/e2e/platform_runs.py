"""Helpers of the end-to-end recommendation tests: a test clock, the days, what a run left behind.

The MooVitamix API serves only its current state, so the raw assets refuse a partition more than a
day old (``moovitamix_assets.partitions.snapshot_date_for``). Three consecutive daily partitions
therefore need the platform to believe that each one is "today" when it runs: ``clock_site``
writes a ``sitecustomize.py`` that, in every Python process started with it on ``PYTHONPATH``
(the dagster CLI, ``python -m moovitamix_assets.cli`` and the processes they start), makes
``moovitamix_assets.partitions.utc_today()`` return ``$MOOVITAMIX_TEST_UTC_TODAY``. It is the one
thing these tests fake; the API stand-in serves the matching day through its own ``--day``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.partitions import utc_today

CLOCK_ENV = "MOOVITAMIX_TEST_UTC_TODAY"
# The module whose utc_today() the raw assets' partition guard reads.
CLOCK_MODULE = "moovitamix_assets.partitions"
# Asset keys as the UI and the CLI spell them.
USER_RECOMMENDATIONS = "ml/user_recommendations"
CANDIDATE_MODEL = "ml/candidate_model"
K = 10
AUDITS = (
    "exactly_k_per_active_user",
    "none_already_listened",
    "only_active_tracks",
    "no_duplicates",
)
FALLBACK = "genre_popularity"
ALS = "als"

SITECUSTOMIZE = f'''"""Test clock: {CLOCK_MODULE}.utc_today() returns ${CLOCK_ENV}."""

import datetime
import importlib.abc
import importlib.machinery
import os
import sys

_TODAY = os.environ.get("{CLOCK_ENV}")


class _TestClock(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "{CLOCK_MODULE}":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module
        today = datetime.date.fromisoformat(_TODAY)

        def exec_module(module):
            load(module)
            module.utc_today = lambda: today

        spec.loader.exec_module = exec_module
        return spec


if _TODAY:
    sys.meta_path.insert(0, _TestClock())
'''


def write_clock_site(folder: Path) -> Path:
    """Write the test clock's ``sitecustomize.py`` into ``folder`` and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def clock_env(site: Path, today: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the test clock set to ``today`` for every Python process started with it."""
    path = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, CLOCK_ENV: today}


@dataclass(frozen=True)
class Day:
    """One daily run: the partition (the platform's "today") and the day the API serves."""

    partition: str
    served: str

    @property
    def quiet(self) -> bool:
        """The API served yesterday's state again: no new listens, no change at all."""
        return self.served != self.partition


def three_days() -> list[Day]:
    """Three consecutive partitions ending today; on the last the API has not moved overnight."""
    today = utc_today()
    first, second = today - dt.timedelta(days=2), today - dt.timedelta(days=1)
    return [
        Day(first.isoformat(), first.isoformat()),
        Day(second.isoformat(), second.isoformat()),
        Day(today.isoformat(), second.isoformat()),
    ]


def check_evaluations(
    instance: dg.DagsterInstance, run_id: str
) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """Every check evaluation of a run, by (asset, check name)."""
    found = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        found[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    return found


def assert_recommendation_checks_passed(
    evaluations: dict[tuple[str, str], dg.AssetCheckEvaluation],
) -> None:
    """The four blocking audits of ``ml/user_recommendations`` ran and passed."""
    for audit in AUDITS:
        evaluation = evaluations.get((USER_RECOMMENDATIONS, audit))
        assert evaluation is not None, f"{audit} did not run: {sorted(evaluations)}"
        assert evaluation.passed, (audit, evaluation.description)
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR


def assert_refusal_is_a_warning(
    evaluations: dict[tuple[str, str], dg.AssetCheckEvaluation],
) -> dict[str, Any]:
    """``promotion_gate`` on ``ml/candidate_model`` failed with WARN severity; its metadata."""
    gate = evaluations.get((CANDIDATE_MODEL, "promotion_gate"))
    assert gate is not None, f"promotion_gate did not run: {sorted(evaluations)}"
    assert not gate.passed, f"the candidate was promoted on structureless data: {gate.description}"
    assert gate.severity == dg.AssetCheckSeverity.WARN
    return {name: value.value for name, value in gate.metadata.items()}


@dataclass(frozen=True)
class ServingState:
    """What the warehouse serves after a run."""

    active_users: int
    users_without_k: int
    users_not_active: int
    already_listened: int
    listen_pairs: int
    registry: list[dict[str, Any]]
    served_versions: set[int]

    @property
    def production(self) -> list[dict[str, Any]]:
        return [row for row in self.registry if row["status"] == "production"]

    def of_type(self, model_type: str) -> list[dict[str, Any]]:
        return [row for row in self.registry if row["model_type"] == model_type]


def serving_state(warehouse_url: str, k: int = K) -> ServingState:
    """Read the served recommendations and the registry, independently of the platform's audits.

    "Already listened" is judged on ``core.listen_events``, every (user, track) pair the API ever
    listed, orphans included: stricter than the interactions the model trains on.
    """
    engine = sa.create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            active_users, users_without_k = conn.execute(
                sa.text(
                    """
                    SELECT count(*), count(*) FILTER (WHERE coalesce(r.n, 0) <> :k)
                    FROM core.users u
                    LEFT JOIN (SELECT user_id, count(*) AS n FROM ml.user_recommendations
                               GROUP BY user_id) r ON r.user_id = u.id
                    WHERE u.is_active
                    """
                ),
                {"k": k},
            ).one()
            users_not_active = conn.execute(
                sa.text(
                    "SELECT count(DISTINCT r.user_id) FROM ml.user_recommendations r "
                    "LEFT JOIN core.users u ON u.id = r.user_id AND u.is_active "
                    "WHERE u.id IS NULL"
                )
            ).scalar_one()
            already_listened = conn.execute(
                sa.text(
                    "SELECT count(*) FROM ml.user_recommendations r "
                    "JOIN core.listen_events e USING (user_id, track_id)"
                )
            ).scalar_one()
            listen_pairs = conn.execute(
                sa.text("SELECT count(*) FROM core.listen_events")
            ).scalar_one()
            registry = [
                dict(row._mapping)
                for row in conn.execute(
                    sa.text(
                        "SELECT version, status, model_type, gate_passed, gate_reason, "
                        "promoted_at FROM ml.model_registry ORDER BY version"
                    )
                )
            ]
            served_versions = set(
                conn.execute(
                    sa.text("SELECT DISTINCT model_version FROM ml.user_recommendations")
                ).scalars()
            )
    finally:
        engine.dispose()
    return ServingState(
        active_users=active_users,
        users_without_k=users_without_k,
        users_not_active=users_not_active,
        already_listened=already_listened,
        listen_pairs=listen_pairs,
        registry=registry,
        served_versions={int(v) for v in served_versions},
    )


def assert_every_active_user_served(state: ServingState, min_users: int) -> None:
    """Every active user has exactly K recommendations, nobody else any, none already heard."""
    assert state.active_users >= min_users, state
    assert state.users_without_k == 0, state
    assert state.users_not_active == 0, state
    assert state.already_listened == 0, state


def assert_fallback_serves(state: ServingState, refused: int) -> None:
    """The registered fallback serves, and ``refused`` ALS candidates are on file, none promoted."""
    (production,) = state.production
    assert production["model_type"] == FALLBACK, state.registry
    assert production["promoted_at"] is not None
    assert state.served_versions == {production["version"]}, state
    candidates = state.of_type(ALS)
    assert len(candidates) == refused, state.registry
    for row in candidates:
        assert row["status"] == "candidate" and not row["gate_passed"], row
        assert "refused" in row["gate_reason"], row
