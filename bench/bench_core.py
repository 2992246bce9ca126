"""Core merge benchmark: one day's merge of 100,000 users, 100,000 tracks and ~500,000 listening
pairs on top of an existing day.

Generates two consecutive days with the stand-in's generator (in process, no HTTP), stores both as
raw snapshots (COPY, as the raw layer does), merges day 1 (the existing state), then merges day 2,
each core asset in a fresh process so that peak RSS is its own. Prints wall seconds, the Python
process's peak RSS and the PostgreSQL backend's peak RSS (VmHWM, when /proc shows it) per asset,
then the time to read ``core.user_track_interactions`` whole (a view: the recommender's read).

Uses an embedded PostgreSQL in a temporary folder (stopped at the end), or ``--database-url``
(a scratch database: the raw and core schemas are dropped first).

    python bench/bench_core.py [--records 100000] [--mean-listens 5.3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

# Run as a script from anywhere: the raw loader lives with the tests, beside the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ASSETS = ("users", "tracks", "listen_events", "user_track_interactions")
DAY1 = date(2026, 11, 1)
DAY2 = DAY1 + timedelta(days=1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backend_peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def phase_merge(url: str, asset: str, day: date) -> dict:
    """Run one core asset's work for ``day`` and measure it (in its own process)."""
    import sqlalchemy as sa
    from moovitamix_assets.assets.core import merge

    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:  # the merge below reuses this pooled connection
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    started = time.perf_counter()
    if asset == "user_track_interactions":
        result = merge.rebuild_interactions(engine)
    else:
        result = getattr(merge, f"merge_{asset}")(engine, day)
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
        "backend_peak_mb": backend_peak_mb(pid),
        "rows_total": result.rows_total,
        "counts": result.counts,
    }


def read_interactions(url: str) -> tuple[int, float]:
    """Read the interactions whole as the model layer does (COPY, CSV); return rows, seconds."""
    import io

    import sqlalchemy as sa

    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    try:
        buffer = io.StringIO()
        started = time.perf_counter()
        with raw.driver_connection.cursor() as cur:
            cur.copy_expert(
                "COPY (SELECT * FROM core.user_track_interactions) TO STDOUT WITH (FORMAT csv)",
                buffer,
            )
        seconds = time.perf_counter() - started
    finally:
        raw.close()
        engine.dispose()
    return buffer.getvalue().count("\n"), seconds


def run_phase(url: str, asset: str, day: date) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", asset, "--url", url, "--day", day.isoformat()],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(url: str, records: int, mean_listens: float, seed: int) -> None:
    import sqlalchemy as sa

    from moovitamix_api.config import DataConfig
    from moovitamix_api.data import Dataset
    from moovitamix_assets_tests.defs.core.raw_tables import load_raw_snapshot

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS core CASCADE"))
        conn.execute(sa.text("DROP SCHEMA IF EXISTS raw CASCADE"))
    dataset = Dataset(DataConfig(records=records, seed=seed, mean_listens=mean_listens))
    for day in (DAY1, DAY2):
        started = time.perf_counter()
        rows = {
            endpoint: load_raw_snapshot(engine, endpoint, day, dataset.iter_records(endpoint, day))
            for endpoint in ("users", "tracks", "listen_history")
        }
        print(f"raw {day}: {rows} generated and stored in {time.perf_counter() - started:.1f} s")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--mean-listens", type=float, default=5.3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--database-url", help="a scratch database (raw and core are dropped)")
    parser.add_argument("--phase", choices=ASSETS)
    parser.add_argument("--url")
    parser.add_argument("--day")
    args = parser.parse_args()

    if args.phase:
        print(json.dumps(phase_merge(args.url, args.phase, date.fromisoformat(args.day))))
        return

    from moovitamix_assets.resources.database import normalize_database_url
    from moovitamix_assets.resources.embedded_postgres import (
        discard_embedded_postgres,
        start_embedded_postgres,
    )

    with tempfile.TemporaryDirectory(prefix="moovitamix-bench-core-") as tmp:
        server = None
        if args.database_url:
            url = normalize_database_url(args.database_url).render_as_string(hide_password=False)
        else:
            server = start_embedded_postgres(Path(tmp) / "state")
            url = server.url()
        try:
            prepare(url, args.records, args.mean_listens, args.seed)
            for asset in ASSETS:
                run_phase(url, asset, DAY1)
            print(f"day {DAY1} merged (the existing state); merging day {DAY2}:")
            figures = {asset: run_phase(url, asset, DAY2) for asset in ASSETS}
            read_rows, read_seconds = read_interactions(url)
        finally:
            if server is not None:
                discard_embedded_postgres(Path(tmp) / "state")
    print(f"{'core asset':<26}{'rows':>10}{'wall s':>9}{'py RSS MB':>11}{'pg RSS MB':>11}  changes")
    for asset, fig in figures.items():
        counts = fig["counts"]
        changes = ", ".join(
            f"{k} {counts[k]:,}"
            for k in (
                "snapshot_pairs",
                "changed_histories",
                "inserted",
                "updated",
                "inactivated",
                "deleted",
                "list_lengths_written",
                "track_active_updated",
            )
            if k in counts
        )
        backend = fig["backend_peak_mb"]
        print(
            f"{asset:<26}{fig['rows_total']:>10,}{fig['wall_s']:>9.2f}{fig['peak_rss_mb']:>11.0f}"
            f"{backend if backend is None else round(backend):>11}  {changes}"
        )
    total = sum(fig["wall_s"] for fig in figures.values())
    print(f"daily core merge, all assets: {total:.2f} s wall")
    print(f"reading core.user_track_interactions whole: {read_rows:,} rows in {read_seconds:.2f} s")


if __name__ == "__main__":
    main()
