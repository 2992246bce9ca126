"""Scale benchmark: the whole daily run (raw, core, recommendations) at several sizes.

For each size (records per endpoint; listening lists average 5 tracks, so 1,000,000 records mean
about 5,000,000 listening pairs) it starts the API stand-in, then materializes the daily graph one
step at a time (one asset, or the assets of a multi-asset step such as the three raw snapshots), in
topological order, each in a fresh process (so that wall time and peak RSS are that step's own),
through the project's own `defs` and resources, against a PostgreSQL in a temporary folder (or
MOOVITAMIX_DATABASE_URL). Prints a table per size, then each step's growth from 100k to 1M and
the whole graph's. Targets (issue 17): every step at most linear in its input, i.e. no step grows
more than 11x (flagged ``> 11x``) and none peaks at 1 GB RSS or more (flagged ``RSS``); the whole
graph at 1M within 10x its 100k time and under 240 s. After the graph, ``ml/candidate_model`` runs
once more (``... again``, outside the total): from the second day on, a trained model serves and
is scored beside the candidate.

    python bench/bench_scale.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Issue 17's targets: a step growing more than 11x from 100k to 1M records is not linear in its
# input; every step's process stays under 1 GB; the whole graph at 1M runs in under 240 s.
MAX_STEP_GROWTH = 11.0
MAX_RSS_MB = 1024.0
MAX_TOTAL_S_AT_1M = 240.0
# Run once more after the graph (see bench_size), outside the total.
SECOND_DAY_STEP = "ml/candidate_model"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_step(step: str, partition: str) -> dict:
    """Materialize one step's assets (comma-separated keys) with their checks, in this process."""
    import dagster as dg

    from moovitamix_assets.definitions import defs

    started = time.perf_counter()
    keys = [dg.AssetKey.from_user_string(key) for key in step.split(",")]
    selection = dg.AssetSelection.assets(*keys)
    partitioned = defs.resolve_assets_def(keys[0]).partitions_def
    result = dg.materialize(
        [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
        selection=selection,
        resources=dict(defs.resources or {}),
        partition_key=partition if partitioned else None,
        raise_on_error=False,
    )
    rows = None
    for event in result.get_asset_materialization_events():
        value = event.materialization.metadata.get("dagster/row_count")
        rows = value.value if value is not None else rows
    return {
        "success": result.success,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "rows": rows,
    }


def step_order() -> list[str]:
    """The daily graph's steps, upstream first: the comma-separated keys each one materializes."""
    from moovitamix_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    steps: dict[str, list[str]] = {}  # node name -> keys, in first-seen (topological) order
    for key in graph.toposorted_asset_keys:
        if graph.get(key).is_materializable:
            node = defs.resolve_assets_def(key).node_def.name
            steps.setdefault(node, []).append(key.to_user_string())
    return [",".join(keys) for keys in steps.values()]


def bench_size(records: int, env: dict[str, str], partition: str) -> list[dict]:
    from moovitamix_api.server import run_subprocess

    rows = []
    with run_subprocess(["--records", str(records), "--seed", "42"]) as api:
        env = {**env, "MOOVITAMIX_API_URL": api.base_url}
        # From the second day on, the model promoted on the first serves and is scored beside
        # each new candidate: its factors are memory that the first day's run never holds.
        steps = step_order()
        for i, key in enumerate([*steps, SECOND_DAY_STEP]):
            again = i == len(steps)
            out = subprocess.run(
                [sys.executable, __file__, "--step", key, "--partition", partition],
                env=env,
                capture_output=True,
                text=True,
            )
            lines = out.stdout.strip().splitlines()
            if out.returncode != 0 or not lines:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"step {key} crashed at {records:,} records")
            figures = json.loads(lines[-1])
            figures["key"] = f"{key} again" if again else key
            figures["in_total"] = not again
            rows.append(figures)
            status = "ok" if figures["success"] else "FAILED"
            print(
                f"  {records:>9,}  {figures['key'][:48]:<48}{figures['wall_s']:>8.1f} s"
                f"{figures['peak_rss_mb']:>9.0f} MB  {status}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--step")
    parser.add_argument("--partition")
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.partition)))
        return

    from moovitamix_assets.partitions import utc_today
    from moovitamix_assets.warehouse.embedded_postgres import discard_embedded_postgres

    partition = utc_today().isoformat()
    results: dict[int, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="moovitamix-scale-") as tmp:
        env = dict(os.environ)
        env.setdefault("MOOVITAMIX_STATE_DIR", str(Path(tmp) / "state"))
        env.setdefault("DAGSTER_HOME", tmp)
        for size in args.sizes:
            # Each size starts from empty tables: a fresh state folder (or scratch schemas).
            env["MOOVITAMIX_STATE_DIR"] = str(Path(tmp) / f"state-{size}")
            try:
                results[size] = bench_size(size, env, partition)
            finally:
                discard_embedded_postgres(env["MOOVITAMIX_STATE_DIR"])  # its server and data

    growth = 100_000 in results and 1_000_000 in results
    header = "".join(f"{s:>14,}" for s in args.sizes) + ("  1M/100k" if growth else "")
    print(f"\n{'step':<48}{header}   (wall s / peak MB)")
    keys = [r["key"] for r in results[args.sizes[0]]]
    for i, key in enumerate(keys):
        cells = "".join(
            f"{results[s][i]['wall_s']:>7.1f}/{results[s][i]['peak_rss_mb']:>6.0f}"
            for s in args.sizes
        )
        if growth:
            ratio = results[1_000_000][i]["wall_s"] / results[100_000][i]["wall_s"]
            cells += f"{ratio:>8.1f}x" + ("  > 11x" if ratio > MAX_STEP_GROWTH else "")
        flags = [s for s in args.sizes if results[s][i]["peak_rss_mb"] >= MAX_RSS_MB]
        cells += "".join(f"  RSS >= 1 GB at {s:,}" for s in flags)
        print(f"{key[:48]:<48}{cells}")
    totals = {s: sum(r["wall_s"] for r in results[s] if r["in_total"]) for s in args.sizes}
    print(f"{'total wall s':<48}" + "".join(f"{totals[s]:>14.1f}" for s in args.sizes))
    if growth:
        print(
            f"1M / 100k wall time: {totals[1_000_000] / totals[100_000]:.1f}x (target <= 10x, "
            f"and under {MAX_TOTAL_S_AT_1M:.0f} s at 1M: {totals[1_000_000]:.0f} s)"
        )
    if 1_000_000 in results:
        peak = max(r["peak_rss_mb"] for r in results[1_000_000])
        print(f"peak RSS at 1M: {peak:.0f} MB (target < {MAX_RSS_MB:.0f} MB per step)")


if __name__ == "__main__":
    main()
