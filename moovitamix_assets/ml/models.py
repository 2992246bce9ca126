"""ALS collaborative filtering, popularity baselines and the recommendation entry points.

Every recommender answers ``recommend(user_ids, exclude, k)`` with a frame
``[user_id, track_id, score, rank]`` where ``exclude`` is a CSR matrix with one row per requested
user and one column per item of the recommender (``item_ids``): non-zero cells are never
recommended. ``known_items_matrix`` builds it from an interactions frame.
"""

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Final, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.topk import topk
from threadpoolctl import threadpool_limits

from moovitamix_assets.ml import RECOMMENDATION_COLUMNS

log = logging.getLogger(__name__)

# Descriptions reused by the Dagster Config that exposes these parameters.
FACTORS_DESCRIPTION: Final = "Number of latent factors per user and per track."
REGULARIZATION_DESCRIPTION: Final = "L2 regularisation of the factors."
ALPHA_DESCRIPTION: Final = (
    "Confidence scaling: an interaction of weight w counts with confidence 1 + alpha * w."
)
ITERATIONS_DESCRIPTION: Final = "Number of alternating least squares sweeps."
RANDOM_STATE_DESCRIPTION: Final = "Seed of the factor initialisation (same seed, same model)."

SOURCE_ALS: Final = "als"
SOURCE_COLD_START: Final = "cold_start"
SOURCE_FALLBACK: Final = "genre_popularity"

DEFAULT_BATCH_SIZE: Final = 10_000
# implicit marks filtered items with the lowest float32 instead of dropping them.
_FILTERED_SCORE: Final = float(np.finfo(np.float32).min)
# Cells of the work matrices of the popularity selection per batch (~5 bytes each).
_SELECTION_CELLS: Final = 10_000_000


@dataclass(frozen=True)
class AlsParams:
    """Hyper-parameters of the ALS model.

    Defaults tuned with bench/bench_recommendations.py (100k users, 50k tracks, 5M interactions):
    precision@10 was flat from 24 to 64 factors and from 6 to 10 sweeps, so the cheapest setting
    that keeps training plus top-10 for every user well inside a minute on 2 cores wins; a low
    alpha ranked slightly better (NDCG) than 10 or 40.
    """

    factors: int = 32
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 8
    random_state: int = 42

    def __post_init__(self) -> None:
        if self.factors < 1:
            raise ValueError(f"factors must be >= 1, got {self.factors}")
        if self.regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


class Recommender(Protocol):
    """What evaluation and serving need from a model."""

    @property
    def item_ids(self) -> np.ndarray: ...

    def recommend(
        self, user_ids: np.ndarray, exclude: sp.csr_matrix | None, k: int
    ) -> pd.DataFrame: ...


def unique_ids(ids: np.ndarray) -> np.ndarray:
    """The distinct ids, sorted: ``np.unique``'s result.

    pandas' hash table, then a sort of the distinct values only: numpy 2.4's ``np.unique`` took
    2.2 s on 5.5M ids (a catalogue at 1M users) where this takes 0.13 s.
    """
    return np.sort(pd.unique(np.asarray(ids, dtype=np.int64)))


def lookup_indices(known_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Map ids to their positions in ``known_ids`` (unique, sorted or not), -1 where absent."""
    # pandas' hash table: 0.5 s for 5M ids into 1M where np.searchsorted took 1.2 s.
    return pd.Index(known_ids, dtype=np.int64).get_indexer(np.asarray(ids, dtype=np.int64))


def isin_ids(ids: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``np.isin(ids, allowed)`` through pandas' hash table: 0.25 s where numpy took 1.5 s on
    5M ids against 0.9M."""
    ids = pd.Series(np.asarray(ids, dtype=np.int64), copy=False)
    return ids.isin(np.asarray(allowed, dtype=np.int64)).to_numpy()


@dataclass(frozen=True, eq=False)
class AlsModel:
    """A trained ALS model: factors plus the id <-> matrix index maps (ids sorted ascending)."""

    params: AlsParams
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        return lookup_indices(self.user_ids, user_ids)

    def recommend(
        self, user_ids: np.ndarray, exclude: sp.csr_matrix | None, k: int
    ) -> pd.DataFrame:
        return recommend_top_k(self, user_ids, exclude, k)


@dataclass(frozen=True)
class FallbackModel:
    """The genre-aware popularity fallback as a model of the registry.

    It has no learned parameters: whenever it serves or is evaluated it is fitted again on that
    day's listening (``fit_genre_popularity``), so it stays as current as the data.
    """

    name: str = SOURCE_FALLBACK


# What the registry holds and serving accepts.
ServingModel = AlsModel | FallbackModel


@dataclass(frozen=True, eq=False)
class InteractionMatrix:
    """A user x item confidence matrix and the ids of its rows and columns."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray


def build_interaction_matrix(interactions: pd.DataFrame, alpha: float) -> InteractionMatrix:
    """Build the CSR user x item matrix of confidences ``1 + alpha * weight``."""
    users = interactions["user_id"].to_numpy(dtype=np.int64)
    items = interactions["track_id"].to_numpy(dtype=np.int64)
    # np.unique(..., return_inverse=True), at a quarter of its time on millions of pairs.
    user_codes, user_ids = pd.factorize(users, sort=True)
    item_codes, item_ids = pd.factorize(items, sort=True)
    confidence = (1.0 + alpha * interactions["weight"].to_numpy(dtype=np.float64)).astype(
        np.float32
    )
    matrix = sp.csr_matrix(
        (confidence, (user_codes, item_codes)), shape=(len(user_ids), len(item_ids))
    )
    # Duplicated (user, track) rows would otherwise stay as separate entries.
    matrix.sum_duplicates()
    return InteractionMatrix(matrix=matrix, user_ids=user_ids, item_ids=item_ids)


def known_items_matrix(
    interactions: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
) -> sp.csr_matrix:
    """Return a 0/1 CSR matrix: row i marks the tracks of ``interactions`` user ``user_ids[i]``.

    Columns follow ``item_ids`` (sorted, unique); interactions of other users or other tracks are
    ignored. ``user_ids`` need not be sorted but must be unique.
    """
    rows = lookup_indices(user_ids, interactions["user_id"].to_numpy(dtype=np.int64))
    col = lookup_indices(item_ids, interactions["track_id"].to_numpy(dtype=np.int64))
    keep = (rows >= 0) & (col >= 0)
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], col[keep])),
        shape=(len(user_ids), len(item_ids)),
    )
    matrix.sum_duplicates()
    return matrix


def train_als(interactions: pd.DataFrame, params: AlsParams, *, num_threads: int = 0) -> AlsModel:
    """Fit implicit's CPU ALS (conjugate gradient) on the interactions.

    Args:
        interactions: Frame following the interactions contract (at least one row).
        params: Hyper-parameters; ``random_state`` makes the factors reproducible.
        num_threads: Threads of implicit's solver; 0 means one per core.

    Returns:
        The model with float32 factors and sorted user and item id arrays.

    Raises:
        ValueError: If there are no interactions.
    """
    if len(interactions) == 0:
        raise ValueError("cannot train ALS on an empty interactions frame")
    data = build_interaction_matrix(interactions, params.alpha)
    # OpenBLAS threads inside implicit's own parallel loop oversubscribe the cores (implicit
    # warns it can be 10x slower), so BLAS is pinned to one thread while fitting.
    with threadpool_limits(limits=1, user_api="blas"):
        # Confidences are already 1 + alpha * weight: implicit's own alpha stays neutral.
        als = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=1.0,
            dtype=np.float32,
            iterations=params.iterations,
            num_threads=num_threads,
            random_state=params.random_state,
        )
        als.fit(data.matrix, show_progress=False)
    log.info(
        "Trained ALS on %d users x %d tracks (%d interactions)",
        data.matrix.shape[0],
        data.matrix.shape[1],
        data.matrix.nnz,
    )
    return AlsModel(
        params=params,
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        user_factors=np.ascontiguousarray(als.user_factors, dtype=np.float32),
        item_factors=np.ascontiguousarray(als.item_factors, dtype=np.float32),
    )


def _check_exclude(exclude: sp.csr_matrix | None, n_rows: int, n_items: int) -> None:
    if exclude is not None and exclude.shape != (n_rows, n_items):
        raise ValueError(
            f"exclude must have shape ({n_rows}, {n_items}) (one row per user, one column per"
            f" item of the model), got {exclude.shape}"
        )


def _frame(user_ids: np.ndarray, track_ids: np.ndarray, scores: np.ndarray, ranks: np.ndarray):
    return pd.DataFrame(
        {
            "user_id": np.asarray(user_ids, dtype=np.int64),
            "track_id": np.asarray(track_ids, dtype=np.int64),
            "score": np.asarray(scores, dtype=np.float64),
            "rank": np.asarray(ranks, dtype=np.int64),
        },
        columns=list(RECOMMENDATION_COLUMNS),
    )


def _top_allowed(
    model: AlsModel, rows: np.ndarray, exclude: sp.csr_matrix | None, k: int, num_threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each of ``rows``' top ``k`` model items that ``exclude`` allows: (row, item, score, rank)."""
    # Asking for k plus the longest exclusion list (see _history_groups) and dropping the excluded
    # tracks afterwards is cheaper than implicit's per-row filter (2.5x on 10,000 users).
    extra = int(np.diff(exclude.indptr).max()) if exclude is not None else 0
    wanted = min(k + extra, model.n_items)
    # implicit parallelises the selection itself; threaded BLAS on top of it oversubscribes
    # the cores (measured about twice slower on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        ids, scores = topk(
            model.item_factors, model.user_factors[rows], wanted, num_threads=num_threads
        )
    valid = scores > _FILTERED_SCORE
    if extra:
        query_row = np.repeat(np.arange(len(rows)), wanted)
        excluded = np.asarray(exclude[query_row, ids.ravel()]).reshape(ids.shape)
        valid &= excluded == 0
    rank = np.cumsum(valid, axis=1)
    row, column = np.nonzero(valid & (rank <= k))
    return row, ids[row, column], scores[row, column], rank[row, column]


def recommend_top_k(
    model: AlsModel,
    user_ids: np.ndarray,
    exclude: sp.csr_matrix | None,
    k: int,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_threads: int = 0,
) -> pd.DataFrame:
    """Top-k tracks by ALS score for users known to the model, in batches of users.

    Args:
        model: The trained model.
        user_ids: Unique user ids, all known to the model.
        exclude: CSR matrix (one row per user of ``user_ids``, one column per model item) of
            tracks never to recommend, typically the users' listening history; None for none.
        k: Recommendations per user; fewer only when fewer tracks remain after exclusion.
        batch_size: Users scored per batch (bounds memory).
        num_threads: Threads of implicit's top-k selection; 0 means one per core.

    Returns:
        A frame ``[user_id, track_id, score, rank]`` ordered by user then rank (1 = best).

    Raises:
        ValueError: If a user is unknown to the model or ``exclude`` has the wrong shape.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    rows = model.user_index(user_ids)
    if (rows < 0).any():
        raise ValueError(
            f"{int((rows < 0).sum())} users are unknown to the model (cold start): "
            "use recommend_for_all_users"
        )
    _check_exclude(exclude, len(user_ids), model.n_items)
    k_eff = min(k, model.n_items)
    if len(user_ids) == 0 or k_eff <= 0:
        return _frame([], [], [], [])

    # Filled batch by batch into arrays sized for the whole result: concatenating per-batch frames
    # would hold every recommendation twice (10M rows at 1M users).
    capacity = len(user_ids) * k_eff
    out_users = np.empty(capacity, dtype=np.int64)
    out_tracks = np.empty(capacity, dtype=np.int64)
    out_scores = np.empty(capacity, dtype=np.float64)
    out_ranks = np.empty(capacity, dtype=np.int64)
    filled = 0
    for start in range(0, len(user_ids), batch_size):
        stop = min(start + batch_size, len(user_ids))
        if exclude is None:
            batch_exclude, groups = None, [np.arange(stop - start)]
        else:
            batch_exclude = exclude[start:stop]
            groups = _history_groups(batch_exclude)
        found = []
        for members in groups:
            sub = batch_exclude[members] if batch_exclude is not None else None
            row, *rest = _top_allowed(model, rows[start:stop][members], sub, k_eff, num_threads)
            found.append((members[row], *rest))
        row, item, score, rank = (np.concatenate(part) for part in zip(*found, strict=True))
        order = np.lexsort((rank, row))
        end = filled + len(order)
        out_users[filled:end] = user_ids[start:stop][row[order]]
        out_tracks[filled:end] = model.item_ids[item[order]]
        out_scores[filled:end] = score[order]
        out_ranks[filled:end] = rank[order]
        filled = end
    return pd.DataFrame(
        {
            "user_id": out_users[:filled],
            "track_id": out_tracks[:filled],
            "score": out_scores[:filled],
            "rank": out_ranks[:filled],
        },
        columns=list(RECOMMENDATION_COLUMNS),
        copy=False,
    )


def _history_groups(exclude: sp.csr_matrix) -> list[np.ndarray]:
    """The rows of ``exclude``: the 1% longest histories apart from the others.

    A selection asks each of its rows for k items plus its longest history, so one heavy
    listener would make every row of a batch ask for thousands of items. With a listener of 2,000
    tracks per 5,000 users, ALS scoring of 100,000 users took 47 s in one call, 3 s so.
    """
    lengths = np.diff(exclude.indptr)
    if not len(lengths):
        return []
    long = lengths > np.percentile(lengths, 99)
    return [rows for rows in (np.flatnonzero(~long), np.flatnonzero(long)) if len(rows)]


def _first_k_allowed(
    prefix_of: Callable[[int], np.ndarray], exclude: sp.csr_matrix, n_items: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``exclude``, the first ``k`` items of an ordering the row does not exclude.

    ``prefix_of(n)`` gives the ordering's first ``n`` items; a row can skip at most its own
    excluded items, so k plus the longest history suffice. Returns (row, item index, rank) arrays
    ordered by row then rank.
    """
    lengths = np.diff(exclude.indptr)
    if not len(lengths):
        empty = np.array([], dtype=np.int64)
        return empty, empty, empty
    # One prefix for every group: a shorter history's prefix is the start of the longest's.
    ordering = prefix_of(min(n_items, k + int(lengths.max())))
    position = np.full(n_items, -1, dtype=np.int64)
    position[ordering] = np.arange(len(ordering))
    out_rows, out_items, out_ranks = [], [], []
    for members in _history_groups(exclude):
        group = exclude[members]
        prefix_len = min(len(ordering), k + int(lengths[members].max()))
        batch = max(1, _SELECTION_CELLS // max(prefix_len, 1))
        for start in range(0, len(members), batch):
            sub = group[start : start + batch]
            mapped = position[sub.indices]
            sub_rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
            hit = (mapped >= 0) & (mapped < prefix_len)
            allowed = np.ones((sub.shape[0], prefix_len), dtype=bool)
            allowed[sub_rows[hit], mapped[hit]] = False
            rank = np.cumsum(allowed, axis=1, dtype=np.int32)
            r, c = np.nonzero(allowed & (rank <= k))
            out_rows.append(members[r + start])
            out_items.append(ordering[c])
            out_ranks.append(rank[r, c])
    rows, items, ranks = (np.concatenate(a) for a in (out_rows, out_items, out_ranks))
    order = np.lexsort((ranks, rows))
    return rows[order], items[order], ranks[order]


def _exclusion(
    user_ids: np.ndarray, exclude: sp.csr_matrix | None, n_items: int
) -> tuple[np.ndarray, sp.csr_matrix]:
    """The user ids as int64 and the exclusion matrix, checked (an empty one for None)."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    _check_exclude(exclude, len(user_ids), n_items)
    if exclude is None:
        exclude = sp.csr_matrix((len(user_ids), n_items), dtype=np.float32)
    return user_ids, exclude


def listener_counts(interactions: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Distinct listeners of each of ``item_ids`` (sorted, unique) in ``interactions``."""
    users = interactions["user_id"].to_numpy(dtype=np.int64)
    items = lookup_indices(item_ids, interactions["track_id"].to_numpy(dtype=np.int64))
    # Sorted by (user, item), a pair's repeats are neighbours: count each pair once, with no
    # hash table of millions of pairs.
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    del order
    first = np.ones(len(items), dtype=bool)
    first[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    items = items[first & (items >= 0)]
    return np.bincount(items, minlength=len(item_ids)).astype(np.int64)


def _catalogue(interactions: pd.DataFrame, tracks: pd.DataFrame | None) -> np.ndarray:
    ids = [interactions["track_id"].to_numpy(dtype=np.int64)]
    if tracks is not None:
        ids.append(tracks["id"].to_numpy(dtype=np.int64))
    return unique_ids(np.concatenate(ids))


@dataclass(frozen=True, eq=False)
class PopularityModel:
    """Global popularity: tracks ranked by distinct listeners (ties by track id)."""

    item_ids: np.ndarray
    listeners: np.ndarray
    ordering: np.ndarray

    def recommend(
        self, user_ids: np.ndarray, exclude: sp.csr_matrix | None, k: int
    ) -> pd.DataFrame:
        user_ids, exclude = _exclusion(user_ids, exclude, len(self.item_ids))
        rows, items, ranks = _first_k_allowed(
            lambda n: self.ordering[:n], exclude, len(self.item_ids), k
        )
        return _frame(user_ids[rows], self.item_ids[items], self.listeners[items], ranks)


def fit_popularity(
    interactions: pd.DataFrame, tracks: pd.DataFrame | None = None
) -> PopularityModel:
    """Rank the catalogue (interaction tracks plus ``tracks``) by number of distinct listeners."""
    item_ids = _catalogue(interactions, tracks)
    listeners = listener_counts(interactions, item_ids)
    # Stable sort on the negated count keeps ties in ascending track id order.
    ordering = np.argsort(-listeners, kind="stable")
    return PopularityModel(item_ids=item_ids, listeners=listeners, ordering=ordering)


@dataclass(frozen=True, eq=False)
class GenrePopularityModel:
    """Popularity within the user's favourite genre, filled up with global popularity.

    Users without a known favourite genre, or whose genre has no tracks, get global popularity.
    Genres are codes into ``genres`` (-1: none), so the model holds one small integer per track
    and per user rather than an ordering of the whole catalogue per genre.
    """

    item_ids: np.ndarray
    listeners: np.ndarray
    global_ordering: np.ndarray
    genres: np.ndarray
    item_genres: np.ndarray
    user_ids: np.ndarray
    user_genres: np.ndarray

    def global_popularity(self) -> PopularityModel:
        """Global popularity over the same counts (what fills up a genre's list)."""
        return PopularityModel(self.item_ids, self.listeners, self.global_ordering)

    def ordering_prefix(self, genre: int, length: int) -> np.ndarray:
        """The first ``length`` items for a fan of ``genre``: its tracks, then the others."""
        if genre < 0:
            return self.global_ordering[:length]
        in_genre = self.item_genres[self.global_ordering] == genre
        head = self.global_ordering[in_genre][:length]
        tail = self.global_ordering[~in_genre][: length - len(head)]
        return np.concatenate([head, tail])

    def recommend(
        self, user_ids: np.ndarray, exclude: sp.csr_matrix | None, k: int
    ) -> pd.DataFrame:
        user_ids, exclude = _exclusion(user_ids, exclude, len(self.item_ids))
        position = lookup_indices(self.user_ids, user_ids)
        genre = np.where(position >= 0, self.user_genres[np.maximum(position, 0)], -1)
        parts = []
        for code in np.unique(genre):
            members = np.flatnonzero(genre == code)
            rows, items, ranks = _first_k_allowed(
                lambda n, code=int(code): self.ordering_prefix(code, n),
                exclude[members],
                len(self.item_ids),
                k,
            )
            parts.append(
                _frame(user_ids[members][rows], self.item_ids[items], self.listeners[items], ranks)
            )
        if not parts:
            return _frame([], [], [], [])
        recs = pd.concat(parts, ignore_index=True)
        return recs.sort_values(["user_id", "rank"], kind="stable", ignore_index=True)


def fit_genre_popularity(
    interactions: pd.DataFrame, tracks: pd.DataFrame, users: pd.DataFrame
) -> GenrePopularityModel:
    """Fit the genre baseline from ``tracks[id, genres]`` and ``users[id, favorite_genres]``."""
    base = fit_popularity(interactions, tracks)
    track_genres = tracks.drop_duplicates("id").set_index("id")["genres"]
    item_genres = pd.Categorical(track_genres.reindex(base.item_ids).astype(object))
    favourites = users.drop_duplicates("id").sort_values("id")
    # A favourite genre no track has is coded -1: that user gets global popularity.
    user_genres = item_genres.categories.get_indexer(favourites["favorite_genres"].astype(object))
    return GenrePopularityModel(
        item_ids=base.item_ids,
        listeners=base.listeners,
        global_ordering=base.ordering,
        genres=item_genres.categories.to_numpy(dtype=object),
        item_genres=item_genres.codes.astype(np.int32),
        user_ids=favourites["id"].to_numpy(dtype=np.int64),
        user_genres=user_genres.astype(np.int32),
    )


def recommend_excluding_history(
    recommender: Recommender, user_ids: np.ndarray, history: pd.DataFrame, k: int
) -> pd.DataFrame:
    """Recommend ``k`` tracks per user, never one of the user's tracks in ``history``."""
    user_ids = unique_ids(user_ids)
    exclude = known_items_matrix(history, user_ids, recommender.item_ids)
    return recommender.recommend(user_ids, exclude, k)


def recommend_for_all_users(
    model: AlsModel,
    users: pd.DataFrame,
    tracks: pd.DataFrame,
    interactions: pd.DataFrame,
    k: int,
    *,
    cold_start: GenrePopularityModel | None = None,
) -> pd.DataFrame:
    """Exactly ``k`` new tracks for every user of ``users`` (fewer only if the catalogue runs out).

    Users known to the model get ALS recommendations (``source='als'``); users unknown to it get
    genre-aware popularity (``source='cold_start'``), which also tops up any ALS user left short
    (a user who has heard almost every track the model knows). No user is ever recommended a
    track from their ``interactions``.

    Args:
        model: The trained ALS model.
        users: Frame with ``id`` and ``favorite_genres``.
        tracks: Frame with ``id`` and ``genres`` (the catalogue).
        interactions: All known interactions (the exclusion list and popularity source).
        k: Recommendations per user.
        cold_start: A fitted genre-popularity model; fitted from the inputs when None.

    Returns:
        A frame ``[user_id, track_id, score, rank, source]`` ordered by user then rank.
    """
    if cold_start is None:
        cold_start = fit_genre_popularity(interactions, tracks, users)
    user_ids = unique_ids(users["id"].to_numpy(dtype=np.int64))
    known = model.user_index(user_ids) >= 0
    als_users = user_ids[known]
    als_recs = recommend_top_k(
        model, als_users, known_items_matrix(interactions, als_users, model.item_ids), k
    )
    als_recs["source"] = SOURCE_ALS

    per_user = als_recs.groupby("user_id").size().reindex(user_ids, fill_value=0)
    needing = per_user[per_user < k]
    if not len(needing):
        # The common case at scale: no copy of millions of rows (already ordered by user, rank).
        return als_recs
    needing_ids = needing.index.to_numpy(dtype=np.int64)
    # Already-recommended ALS tracks join the history so the top-up never repeats them; only the
    # users being topped up matter.
    seen = pd.concat(
        [
            frame.loc[isin_ids(frame["user_id"].to_numpy(), needing_ids)]
            for frame in (interactions[["user_id", "track_id"]], als_recs[["user_id", "track_id"]])
        ],
        ignore_index=True,
    )
    fill = cold_start.recommend(
        needing_ids, known_items_matrix(seen, needing_ids, cold_start.item_ids), k
    )
    have = needing.reindex(fill["user_id"]).to_numpy()
    fill["rank"] = fill["rank"].to_numpy() + have
    fill = fill[fill["rank"].to_numpy() <= k].copy()
    fill["source"] = SOURCE_COLD_START
    fill_parts = [fill]

    # Interleave the top-ups column by column: a concatenated then sorted frame would hold every
    # recommendation three times at once (30M rows at 1M users).
    parts = [als_recs, *fill_parts]
    users_all = np.concatenate([p["user_id"].to_numpy() for p in parts])
    ranks_all = np.concatenate([p["rank"].to_numpy() for p in parts])
    order = np.lexsort((ranks_all, users_all))
    del users_all, ranks_all
    columns = {}
    for name in (*RECOMMENDATION_COLUMNS, "source"):
        columns[name] = np.concatenate([p[name].to_numpy() for p in parts])[order]
    del parts, als_recs, fill_parts
    return pd.DataFrame(columns, copy=False)
