"""Ingestion benchmark: the platform's raw ingestion against a bare read of the same pages.

Starts the API stand-in with N records per endpoint (default 100,000), then, each in a fresh
process so that peak RSS is its own:

* ceiling: a bare concurrent read of every page of the three endpoints (JSON parsed, nothing kept,
  nothing validated, nothing stored) with the client's own transport (``resources/transport.py``)
  and concurrency;
* ingestion: the raw assets materialized through Dagster into PostgreSQL (embedded in a temporary
  folder unless MOOVITAMIX_DATABASE_URL is set): pagination, validation, rejects, COPY. Like the
  daily run, each run writes a day that is not stored yet: the previous run's rows of that day
  are deleted and vacuumed before the clock starts.

Runs the two phases alternately (``--repeat`` pairs, 5 by default) and prints each pair's ratio,
then the median rows/s, wall seconds and the peak RSS of each phase, and the ratio of the medians
(target: ingestion >= 70% of the ceiling's rows/s).

    python bench/bench_ingestion.py [--records 100000]
"""

from __future__ import annotations

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2.errors
import urllib3

from moovitamix_api.server import run_subprocess
from moovitamix_assets.constants import ENDPOINTS
from moovitamix_assets.resources.embedded_postgres import discard_embedded_postgres
from moovitamix_assets.resources.transport import NO_RETRY, Connections, page_path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_ceiling(url: str, concurrency: int) -> dict:
    # The platform's own transport (the same host pool and request path, `concurrency`
    # connections), so that the ceiling is what any client could read, not what a slower client
    # stack allows.
    connections = Connections(url, concurrency)
    timeout = urllib3.Timeout(connect=5, read=30)
    rows = 0
    started = time.perf_counter()
    for endpoint in ENDPOINTS:

        def fetch(page: int, endpoint: str = endpoint) -> int:
            response = connections.get(page_path(endpoint, page, 100), NO_RETRY, timeout)
            assert response.status == 200, response.status
            return len(json.loads(response.data)["items"])

        first = json.loads(connections.get(page_path(endpoint, 1, 100), NO_RETRY, timeout).data)
        rows += len(first["items"])
        with ThreadPoolExecutor(concurrency) as threads:
            rows += sum(threads.map(fetch, range(2, first["pages"] + 1)))
    wall = time.perf_counter() - started
    return {"rows": rows, "wall_s": wall, "peak_rss_mb": peak_rss_mb()}


def forget_partition(database_url: str, partition: str) -> None:
    """Remove the partition's raw rows left by an earlier run, vacuum, checkpoint (untimed).

    The daily run writes a day that is not stored yet. Without this, every run after the first
    would also delete the previous run's rows, and the autovacuum of those rows would run
    during the next phase (usually the next ceiling), slowing whichever phase it lands in.
    """
    from moovitamix_assets.resources.database import connect_psycopg2

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
            # A server of one's own may not grant pg_checkpoint: vacuumed is enough then.
            with contextlib.suppress(psycopg2.errors.InsufficientPrivilege):
                cur.execute("CHECKPOINT")
    finally:
        conn.close()


def phase_ingest(url: str, partition: str) -> dict:
    import dagster as dg

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
    # A deployment's instance exists before any run: create it before the clock starts too.
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    result = dg.materialize(
        raw_assets, resources=resources, partition_key=partition, instance=instance
    )
    wall = time.perf_counter() - started
    rows = sum(
        int(m.metadata["dagster/row_count"].value)
        for m in (e.materialization for e in result.get_asset_materialization_events())
    )
    return {"rows": rows, "wall_s": wall, "peak_rss_mb": peak_rss_mb()}


def run_phase(phase: str, url: str, env: dict[str, str], concurrency: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--phase",
            phase,
            "--url",
            url,
            "--concurrency",
            str(concurrency),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5, help="ceiling/ingestion pairs to run")
    parser.add_argument("--phase", choices=["ceiling", "ingest"])
    parser.add_argument("--url")
    args = parser.parse_args()

    if args.phase == "ceiling":
        print(json.dumps(phase_ceiling(args.url, args.concurrency)))
        return
    if args.phase == "ingest":
        from moovitamix_assets.partitions import utc_today

        print(json.dumps(phase_ingest(args.url, utc_today().isoformat())))
        return

    env = dict(os.environ)
    pairs: list[tuple[dict, dict]] = []
    with tempfile.TemporaryDirectory(prefix="moovitamix-bench-") as tmp:
        env.setdefault("MOOVITAMIX_STATE_DIR", str(Path(tmp) / "state"))
        try:
            with run_subprocess(["--records", str(args.records), "--seed", str(args.seed)]) as api:
                print(f"stand-in: {args.records:,} records per endpoint at {api.base_url}")
                # The two phases alternate, so that a change in the machine's speed between runs
                # (a shared host drifts by tens of percent) shows in both, not in one.
                for run in range(1, args.repeat + 1):
                    ceiling = run_phase("ceiling", api.base_url, env, args.concurrency)
                    ingest = run_phase("ingest", api.base_url, env, args.concurrency)
                    pairs.append((ceiling, ingest))
                    print(
                        f"run {run}: ceiling {ceiling['wall_s']:.2f} s, ingestion "
                        f"{ingest['wall_s']:.2f} s, ratio {ratio(ceiling, ingest):.0%}",
                        flush=True,
                    )
        finally:
            if env["MOOVITAMIX_STATE_DIR"].startswith(tmp):  # ours: stop it, drop its data
                discard_embedded_postgres(env["MOOVITAMIX_STATE_DIR"])
    print(f"\n{'phase (median)':<16}{'rows':>10}{'wall s':>10}{'rows/s':>12}{'peak RSS MB':>14}")
    medians = []
    for name, index in (("ceiling", 0), ("ingestion", 1)):
        figures = [pair[index] for pair in pairs]
        wall = statistics.median(f["wall_s"] for f in figures)
        rss = max(f["peak_rss_mb"] for f in figures)
        rows = figures[0]["rows"]
        medians.append({"rows": rows, "wall_s": wall})
        print(f"{name:<16}{rows:>10,}{wall:>10.2f}{rows / wall:>12,.0f}{rss:>14.0f}")
    each = ", ".join(f"{ratio(c, i):.0%}" for c, i in pairs)
    print(
        f"ingestion / ceiling rows/s: {ratio(*medians):.0%} of the medians "
        f"(each run: {each}; target >= 70%)"
    )


def ratio(ceiling: dict, ingest: dict) -> float:
    """Ingestion rows/s as a share of the ceiling's."""
    return (ingest["rows"] / ingest["wall_s"]) / (ceiling["rows"] / ceiling["wall_s"])


if __name__ == "__main__":
    main()
