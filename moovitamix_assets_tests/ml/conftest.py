"""Synthetic data sets and trained models shared by the ML tests (built once per module)."""

import pandas as pd
import pytest

from moovitamix_assets.ml.models import (
    AlsModel,
    AlsParams,
    PopularityModel,
    fit_popularity,
    train_als,
)
from moovitamix_assets.ml.split import TrainTestSplit, time_based_split
from moovitamix_assets_tests.synthetic import SyntheticDataset, make_synthetic_dataset

# Small enough to train in well under a second, large enough that metric differences are
# far outside sampling noise.
N_USERS = 2_000
N_TRACKS = 1_000
N_INTERACTIONS = 60_000  # ~30 listens per user before repeats collapse
TEST_PARAMS = AlsParams(factors=32, regularization=0.05, alpha=10.0, iterations=8, random_state=7)


class Trained:
    """A data set, its split and the three recommenders fitted on the training half."""

    def __init__(self, data: SyntheticDataset, holdout_per_user: int) -> None:
        self.data = data
        self.split: TrainTestSplit = time_based_split(data.interactions, holdout_per_user)
        self.als: AlsModel = train_als(self.split.train, TEST_PARAMS)
        self.popularity: PopularityModel = fit_popularity(self.split.train, data.tracks)
        self.genre_popularity: PopularityModel = fit_popularity(
            self.split.train, data.tracks, data.users
        )

    @property
    def train(self) -> pd.DataFrame:
        return self.split.train


@pytest.fixture(scope="module")
def structured() -> Trained:
    data = make_synthetic_dataset(N_USERS, N_TRACKS, N_INTERACTIONS, structured=True, seed=11)
    return Trained(data, holdout_per_user=1)


@pytest.fixture(scope="module")
def random_data() -> Trained:
    # Uniform listens: no recommender can beat another except by noise, so hold out several
    # items per user on a smaller catalogue to keep that noise small.
    data = make_synthetic_dataset(3_000, 500, 60_000, structured=False, seed=12)
    return Trained(data, holdout_per_user=5)
