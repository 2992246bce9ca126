"""The worked deployment files of docs/operations.md load in the installed Dagster, secret-free.

deploy/dagster.yaml is loaded as a real instance on the real test server; the Helm values are
checked against the chart keys they use, and the instance settings they render (run queue limits,
run monitoring, additionalInstanceConfig) are loaded by Dagster's own config validation.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from moovitamix_assets_tests.test_end_to_end import deployment_env

REPO = Path(__file__).resolve().parents[2]
DAGSTER_YAML = REPO / "deploy" / "dagster.yaml"
HELM_VALUES = REPO / "deploy" / "helm" / "values.yaml"
# One run per partition, and one model retraining at a time (the job's moovitamix/exclusive tag).
RUN_LIMITS = [
    {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
    {"key": "moovitamix/exclusive", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
]


def load_instance(home: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return dg.DagsterInstance.from_config(str(home))


def test_the_deployment_instance_runs_on_postgres_with_a_limited_queue(
    fresh_database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    # The embedded server's socket folder goes through PGHOST (see deployment_env).
    env = deployment_env(home, fresh_database())
    instance = load_instance(home, monkeypatch, env)
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 4
        assert list(queue.tag_concurrency_limits) == RUN_LIMITS
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 6 * 3600
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        # The storage works: a run record goes in and comes back.
        run = instance.create_run_for_job(dg.GraphDefinition("probe").to_job())
        assert instance.get_run_by_id(run.run_id) is not None
    finally:
        instance.dispose()


def password_literals(node: Any, path: str = "") -> list[str]:
    """Paths of keys naming a password whose value is a literal (not an env/secret reference)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}"
            literal = isinstance(value, str | int) and not isinstance(value, bool)
            if "password" in str(key).lower() and literal and value != "":
                found.append(child)
            found += password_literals(value, child)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += password_literals(item, f"{path}[{i}]")
    return found


def test_no_deployment_file_holds_a_password() -> None:
    for path in (DAGSTER_YAML, HELM_VALUES):
        document = yaml.safe_load(path.read_text())
        assert password_literals(document) == [], path
    instance = yaml.safe_load(DAGSTER_YAML.read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {
        "env": "DAGSTER_PG_PASSWORD"
    }
    # The detector itself sees a literal.
    assert password_literals({"postgresql": {"postgresqlPassword": "hunter2"}}) == [
        ".postgresql.postgresqlPassword"
    ]


def test_the_helm_values_deploy_this_project_on_kubernetes() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("--module-name") + 1]
    assert importlib.util.find_spec(module) is not None
    assert module == "moovitamix_assets.definitions"
    secret_names = {s["name"] for s in deployment["envSecrets"]}
    assert secret_names == {
        s["name"] for s in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    }
    # No credential in plain env entries: they come from the Secrets only.
    for entry in deployment.get("env", []):
        assert entry["name"] not in {"MOOVITAMIX_DATABASE_URL", "MOOVITAMIX_ALERT_WEBHOOK_URL"}

    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    deployment_yaml = yaml.safe_load(DAGSTER_YAML.read_text())
    assert (
        queued["maxConcurrentRuns"] == deployment_yaml["concurrency"]["runs"]["max_concurrent_runs"]
    )
    assert queued["tagConcurrencyLimits"] == RUN_LIMITS


def test_the_instance_settings_the_helm_values_render_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Render the instance settings the way the chart's templates do, and load them in Dagster."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring = daemon["runMonitoring"]
    assert not daemon["runRetries"]["enabled"]  # else two run_retries keys would be rendered
    rendered = {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": queued["maxConcurrentRuns"],
                "tag_concurrency_limits": queued["tagConcurrencyLimits"],
            },
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "retention": {
            "schedule": {"purge_after_days": values["retention"]["schedule"]["purgeAfterDays"]},
            "sensor": {"purge_after_days": values["retention"]["sensor"]["purgeAfterDays"]},
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        **values["additionalInstanceConfig"],
    }
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 4
        assert list(queue.tag_concurrency_limits) == RUN_LIMITS
        assert instance.run_monitoring_enabled
        assert instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
    finally:
        instance.dispose()
    assert os.environ["DAGSTER_HOME"] == str(home)
