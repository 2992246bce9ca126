"""The promotion gate's verdicts on the stand-in's data, structureless and taste-structured.

    python bench/bench_gate.py                       # 1,500 to 30,000 users, five seeds each
    python bench/bench_gate.py --sizes 1500 --seeds 1 2

For each size and seed, one day of the stand-in's data is turned into interactions (play count,
recency weight and last position, as core computes them), split like `ml/evaluation_holdout`,
and the ALS candidate is judged against the genre-aware popularity fallback exactly as
`ml/candidate_model` does. Prints one verdict per line and, per kind of data, how many candidates
were promoted. On structureless data none should be; on taste-structured data all should.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np
import pandas as pd

from moovitamix_api.config import DataConfig
from moovitamix_api.data import Dataset
from moovitamix_assets.ml.gating import GateSettings, decide_promotion
from moovitamix_assets.ml.models import AlsParams, FallbackModel
from moovitamix_assets.ml.pipeline import CANDIDATE, SERVING, train_and_evaluate
from moovitamix_assets.ml.split import time_based_split

DAY = dt.date(2026, 12, 6)


def interactions_of(dataset: Dataset) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users, tracks and interactions of one served day, weighted as core weights them."""
    users = pd.DataFrame(dataset.records("users"))[["id", "favorite_genres"]]
    tracks = pd.DataFrame(dataset.records("tracks"))[["id", "genres"]]
    histories = [h for h in dataset.records("listen_history") if h["user_id"] and h["items"]]
    lengths = np.array([len(h["items"]) for h in histories], dtype=np.int64)
    events = pd.DataFrame(
        {
            "user_id": np.repeat([h["user_id"] for h in histories], lengths),
            "track_id": np.concatenate([h["items"] for h in histories]) if histories else [],
            "position": np.concatenate([np.arange(n) for n in lengths]) if histories else [],
            "list_length": np.repeat(lengths, lengths),
        }
    )
    pairs = (
        events.groupby(["user_id", "track_id"])
        .agg(
            play_count=("position", "size"),
            last_position=("position", "max"),
            list_length=("list_length", "first"),
        )
        .reset_index()
    )
    pairs["weight"] = (1.0 + np.log(pairs["play_count"])) * (
        0.5 + 0.5 * pairs["last_position"] / pairs["list_length"].clip(lower=1)
    )
    return users.drop_duplicates("id"), tracks.drop_duplicates("id"), pairs


def judge(users: int, seed: int, structureless: bool) -> bool:
    taste = {"favourite_share": 0.0, "zipf_exponent": 0.0} if structureless else {}
    config = DataConfig(seed=seed, records=users, day=DAY, **taste)
    started = time.perf_counter()
    user_frame, tracks, interactions = interactions_of(Dataset(config))
    split = time_based_split(interactions, holdout_per_user=1)
    params = AlsParams()
    _, metrics = train_and_evaluate(
        split.train, split.test, user_frame, tracks, params, 10, FallbackModel
    )
    decision = decide_promotion(
        metrics[CANDIDATE],
        metrics[SERVING],
        "the fallback",
        GateSettings(seed=params.random_state),
    )
    kind = "structureless" if structureless else "taste"
    print(
        f"{kind:<13} {users:>7,} users  seed {seed}  {time.perf_counter() - started:5.1f} s  "
        f"{decision.reason}",
        flush=True,
    )
    return decision.promote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_500, 5_000, 30_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    for structureless in (True, False):
        promoted = [judge(n, s, structureless) for n in args.sizes for s in args.seeds]
        kind = "structureless" if structureless else "taste-structured"
        print(f"{kind}: {sum(promoted)} of {len(promoted)} candidates promoted\n", flush=True)


if __name__ == "__main__":
    main()
