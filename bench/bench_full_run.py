"""Full-run benchmark: `dagster asset materialize --select '*'` of this tree and an older one.

Both trees read the same API stand-in (started once, from this tree) and write to their own
database of one embedded PostgreSQL, from empty tables. Each run is one whole
`dagster asset materialize` process (Dagster's start included), timed from outside; its peak RSS
is that of the largest process of the run (the command and any step process it starts).

    git worktree add /tmp/old-tree 751b892
    python bench/bench_full_run.py --old-tree /tmp/old-tree --records 1000000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


def run_tree(tree: Path, url: str, api_url: str, partition: str, home: Path) -> dict:
    """One whole materialize of every asset with ``tree`` first on the path; wall s, peak MB."""
    env = {
        **os.environ,
        # The tree on PYTHONPATH wins over the editable install of this checkout.
        "PYTHONPATH": str(tree),
        "MOOVITAMIX_DATABASE_URL": url,
        "MOOVITAMIX_API_URL": api_url,
        "DAGSTER_HOME": str(home),
        "MOOVITAMIX_STATE_DIR": str(home / "state"),
        "MOOVITAMIX_FIRST_DAY": partition,
    }
    home.mkdir(parents=True, exist_ok=True)
    command = [
        *(sys.executable, "-m", "dagster", "asset", "materialize"),
        *("-m", "moovitamix_assets.definitions", "--select", "*", "--partition", partition),
    ]
    started = time.perf_counter()
    log = home / "materialize.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, cwd=tree, stdout=out, stderr=out)
        # wait4's usage covers the command and every process it waited for (RUSAGE_BOTH).
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    return {"ok": status == 0, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old-tree", type=Path, required=True, help="checkout of the old code")
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()

    from moovitamix_api.server import run_subprocess
    from moovitamix_assets.partitions import utc_today
    from moovitamix_assets.warehouse.embedded_postgres import (
        discard_embedded_postgres,
        start_embedded_postgres,
    )

    trees = {"new": ROOT, "old": args.old_tree.resolve()}
    partition = utc_today().isoformat()
    with tempfile.TemporaryDirectory(prefix="moovitamix-full-run-") as tmp:
        state = Path(tmp) / "pg"
        server = start_embedded_postgres(state)
        try:
            admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for name in trees:
                    conn.execute(sa.text(f"CREATE DATABASE full_{name}"))
            admin.dispose()
            figures = {}
            with run_subprocess(["--records", str(args.records), "--seed", "42"]) as api:
                for name, tree in trees.items():
                    home = Path(tmp) / name
                    url = server.url(f"full_{name}")
                    figures[name] = run_tree(tree, url, api.base_url, partition, home)
                    f = figures[name]
                    print(
                        f"{name}: {'ok' if f['ok'] else 'FAILED'} in {f['wall_s']:.1f} s, "
                        f"peak RSS {f['peak_rss_mb']:.0f} MB",
                        flush=True,
                    )
        finally:
            discard_embedded_postgres(state)
    ratio = figures["new"]["wall_s"] / figures["old"]["wall_s"]
    print(
        f"\n{args.records:,} records per endpoint, whole graph: new / old = {ratio:.2f}x "
        "(target <= 1.5x); peak RSS target < 2048 MB"
    )


if __name__ == "__main__":
    main()
