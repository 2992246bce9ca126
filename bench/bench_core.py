"""Core merge benchmark: the daily merge of this tree's core layer against an older tree's.

Generates consecutive days with the stand-in's generator (in process, no HTTP), stores them as raw
snapshots (COPY, as the raw layer does) in one database, copies that database for each tree, then
merges day after day: day 1 builds the state, the following days are the daily merges measured.
Each core asset runs in a fresh process (peak RSS is its own); the old tree's run with PYTHONPATH
pointing at it. The two trees alternate day by day on the same server, so a noisy neighbour
weighs on both. Prints wall seconds per asset and day, both totals and their ratio.

Uses an embedded PostgreSQL in a temporary folder (stopped and deleted at the end).

    python bench/bench_core.py --old-tree /tmp/old-core [--records 100000] [--days 4]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ("users", "tracks", "listen_events", "user_track_interactions")
DAY1 = date(2026, 11, 1)


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: Linux carries that one over
    from the parent across fork and exec (the parent holds the generated records)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phase_merge(url: str, asset: str, day: date) -> dict:
    """Run one core asset's work for ``day`` with whichever tree is importable; measure it."""
    import sqlalchemy as sa

    import moovitamix_assets

    # Decided by the tree on PYTHONPATH: the editable install's finder would find defs/ anyway.
    if (Path(moovitamix_assets.__file__).parent / "defs" / "core").is_dir():
        from moovitamix_assets.defs.core import assets as merge
    else:  # the tree before the redesign
        from moovitamix_assets.assets.core import merge

    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    started = time.perf_counter()
    if asset == "user_track_interactions":
        build = getattr(merge, "interaction_figures", None) or merge.rebuild_interactions
        result = build(engine)
    else:
        result = getattr(merge, f"merge_{asset}")(engine, day)
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "rows_total": result.rows_total,
        "module": merge.__file__,
    }


def run_phase(url: str, asset: str, day: date, tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--phase", asset, "--url", url, "--day", day.isoformat()],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    if not figures["module"].startswith(str(tree)):
        raise RuntimeError(f"{tree} ran {figures['module']}")
    return figures


def prepare(server, records: int, days: list[date], seed: int) -> None:
    """Store the raw days in database ``bench_old`` and copy it to ``bench_new``."""
    import sqlalchemy as sa

    sys.path.insert(0, str(ROOT))
    from moovitamix_api.config import DataConfig
    from moovitamix_api.data import Dataset
    from moovitamix_assets_tests.defs.core.raw_tables import load_raw_snapshot

    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in ("bench_old", "bench_new"):
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text("CREATE DATABASE bench_old"))
    engine = sa.create_engine(server.url("bench_old"))
    dataset = Dataset(DataConfig(records=records, seed=seed))
    for day in days:
        started = time.perf_counter()
        rows = {
            endpoint: load_raw_snapshot(engine, endpoint, day, dataset.iter_records(endpoint, day))
            for endpoint in ("users", "tracks", "listen_history")
        }
        print(f"raw {day}: {rows} generated and stored in {time.perf_counter() - started:.1f} s")
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE bench_new TEMPLATE bench_old"))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old-tree", type=Path, required=False, help="checkout of the old code")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=4, help="day 1 builds the state")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--phase", choices=ASSETS)
    parser.add_argument("--url")
    parser.add_argument("--day")
    args = parser.parse_args()

    if args.phase:
        print(json.dumps(phase_merge(args.url, args.phase, date.fromisoformat(args.day))))
        return

    sys.path.insert(0, str(ROOT))
    from moovitamix_assets.warehouse.embedded_postgres import (
        discard_embedded_postgres,
        start_embedded_postgres,
    )

    trees = {"new": ROOT}
    if args.old_tree:
        trees["old"] = args.old_tree.resolve()
    days = [DAY1 + timedelta(days=i) for i in range(args.days)]
    figures: dict[str, dict[date, dict[str, dict]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory(prefix="moovitamix-bench-core-") as tmp:
        state = Path(tmp) / "state"
        server = start_embedded_postgres(state)
        try:
            prepare(server, args.records, days, args.seed)
            for day in days:
                for name, tree in trees.items():
                    url = server.url(f"bench_{name}")
                    figures[name][day] = {a: run_phase(url, a, day, tree) for a in ASSETS}
                    total = sum(f["wall_s"] for f in figures[name][day].values())
                    print(
                        f"{day} {name}: "
                        + ", ".join(
                            f"{a} {f['wall_s']:.2f} s" for a, f in figures[name][day].items()
                        )
                        + f"; total {total:.2f} s",
                        flush=True,
                    )
        finally:
            discard_embedded_postgres(state)

    daily = days[1:]
    print(
        f"\ndaily core merge at {args.records:,} records per endpoint, days {daily[0]} to "
        f"{daily[-1]} (wall s, mean over the days; peak RSS of the Python process):"
    )
    print(f"{'asset':<26}" + "".join(f"{name:>10}{'MB':>7}" for name in trees))
    totals = {name: 0.0 for name in trees}
    for asset in ASSETS:
        line = f"{asset:<26}"
        for name in trees:
            walls = [figures[name][d][asset]["wall_s"] for d in daily]
            rss = max(figures[name][d][asset]["peak_rss_mb"] for d in daily)
            totals[name] += sum(walls) / len(walls)
            line += f"{sum(walls) / len(walls):>10.2f}{rss:>7.0f}"
        print(line)
    print(f"{'total':<26}" + "".join(f"{totals[name]:>10.2f}{'':>7}" for name in trees))
    if "old" in totals:
        print(f"new / old: {totals['new'] / totals['old']:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
