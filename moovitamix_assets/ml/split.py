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

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test)

    def as_dict(self) -> dict[str, int]:
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_users_held_out": self.n_users_held_out,
        }


def time_based_split(
    interactions: pd.DataFrame,
    holdout_per_user: int = 1,
    holdout_fraction: float | None = None,
) -> TrainTestSplit:
    """Hold out each user's most recent interactions (largest ``last_position``) as the test set.

    ``holdout_fraction`` holds out ``max(1, floor(fraction * n))`` of a user's n interactions
    instead of ``holdout_per_user``. Every user keeps a training interaction (users with one are
    not split), so every held-out user is known to a model trained on ``train``.
    """
    if holdout_fraction is None and holdout_per_user < 1:
        raise ValueError(f"holdout_per_user must be >= 1, got {holdout_per_user}")
    if holdout_fraction is not None and not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")

    if len(interactions) == 0:
        empty = interactions.iloc[0:0].reset_index(drop=True)
        return TrainTestSplit(train=empty, test=empty.copy(), n_users_held_out=0)

    # Ordering by (user, recency desc, track) makes the split deterministic even on ties; rows
    # are taken once through this order rather than sorting a full copy of the frame first.
    user = interactions["user_id"].to_numpy(dtype=np.int64)
    order = np.lexsort(
        (
            interactions["track_id"].to_numpy(dtype=np.int64),
            -interactions["last_position"].to_numpy(dtype=np.int64),
            user,
        )
    )
    user_sorted = user[order]
    starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    recency_rank = np.arange(len(order)) - np.repeat(starts, sizes)

    if holdout_fraction is None:
        wanted = np.full(len(sizes), holdout_per_user, dtype=np.int64)
    else:
        wanted = np.maximum(1, np.floor(holdout_fraction * sizes).astype(np.int64))
    # Keep at least one training interaction per user; single-interaction users are not split.
    held_per_user = np.minimum(wanted, sizes - 1)
    is_test = recency_rank < np.repeat(held_per_user, sizes)

    return TrainTestSplit(
        train=interactions.take(order[~is_test]).reset_index(drop=True),
        test=interactions.take(order[is_test]).reset_index(drop=True),
        n_users_held_out=int(np.count_nonzero(held_per_user)),
    )
