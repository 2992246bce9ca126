"""The daily run at the seed's size through `dagster asset materialize`: where the time goes.

Runs the whole graph (`--select '*'`, today's partition) for 1,000 records per endpoint against the
API stand-in and a PostgreSQL in a temporary folder, with Dagster's instance in PostgreSQL, once
with the project's executor (in-process) and once with the multiprocess executor, and prints for
each: the command's wall time, the time spent inside steps (from the run's step stats), and the
rest, which is Dagster's own overhead (process start, imports, definitions, instance, events).

    python bench/bench_daily_overhead.py [--records 1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

MULTIPROCESS_DEFS = """\
import dagster as dg

from moovitamix_assets import definitions as project

# Only one Definitions object may live at module scope: reach the project's through its module.
defs = dg.Definitions(
    assets=project.defs.assets,
    asset_checks=project.defs.asset_checks,
    jobs=project.defs.jobs,
    resources=project.defs.resources,
    executor=dg.multiprocess_executor,
)
"""


def run_once(target: list[str], env: dict[str, str], partition: str) -> tuple[float, float]:
    """(wall seconds of the command, seconds inside steps) of one materialization."""
    import dagster as dg

    from moovitamix_assets.cli import DAGSTER

    cmd = [DAGSTER, "asset", "materialize", *target, "--select", "*", "--partition", partition]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    os.environ.update(env)
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_records(limit=1)[0].dagster_run
        steps = instance.get_run_step_stats(run.run_id)
    inside = sum((s.end_time or 0) - (s.start_time or 0) for s in steps)
    return wall, inside


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from moovitamix_api.server import run_subprocess
    from moovitamix_assets.cli import prepare_environment
    from moovitamix_assets.partitions import utc_today
    from moovitamix_assets.warehouse.embedded_postgres import discard_embedded_postgres

    partition = utc_today().isoformat()
    with tempfile.TemporaryDirectory(prefix="moovitamix-overhead-") as tmp:
        os.environ["MOOVITAMIX_STATE_DIR"] = str(Path(tmp) / "state")
        os.environ.pop("DAGSTER_HOME", None)
        env = prepare_environment(Path(tmp) / "state")
        multi = Path(tmp) / "multiprocess_defs.py"
        multi.write_text(MULTIPROCESS_DEFS)
        variants = {
            "in-process (the project's)": ["-m", "moovitamix_assets.definitions"],
            "multiprocess": ["-f", str(multi)],
        }
        try:
            with run_subprocess(["--records", str(args.records)]) as api:
                env["MOOVITAMIX_API_URL"] = api.base_url
                # A first run creates every table and the first model; later runs are the
                # daily case.
                run_once(variants["in-process (the project's)"], env, partition)
                print(f"{'executor':<28}{'wall s':>8}{'in steps s':>12}{'overhead s':>12}")
                for name, target in variants.items():
                    for _ in range(args.repeat):
                        wall, inside = run_once(target, env, partition)
                        print(f"{name:<28}{wall:>8.1f}{inside:>12.1f}{wall - inside:>12.1f}")
        finally:
            discard_embedded_postgres(Path(tmp) / "state")  # its server and data


if __name__ == "__main__":
    main()
