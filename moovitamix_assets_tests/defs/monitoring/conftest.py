"""The Dagster instance the alert sensors run against: the default and deploy/dagster.yaml's kind.

Every sensor test runs twice: on a temp-dir SQLite instance like `dagster dev`'s (its event log
is run-sharded, the hardest storage for cross-run queries) and on an instance whose runs, event
log and schedules are in PostgreSQL through dagster-postgres, as a deployment configures it.
"""

from collections.abc import Callable, Iterator

import pytest
from dagster import DagsterInstance, instance_for_test


@pytest.fixture(params=["sqlite", "postgres"])
def instance(
    request: pytest.FixtureRequest, fresh_database: Callable[[], str]
) -> Iterator[DagsterInstance]:
    overrides = None
    if request.param == "postgres":
        overrides = {"storage": {"postgres": {"postgres_url": fresh_database()}}}
    with instance_for_test(overrides=overrides) as instance:
        if request.param == "postgres":
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        yield instance
