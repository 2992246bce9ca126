"""Time-based train/test split of the interactions: each user's most recent listens are held out."""

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class TrainTestSplit:
    """The two halves of a split and the counts an operator wants to see."""

    train: pd.DataFrame
    test: pd.DataFrame
    n_users_held_out: int

    def as_dict(self) -> dict[str, int]:
        n = len(self.train), len(self.test), self.n_users_held_out
        return dict(zip(("n_train", "n_test", "n_users_held_out"), n, strict=True))


def time_based_split(interactions: pd.DataFrame, holdout_per_user: int = 1) -> TrainTestSplit:
    """Hold out each user's most recent interactions (largest ``last_position``) as the test set.

    Every user keeps a training interaction (users with one are not split), so every held-out user
    is known to a model trained on ``train``.
    """
    # Ordering by (user, recency desc, track) makes the split deterministic even on ties; rows
    # are taken once through this order rather than sorting a full copy of the frame first.
    user = interactions["user_id"].to_numpy(dtype=np.int64)
    recency = interactions["last_position"].to_numpy(dtype=np.int64)
    order = np.lexsort((interactions["track_id"].to_numpy(dtype=np.int64), -recency, user))
    user_sorted = user[order]
    starts = np.flatnonzero(np.diff(user_sorted, prepend=user_sorted[:1] - 1))
    sizes = np.diff(np.r_[starts, len(order)])
    recency_rank = np.arange(len(order)) - np.repeat(starts, sizes)
    # Keep at least one training interaction per user; single-interaction users are not split.
    held_per_user = np.minimum(holdout_per_user, sizes - 1)
    is_test = recency_rank < np.repeat(held_per_user, sizes)

    return TrainTestSplit(
        train=interactions.take(order[~is_test]).reset_index(drop=True),
        test=interactions.take(order[is_test]).reset_index(drop=True),
        n_users_held_out=int(np.count_nonzero(held_per_user)),
    )
