import pandas as pd

from moovitamix_assets.ml.split import time_based_split


def _interactions(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "track_id", "last_position"])
    return frame.assign(play_count=1, weight=1.0)


TINY = _interactions(
    [
        # user 1: three tracks, track 30 is the most recent
        (1, 10, 0),
        (1, 30, 7),
        (1, 20, 3),
        # user 2: a single interaction, never split
        (2, 10, 4),
        # user 3: two tracks, track 10 is the most recent
        (3, 10, 9),
        (3, 40, 2),
    ]
)


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"], frame["track_id"], strict=True))


def test_holds_out_exactly_the_most_recent_item_per_eligible_user() -> None:
    split = time_based_split(TINY)
    assert _pairs(split.test) == {(1, 30), (3, 10)}
    assert _pairs(split.train) == {(1, 10), (1, 20), (2, 10), (3, 40)}
    assert (len(split.train), len(split.test), split.n_users_held_out) == (4, 2, 2)
    assert list(split.test.columns) == list(TINY.columns)


def test_every_held_out_user_keeps_a_training_interaction() -> None:
    split = time_based_split(TINY, holdout_per_user=5)
    # At most n - 1 of a user's n interactions go to test.
    assert _pairs(split.test) == {(1, 30), (1, 20), (3, 10)}
    assert _pairs(split.train) == {(1, 10), (2, 10), (3, 40)}


def test_split_is_deterministic_and_independent_of_row_order() -> None:
    first = time_based_split(TINY)
    second = time_based_split(TINY.sample(frac=1.0, random_state=3))
    pd.testing.assert_frame_equal(first.train, second.train)
    pd.testing.assert_frame_equal(first.test, second.test)


def test_empty_interactions_give_an_empty_split() -> None:
    split = time_based_split(TINY.iloc[0:0])
    assert (len(split.train), len(split.test), split.n_users_held_out) == (0, 0, 0)
    assert list(split.train.columns) == list(TINY.columns)


def test_synthetic_split_holds_out_one_most_recent_item_per_user(structured) -> None:
    interactions = structured.data.interactions
    test = structured.split.test
    latest = interactions.groupby("user_id")["last_position"].max()
    eligible = interactions.groupby("user_id").size()
    eligible = eligible[eligible >= 2].index
    assert test.groupby("user_id").size().eq(1).all()
    assert sorted(test["user_id"]) == sorted(eligible)
    assert (test.set_index("user_id")["last_position"] == latest.loc[test["user_id"]]).all()
    assert len(structured.split.train) + len(structured.split.test) == len(interactions)
