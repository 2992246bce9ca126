"""A run whose failing check finishes only when a gate file appears (argv[1]).

Run as its own process on the test's instance ($DAGSTER_HOME): two in-process runs on threads
share the logging module, and Dagster's log setup can deadlock between them.
"""

import sys
import time
from pathlib import Path

from dagster import AssetCheckResult, DagsterInstance, asset, asset_check, materialize


@asset
def slow() -> int:
    """Waits for the test to let it finish."""
    gate = Path(sys.argv[1])
    for _ in range(600):
        if gate.exists():
            return 0
        time.sleep(0.1)
    raise TimeoutError(f"{gate} never appeared")


@asset_check(asset=slow)
def slow_not_empty(slow: int) -> AssetCheckResult:
    """Fails (ERROR)."""
    return AssetCheckResult(passed=slow > 0, metadata={"observed": slow, "threshold": 1})


if __name__ == "__main__":
    with DagsterInstance.get() as instance:
        materialize([slow, slow_not_empty], instance=instance)
