"""Benchmark of the recommendation core at production scale (prints figures; not a test).

Default scale: 100,000 users, 50,000 tracks, 5,000,000 structured synthetic interactions.
Stages: data generation, time-based split, matrix build, ALS training, top-k for every user,
evaluation of ALS and both popularity baselines on the same held-out listens. Peak RSS is the
whole process's high-water mark after each stage.

    python bench/bench_recommendations.py [--users N --tracks N --interactions N ...]
"""

import argparse
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pandas as pd
import psutil

from moovitamix_assets.ml.evaluation import evaluate, evaluate_on_holdout
from moovitamix_assets.ml.models import (
    AlsParams,
    fit_popularity,
    known_items_matrix,
    train_als,
    unique_ids,
)
from moovitamix_assets.ml.pipeline import recommendation_batches
from moovitamix_assets.ml.split import time_based_split
from moovitamix_assets_tests.synthetic import make_synthetic_dataset

_PROCESS = psutil.Process()
_timings: dict[str, float] = {}


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@contextmanager
def stage(name: str) -> Iterator[None]:
    cpu_start = time.process_time()
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    _timings[name] = elapsed
    rss = _PROCESS.memory_info().rss / 2**20
    print(
        f"{name:<32} {elapsed:7.2f} s wall {cpu:7.2f} s cpu   "
        f"rss {rss:6.0f} MB   peak {_peak_rss_mb():6.0f} MB"
    )


def main() -> None:
    defaults = AlsParams()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--factors", type=int, default=defaults.factors)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--alpha", type=float, default=defaults.alpha)
    parser.add_argument("--regularization", type=float, default=defaults.regularization)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = AlsParams(
        factors=args.factors,
        regularization=args.regularization,
        alpha=args.alpha,
        iterations=args.iterations,
        random_state=defaults.random_state,
    )
    print(
        f"scale: {args.users:,} users, {args.tracks:,} tracks, {args.interactions:,} interactions"
    )
    print(f"params: {params.as_dict()}")
    print(f"cores: {psutil.cpu_count()}, load average at start: {psutil.getloadavg()[0]:.2f}")
    k = args.k

    with stage("generate synthetic data"):
        data = make_synthetic_dataset(
            args.users, args.tracks, args.interactions, structured=True, seed=args.seed
        )
        users, tracks, interactions = data.users, data.tracks, data.interactions
        del data
    print(f"  interactions: {len(interactions):,}")
    with stage("time-based split"):
        split = time_based_split(interactions)
        train, test = split.train, split.test
        del interactions, split
    print(f"  train {len(train):,}, test {len(test):,}")
    with stage("build CSR matrix"):
        ids = unique_ids(train["user_id"]), unique_ids(train["track_id"])
        matrix = known_items_matrix(train, *ids, 1.0 + params.alpha * train["weight"].to_numpy())
    print(f"  matrix {matrix.shape}, nnz {matrix.nnz:,}")
    del matrix  # training builds its own; this stage times the construction alone
    with stage("train ALS"):
        model = train_als(train, params)
    with stage("fit popularity baselines"):
        popularity = fit_popularity(train, tracks)
        cold_start = fit_popularity(train, tracks, users)
    with stage(f"top-{k} for every user"):
        # The whole catalogue as the candidate pool: every track the model knows is ranked.
        now = datetime.now(timezone.utc)
        batches = recommendation_batches(
            model, 1, users, tracks, train, k, now, candidate_pool_size=len(tracks)
        )
        recs = pd.concat(list(batches), ignore_index=True)
    per_user = recs.groupby("user_id").size()
    print(
        f"  {len(recs):,} rows for {len(per_user):,} users, exactly {k} each: "
        f"{bool((per_user == k).all())}; sources {recs['source'].value_counts().to_dict()}"
    )
    with stage("evaluate ALS"):
        als_metrics = evaluate(recs, test, len(tracks), k)
    del recs, per_user
    with stage("recommend + evaluate baselines"):
        baselines = evaluate_on_holdout(
            {"popularity": popularity, "genre_popularity": cold_start},
            train,
            test,
            len(tracks),
            k,
        )

    print()
    print(f"{'model':<18} {'P@k':>8} {'R@k':>8} {'MAP@k':>8} {'NDCG@k':>8} {'coverage':>9}")
    for name, metrics in [("als", als_metrics), *baselines.items()]:
        print(
            f"{name:<18} {metrics.precision_at_k:8.4f} {metrics.recall_at_k:8.4f} "
            f"{metrics.map_at_k:8.4f} {metrics.ndcg_at_k:8.4f} {metrics.coverage:9.4f}"
        )
    train_and_recommend = _timings["train ALS"] + _timings[f"top-{k} for every user"]
    lift = als_metrics.precision_at_k / max(baselines["popularity"].precision_at_k, 1e-12)
    print()
    print(f"users evaluated:                  {als_metrics.n_users_evaluated:,}")
    print(f"train + recommend for every user: {train_and_recommend:.1f} s wall (target < 60 s)")
    print(f"peak RSS of the whole run:        {_peak_rss_mb():.0f} MB (target < 1024 MB)")
    print(f"ALS precision@{k} / popularity:    {lift:.2f}x (target >= 2x)")
    print(f"load average at end:              {psutil.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
