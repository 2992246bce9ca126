"""The platform's ingestion against dlt's `rest_api` source, on the same stand-in and PostgreSQL.

    python -m venv /tmp/dltvenv && /tmp/dltvenv/bin/pip install "dlt[postgres]"
    python bench/bench_dlt.py --dlt-python /tmp/dltvenv/bin/python --records 20000 --pairs 3 \
        [--old-tree /tmp/old-ingest]

dlt lives in its own virtual environment (it is not a dependency of the platform). Each pair
runs, one after the other and each in a fresh process, (1) `dagster asset materialize` of the three
raw assets for today and (2) a dlt pipeline reading the same three endpoints, every page, into
the same PostgreSQL server (another database). Prints each wall time and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import sqlalchemy as sa

from moovitamix_api.server import run_subprocess
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.embedded_postgres import (
    discard_embedded_postgres,
    start_embedded_postgres,
)

DLT_SCRIPT = textwrap.dedent(
    """
    import sys, dlt
    from dlt.sources.rest_api import rest_api_source

    base_url, credentials = sys.argv[1], sys.argv[2]
    source = rest_api_source({
        "client": {
            "base_url": base_url,
            "paginator": {
                "type": "page_number", "base_page": 1, "page_param": "page",
                "total_path": "pages",
            },
        },
        "resource_defaults": {"endpoint": {"params": {"size": 100}, "data_selector": "items"}},
        "resources": ["users", "tracks", "listen_history"],
    })
    pipeline = dlt.pipeline(
        pipeline_name="moovitamix_bench", destination=dlt.destinations.postgres(credentials),
        dataset_name="dlt_raw", pipelines_dir=sys.argv[3],
    )
    info = pipeline.run(source, write_disposition="replace")
    print(info)
    """
)


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"{cmd[:3]} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dlt-python", required=True, help="python of a venv with dlt[postgres]")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--old-tree", help="a checkout of older code (e.g. 751b892), timed in each pair too"
    )
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="bench_dlt_"))
    try:
        server = start_embedded_postgres(state, ("postgres", "platform", "dlt", "old"))
        platform_url = server.url("platform")
        dlt_url = sa.make_url(server.url("dlt"))
        # dlt takes a libpq URL (the unix socket's folder is its host) and insists on a password,
        # which the embedded server's trust authentication ignores.
        dlt_credentials = (
            f"postgresql://{dlt_url.username}:password@localhost:{dlt_url.query['port']}/dlt"
            f"?host={dlt_url.query['host']}"
        )
        dagster = str(Path(sys.executable).with_name("dagster"))
        with run_subprocess(["--records", str(args.records)]) as api:
            env = {
                **os.environ,
                "MOOVITAMIX_API_URL": api.base_url,
                "MOOVITAMIX_DATABASE_URL": platform_url,
                "DAGSTER_HOME": str(state / "dagster_home"),
            }
            (state / "dagster_home").mkdir()
            script = state / "dlt_pipeline.py"
            script.write_text(DLT_SCRIPT)
            platform_cmd = [
                dagster, "asset", "materialize", "-m", "moovitamix_assets.definitions",
                "--select", "raw/users,raw/tracks,raw/listen_history",
                "--partition", utc_today().isoformat(),
            ]  # fmt: skip
            dlt_cmd = [args.dlt_python, str(script), api.base_url, dlt_credentials, str(state)]
            ours, theirs, old = [], [], []
            # The older code in its own database and instance: its tables may differ.
            old_env = {
                **env,
                "PYTHONPATH": args.old_tree or "",
                "MOOVITAMIX_DATABASE_URL": server.url("old"),
                "DAGSTER_HOME": str(state / "dagster_home_old"),
            }
            (state / "dagster_home_old").mkdir()
            for pair in range(1, args.pairs + 1):
                ours.append(timed(platform_cmd, env, str(state)))
                theirs.append(timed(dlt_cmd, env, str(state)))
                line = (
                    f"pair {pair}: platform {ours[-1]:.1f} s, dlt {theirs[-1]:.1f} s "
                    f"({ours[-1] / theirs[-1]:.2f}x)"
                )
                if args.old_tree:
                    old.append(timed(platform_cmd, old_env, str(state)))
                    line += f"; old code {old[-1]:.1f} s ({old[-1] / theirs[-1]:.2f}x)"
                print(line, flush=True)
        with sa.create_engine(platform_url).connect() as conn:
            ours_rows = conn.execute(sa.text("SELECT count(*) FROM raw.users")).scalar()
        with sa.create_engine(server.url("dlt")).connect() as conn:
            dlt_rows = conn.execute(sa.text("SELECT count(*) FROM dlt_raw.users")).scalar()
        print(f"users stored: platform {ours_rows:,}, dlt {dlt_rows:,} (of {args.records:,})")
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(
            f"median: platform {statistics.median(ours):.1f} s, dlt {statistics.median(theirs):.1f}"
            f" s, ratio {ratio:.2f}x (target: at most 0.6x)"
        )
        if old:
            old_ratio = statistics.median(old) / statistics.median(theirs)
            print(f"old code: median {statistics.median(old):.1f} s, ratio {old_ratio:.2f}x")
    finally:
        discard_embedded_postgres(state)


if __name__ == "__main__":
    main()
