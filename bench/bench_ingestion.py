"""Ingestion benchmark: this code's raw assets against the code before the redesign, side by side.

Starts the API stand-in with N records per endpoint (default 100,000) and one embedded PostgreSQL
(in a temporary folder unless MOOVITAMIX_DATABASE_URL is set), then materializes the raw assets
(every page read, validated, rejects kept, COPY'd) through Dagster, each run in a fresh process so
that its peak RSS is its own, alternating:

* new: this checkout;
* old: a git worktree of the commit before the redesign (``--old``, default /tmp/old-ingest,
  made with ``git worktree add /tmp/old-ingest 751b892``), imported first through PYTHONPATH.
  That code needs pycurl and msgspec, which this project no longer installs:
  ``pip install pycurl msgspec`` into the environment that runs the benchmark.

Like the daily run, each run writes a day that is not stored yet: the previous run's rows of that
day are deleted and vacuumed before the clock starts. Prints each pair, the medians and the ratio
of the medians (target: new at most 1.5x the old wall time).

    python bench/bench_ingestion.py [--records 100000] [--repeat 3] [--old /tmp/old-ingest]
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2.errors

ENDPOINTS = ("users", "tracks", "listen_history")
HERE = Path(__file__).resolve().parent.parent


def forget_partition(database_url: str, partition: str) -> None:
    """Remove the partition's raw rows left by an earlier run, vacuum, checkpoint (untimed)."""
    from moovitamix_assets.warehouse.database import connect_psycopg2

    conn = connect_psycopg2(database_url)
    conn.autocommit = True  # VACUUM runs outside a transaction
    try:
        with conn.cursor() as cur:
            for endpoint in ENDPOINTS:
                cur.execute("SELECT to_regclass(%s)", (f"raw.{endpoint}",))
                if cur.fetchone()[0] is None:
                    continue
                cur.execute(f"DELETE FROM raw.{endpoint} WHERE snapshot_date = %s", (partition,))
                cur.execute(f"VACUUM raw.{endpoint}")
            with contextlib.suppress(psycopg2.errors.InsufficientPrivilege):
                cur.execute("CHECKPOINT")
    finally:
        conn.close()


def phase_ingest(url: str, partition: str) -> dict:
    """Materialize the raw assets of whichever code is first on the path; its figures."""
    import dagster as dg

    import moovitamix_assets

    try:
        from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
        from moovitamix_assets.defs.ingestion.assets import raw_assets
        from moovitamix_assets.warehouse.database import PostgresResource
        from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager
    except ImportError:  # the code before the redesign
        from moovitamix_assets.assets.raw.api_snapshots import raw_assets
        from moovitamix_assets.resources.api import MoovitamixApiResource
        from moovitamix_assets.resources.database import PostgresResource
        from moovitamix_assets.resources.io_manager import PostgresPandasIOManager

    postgres = PostgresResource(database_url=os.environ.get("MOOVITAMIX_DATABASE_URL"))
    resources = {
        "moovitamix_api": MoovitamixApiResource(base_url=url),
        "postgres": postgres,
        "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
    }
    postgres.engine()  # start the embedded server before the clock starts
    forget_partition(postgres.url(), partition)
    instance = dg.DagsterInstance.ephemeral()  # a deployment's instance exists before any run
    started = time.perf_counter()
    result = dg.materialize(
        raw_assets, resources=resources, partition_key=partition, instance=instance
    )
    wall = time.perf_counter() - started
    rows = sum(
        int(e.materialization.metadata["dagster/row_count"].value)
        for e in result.get_asset_materialization_events()
    )
    return {
        "code": str(Path(moovitamix_assets.__file__).parent.parent),
        "rows": rows,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_phase(code: Path, url: str, env: dict[str, str]) -> dict:
    env = {**env, "PYTHONPATH": str(code)}
    command = [sys.executable, __file__, "--phase", "ingest", "--url", url]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(figures["code"]) == code, f"ran {figures['code']}, not {code}"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3, help="old/new pairs to run")
    parser.add_argument("--old", type=Path, default=Path("/tmp/old-ingest"))
    parser.add_argument("--phase", choices=["ingest"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.phase:
        from moovitamix_assets.partitions import utc_today

        print(json.dumps(phase_ingest(args.url, utc_today().isoformat())))
        return
    if not (args.old / "moovitamix_assets").is_dir():
        sys.exit(f"no old code at {args.old}: git worktree add {args.old} 751b892")

    from moovitamix_api.server import run_subprocess
    from moovitamix_assets.warehouse.embedded_postgres import discard_embedded_postgres

    env = dict(os.environ)
    codes = {"old": args.old.resolve(), "new": HERE}
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="moovitamix-bench-") as tmp:
        env.setdefault("MOOVITAMIX_STATE_DIR", str(Path(tmp) / "state"))
        try:
            with run_subprocess(["--records", str(args.records), "--seed", str(args.seed)]) as api:
                print(f"stand-in: {args.records:,} records per endpoint at {api.base_url}")
                # Alternating, so that a drift of the shared machine's speed shows in both.
                for run in range(1, args.repeat + 1):
                    for name in ("old", "new"):
                        runs[name].append(run_phase(codes[name], api.base_url, env))
                    old, new = runs["old"][-1], runs["new"][-1]
                    print(
                        f"run {run}: old {old['wall_s']:.2f} s, new {new['wall_s']:.2f} s "
                        f"({new['wall_s'] / old['wall_s']:.2f}x)",
                        flush=True,
                    )
        finally:
            if env["MOOVITAMIX_STATE_DIR"].startswith(tmp):  # ours: stop it, drop its data
                discard_embedded_postgres(env["MOOVITAMIX_STATE_DIR"])
    print(f"\n{'code (median)':<16}{'rows':>10}{'wall s':>10}{'rows/s':>12}{'peak RSS MB':>14}")
    medians = {}
    for name, figures in runs.items():
        medians[name] = statistics.median(f["wall_s"] for f in figures)
        rows, rss = figures[0]["rows"], max(f["peak_rss_mb"] for f in figures)
        print(
            f"{name:<16}{rows:>10,}{medians[name]:>10.2f}{rows / medians[name]:>12,.0f}{rss:>14.0f}"
        )
    print(f"new / old wall time: {medians['new'] / medians['old']:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
