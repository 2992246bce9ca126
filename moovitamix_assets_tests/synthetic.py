"""Seeded synthetic interactions for tests and benchmarks, with or without learnable structure."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from moovitamix_assets.contract import GENRE_LIST

# The genres the MooVitamix API draws favourite genres from (see the API contract).
GENRES = GENRE_LIST

# Ids far from 0..n-1 so that any confusion between ids and matrix indices shows up in tests.
USER_ID_OFFSET = 500_000
TRACK_ID_OFFSET = 10_000
_USER_CHUNK = 20_000


@dataclass(frozen=True, eq=False)
class SyntheticDataset:
    """Users, tracks and the interactions between them, in the model layer's input contract."""

    users: pd.DataFrame
    tracks: pd.DataFrame
    interactions: pd.DataFrame


def make_synthetic_dataset(
    n_users: int,
    n_tracks: int,
    n_interactions: int,
    *,
    structured: bool = True,
    clusters_per_genre: int = 3,
    own_cluster_share: float = 0.8,
    zipf_exponent: float = 1.0,
    seed: int = 0,
) -> SyntheticDataset:
    """Generate about ``n_interactions`` distinct (user, track) interactions.

    Structured data: every track and user belongs to a taste cluster nested in a genre (the
    user's favourite genre is their cluster's genre); a share ``own_cluster_share`` of a user's
    listens come from their cluster, the rest from the whole catalogue, both Zipf-distributed.
    Collaborative filtering can learn the clusters; genre popularity only sees the genre.
    Random data: every listen is a uniform draw from the catalogue, and genres carry no signal.

    Args:
        n_users: Number of users.
        n_tracks: Number of tracks in the catalogue.
        n_interactions: Target number of distinct (user, track) rows; the result has exactly
            this many unless the sampled listens produce fewer distinct pairs.
        structured: Whether listens follow the cluster structure (else uniform).
        clusters_per_genre: Taste clusters per genre.
        own_cluster_share: Probability that a listen is drawn from the user's own cluster.
        zipf_exponent: Exponent of the Zipf popularity inside clusters and across the catalogue.
        seed: Seed of the only random generator used.

    Returns:
        The users (``id``, ``favorite_genres``), tracks (``id``, ``genres``) and interactions.
    """
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    n_clusters = n_genres * clusters_per_genre
    user_ids = USER_ID_OFFSET + 2 * np.arange(n_users, dtype=np.int64)
    track_ids = TRACK_ID_OFFSET + 3 * np.arange(n_tracks, dtype=np.int64)

    track_cluster = rng.integers(0, n_clusters, size=n_tracks)
    user_cluster = rng.integers(0, n_clusters, size=n_users)
    if structured:
        track_genre = track_cluster % n_genres
        user_genre = user_cluster % n_genres
    else:
        track_genre = rng.integers(0, n_genres, size=n_tracks)
        user_genre = rng.integers(0, n_genres, size=n_users)

    if structured:
        global_rank = rng.permutation(n_tracks)
        global_cdf = np.cumsum(1.0 / (global_rank + 1.0) ** zipf_exponent)
        global_cdf /= global_cdf[-1]

        # One concatenated CDF where cluster c occupies (c, c + 1]: a single searchsorted samples
        # every event from its own user's cluster.
        by_cluster = np.lexsort((rng.random(n_tracks), track_cluster))
        cluster_sizes = np.bincount(track_cluster, minlength=n_clusters)
        cluster_starts = np.r_[0, np.cumsum(cluster_sizes)[:-1]]
        rank_in_cluster = np.arange(n_tracks) - np.repeat(cluster_starts, cluster_sizes)
        weights = 1.0 / (rank_in_cluster + 1.0) ** zipf_exponent
        cluster_cdf = np.empty(n_tracks)
        for c in range(n_clusters):
            part = slice(cluster_starts[c], cluster_starts[c] + cluster_sizes[c])
            cumulative = np.cumsum(weights[part])
            cluster_cdf[part] = c + cumulative / cumulative[-1]

    def sample_users(
        first_user: int, per_user: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_chunk = len(per_user)
        event_user = np.repeat(np.arange(first_user, first_user + n_chunk), per_user)
        n_events = len(event_user)
        if structured:
            own = rng.random(n_events) < own_cluster_share
            target = user_cluster[event_user] + rng.random(n_events)
            position = np.searchsorted(cluster_cdf, target, side="left")
            del target
            event_track = by_cluster[np.minimum(position, n_tracks - 1)]
            del position
            global_draw = np.searchsorted(global_cdf, rng.random(n_events), side="right")
            event_track = np.where(own, event_track, np.minimum(global_draw, n_tracks - 1))
            del own, global_draw
        else:
            event_track = rng.integers(0, n_tracks, size=n_events)

        # Listening lists are append-only, so an event's index in its user's list is its recency.
        user_starts = np.r_[0, np.cumsum(per_user)[:-1]]
        event_position = np.arange(n_events) - np.repeat(user_starts, per_user)

        key = event_user.astype(np.int64) * n_tracks + event_track
        del event_user, event_track
        order = np.argsort(key, kind="stable")
        key_sorted = key[order]
        del key
        group_start = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
        group_end = np.r_[group_start[1:], n_events] - 1
        # A stable sort keeps each pair's events in list order, so the group's last is the latest.
        return (
            key_sorted[group_start],
            group_end - group_start + 1,
            event_position[order[group_end]],
        )

    def sample(n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        activity = rng.lognormal(0.0, 0.5, size=n_users)
        per_user = np.maximum(2, np.round(n_events * activity / activity.sum())).astype(np.int64)
        # Users are sampled in chunks to bound the memory of the per-event arrays.
        parts = [
            sample_users(first, per_user[first : first + _USER_CHUNK])
            for first in range(0, n_users, _USER_CHUNK)
        ]
        keys, counts, positions = (np.concatenate(column) for column in zip(*parts, strict=True))
        return keys, counts, positions

    # Repeat listens collapse into one interaction: oversample, and retry with more listens
    # (deterministically, from the same generator) while too few distinct pairs come out.
    n_events = n_interactions + n_users
    for _ in range(4):
        pair_key, play_count, last_position = sample(n_events)
        if len(pair_key) >= n_interactions:
            break
        n_events = int(n_events * 1.1 * n_interactions / max(len(pair_key), 1))

    if len(pair_key) > n_interactions:
        keep = np.sort(rng.choice(len(pair_key), size=n_interactions, replace=False))
        pair_key, play_count, last_position = pair_key[keep], play_count[keep], last_position[keep]

    pair_user = pair_key // n_tracks
    pair_track = pair_key % n_tracks
    interactions = pd.DataFrame(
        {
            "user_id": user_ids[pair_user],
            "track_id": track_ids[pair_track],
            "play_count": play_count.astype(np.int64),
            "weight": play_count.astype(np.float64),
            "last_position": last_position.astype(np.int64),
        }
    )
    genre_names = np.array(GENRES, dtype=object)
    users = pd.DataFrame({"id": user_ids, "favorite_genres": genre_names[user_genre]})
    tracks = pd.DataFrame({"id": track_ids, "genres": genre_names[track_genre]})
    return SyntheticDataset(users=users, tracks=tracks, interactions=interactions)
