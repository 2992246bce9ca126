"""ALS collaborative filtering, popularity baselines and the recommendation entry points.

Every recommender answers ``recommend(user_ids, exclude, k)`` with ``[user_id, track_id, score,
rank]``; ``exclude`` (``known_items_matrix``) is a CSR matrix, a row per user and a column per
``item_ids``, whose non-zero cells are never recommended.
"""

import logging
from dataclasses import asdict, dataclass
from typing import Final

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

# implicit marks filtered items with the lowest float32 instead of dropping them.
_FILTERED_SCORE: Final = float(np.finfo(np.float32).min)
# Cells of the work matrices of the popularity selection per batch (~6 bytes each).
_SELECTION_CELLS: Final = 10_000_000


@dataclass(frozen=True)
class AlsParams:
    """Hyper-parameters of the ALS model.

    Defaults from bench/bench_recommendations.py: precision@10 was flat from 24 to 64 factors and
    6 to 10 sweeps, so the cheapest setting wins; alpha 2 ranked slightly better than 10 or 40.
    """

    factors: int = 32
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 8
    random_state: int = 42

    def __post_init__(self) -> None:
        for name, valid, rule in (
            ("factors", self.factors >= 1, ">= 1"),
            ("regularization", self.regularization >= 0, ">= 0"),
            ("alpha", self.alpha > 0, "> 0"),
            ("iterations", self.iterations >= 1, ">= 1"),
        ):
            if not valid:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


def unique_ids(ids: np.ndarray) -> np.ndarray:
    """``np.unique(ids)`` through pandas' hash table: 0.13 s where numpy took 2.2 s on 5.5M ids."""
    return np.sort(pd.unique(np.asarray(ids, dtype=np.int64)))


def lookup_indices(known_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Map ids to their positions in ``known_ids`` (unique, sorted or not), -1 where absent."""
    # pandas' hash table: 0.5 s for 5M ids into 1M where np.searchsorted took 1.2 s.
    return pd.Index(known_ids, dtype=np.int64).get_indexer(np.asarray(ids, dtype=np.int64))


def isin_ids(ids: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``np.isin(ids, allowed)`` through pandas' hash table: 0.25 s where numpy took 1.5 s."""
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
    """The genre-aware popularity fallback in the registry: refitted on the day's listening."""

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
    # Built from (row, column) pairs, scipy sums the cells of duplicated (user, track) rows.
    matrix = sp.csr_matrix(
        (confidence, (user_codes, item_codes)), shape=(len(user_ids), len(item_ids))
    )
    return InteractionMatrix(matrix=matrix, user_ids=user_ids, item_ids=item_ids)


def known_items_matrix(
    interactions: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
) -> sp.csr_matrix:
    """0/1 CSR matrix: row i marks user ``user_ids[i]``'s tracks (columns: ``item_ids``; unique)."""
    rows = lookup_indices(user_ids, interactions["user_id"].to_numpy(dtype=np.int64))
    col = lookup_indices(item_ids, interactions["track_id"].to_numpy(dtype=np.int64))
    keep = (rows >= 0) & (col >= 0)
    return sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], col[keep])),
        shape=(len(user_ids), len(item_ids)),
    )


def train_als(interactions: pd.DataFrame, params: AlsParams, *, num_threads: int = 0) -> AlsModel:
    """Fit implicit's CPU ALS on the interactions (``num_threads`` 0: one per core)."""
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
        "Trained ALS on %s users x tracks (%d interactions)", data.matrix.shape, data.matrix.nnz
    )
    return AlsModel(
        params=params,
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        user_factors=np.ascontiguousarray(als.user_factors, dtype=np.float32),
        item_factors=np.ascontiguousarray(als.item_factors, dtype=np.float32),
    )


def _exclusion(
    user_ids: np.ndarray, exclude: sp.csr_matrix | None, n_items: int
) -> tuple[np.ndarray, sp.csr_matrix]:
    """The user ids as int64 and the exclusion matrix, checked (an empty one for None)."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    if exclude is None:
        return user_ids, sp.csr_matrix((len(user_ids), n_items), dtype=np.float32)
    if exclude.shape != (len(user_ids), n_items):
        raise ValueError(
            f"exclude must have shape ({len(user_ids)}, {n_items}) (one row per user, one column"
            f" per item of the model), got {exclude.shape}"
        )
    return user_ids, exclude


_DTYPES: Final = dict(
    zip(RECOMMENDATION_COLUMNS, (np.int64, np.int64, np.float64, np.int64), strict=True)
)


def _frame(*columns: np.ndarray) -> pd.DataFrame:
    """``[user_id, track_id, score, rank]`` from the four columns, copied only to cast them."""
    pairs = zip(_DTYPES.items(), columns, strict=True)
    return pd.DataFrame({name: np.asarray(v, dtype=t) for (name, t), v in pairs}, copy=False)


def _top_allowed(
    model: AlsModel, rows: np.ndarray, exclude: sp.csr_matrix, k: int, num_threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each of ``rows``' top ``k`` model items that ``exclude`` allows: (row, item, score, rank)."""
    # Asking for k plus the longest exclusion list (see _history_groups) and dropping the excluded
    # tracks afterwards is cheaper than implicit's per-row filter (2.5x on 10,000 users).
    extra = int(np.diff(exclude.indptr).max())
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
    batch_size: int = 10_000,
    num_threads: int = 0,
) -> pd.DataFrame:
    """Top-k allowed tracks by ALS score for users known to the model, ordered by user and rank.

    A user gets fewer than ``k`` only when ``exclude`` leaves fewer of the model's tracks.
    """
    user_ids, exclude = _exclusion(user_ids, exclude, model.n_items)
    rows = model.user_index(user_ids)
    if (rows < 0).any():
        raise ValueError(
            f"{int((rows < 0).sum())} users are unknown to the model (cold start): "
            "use recommend_for_all_users"
        )
    k = min(k, model.n_items)
    # Filled batch by batch into arrays sized for the whole result: concatenating per-batch frames
    # would hold every recommendation twice (10M rows at 1M users).
    out = [np.empty(len(user_ids) * k, dtype=t) for t in _DTYPES.values()]
    filled = 0
    for start in range(0, len(user_ids), batch_size):
        batch = exclude[start : start + batch_size]
        found = []
        for members in _history_groups(batch):
            row, *rest = _top_allowed(model, rows[start + members], batch[members], k, num_threads)
            found.append((start + members[row], *rest))
        row, item, score, rank = (np.concatenate(part) for part in zip(*found, strict=True))
        order = np.lexsort((rank, row))
        found = (user_ids[row[order]], model.item_ids[item[order]], score[order], rank[order])
        for target, values in zip(out, found, strict=True):
            target[filled : filled + len(order)] = values
        filled += len(order)
    return _frame(*(values[:filled] for values in out))


def _history_groups(exclude: sp.csr_matrix) -> list[np.ndarray]:
    """The rows of ``exclude`` (at least one), the 1% longest histories apart from the others.

    A selection asks each row for k items plus its longest history: one heavy listener made ALS
    scoring of 100,000 users take 47 s in one call, 3 s so.
    """
    lengths = np.diff(exclude.indptr)
    long = lengths > np.percentile(lengths, 99)
    return [rows for rows in (np.flatnonzero(~long), np.flatnonzero(long)) if len(rows)]


def _first_k_allowed(
    ordering: np.ndarray, exclude: sp.csr_matrix, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's first ``k`` items of ``ordering`` it allows: (row, item, rank) by row and rank."""
    lengths = np.diff(exclude.indptr)
    found = []
    for members in _history_groups(exclude):
        # A row skips at most its own history: k plus the group's longest history suffice.
        prefix = ordering[: k + int(lengths[members].max())]
        # The group's histories over the prefix, column j being the ordering's j-th item.
        heard = exclude[members][:, prefix].astype(bool)
        batch = max(1, _SELECTION_CELLS // max(1, len(prefix)))
        for start in range(0, len(members), batch):
            allowed = ~heard[start : start + batch].toarray()
            rank = np.cumsum(allowed, axis=1, dtype=np.int32)
            r, c = np.nonzero(allowed & (rank <= k))
            found.append((members[r + start], prefix[c], rank[r, c]))
    rows, items, ranks = (np.concatenate(part) for part in zip(*found, strict=True))
    order = np.lexsort((ranks, rows))
    return rows[order], items[order], ranks[order]


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


@dataclass(frozen=True, eq=False)
class PopularityModel:
    """Global popularity: tracks ranked by distinct listeners (ties by track id)."""

    item_ids: np.ndarray
    listeners: np.ndarray
    ordering: np.ndarray

    def genre_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Each user's favourite genre code: -1 (none) for global popularity."""
        return np.full(len(user_ids), -1)

    def genre_ordering(self, genre: int) -> np.ndarray:
        """The items in the order a fan of ``genre`` is offered them."""
        return self.ordering

    def recommend(
        self, user_ids: np.ndarray, exclude: sp.csr_matrix | None, k: int
    ) -> pd.DataFrame:
        user_ids, exclude = _exclusion(user_ids, exclude, len(self.item_ids))
        genre = self.genre_of(user_ids)
        parts = [_frame([], [], [], [])]
        for code in np.unique(genre):
            members = np.flatnonzero(genre == code)
            ordering = self.genre_ordering(int(code))
            rows, items, ranks = _first_k_allowed(ordering, exclude[members], k)
            parts.append(
                _frame(user_ids[members][rows], self.item_ids[items], self.listeners[items], ranks)
            )
        recs = pd.concat(parts, ignore_index=True)
        return recs.sort_values(["user_id", "rank"], kind="stable", ignore_index=True)


def fit_popularity(
    interactions: pd.DataFrame, tracks: pd.DataFrame | None = None
) -> PopularityModel:
    """Rank the catalogue (interaction tracks plus ``tracks``) by number of distinct listeners."""
    ids = [interactions["track_id"].to_numpy(dtype=np.int64)]
    if tracks is not None:
        ids.append(tracks["id"].to_numpy(dtype=np.int64))
    item_ids = unique_ids(np.concatenate(ids))
    listeners = listener_counts(interactions, item_ids)
    # Stable sort on the negated count keeps ties in ascending track id order.
    ordering = np.argsort(-listeners, kind="stable")
    return PopularityModel(item_ids=item_ids, listeners=listeners, ordering=ordering)


@dataclass(frozen=True, eq=False)
class GenrePopularityModel(PopularityModel):
    """Popularity within the user's favourite genre, filled up with global popularity.

    Genres are codes (-1: none, so global popularity): one small integer per track and per user
    rather than an ordering of the whole catalogue per genre.
    """

    item_genres: np.ndarray
    user_ids: np.ndarray
    user_genres: np.ndarray

    def global_popularity(self) -> PopularityModel:
        """Global popularity over the same counts (what fills up a genre's list)."""
        return PopularityModel(self.item_ids, self.listeners, self.ordering)

    def genre_of(self, user_ids: np.ndarray) -> np.ndarray:
        position = lookup_indices(self.user_ids, user_ids)
        return np.where(position >= 0, self.user_genres[np.maximum(position, 0)], -1)

    def genre_ordering(self, genre: int) -> np.ndarray:
        """The genre's tracks, then the others."""
        if genre < 0:
            return self.ordering
        in_genre = self.item_genres[self.ordering] == genre
        return np.concatenate([self.ordering[in_genre], self.ordering[~in_genre]])


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
        **vars(base),
        item_genres=item_genres.codes.astype(np.int32),
        user_ids=favourites["id"].to_numpy(dtype=np.int64),
        user_genres=user_genres.astype(np.int32),
    )


# What evaluation and serving score: each has ``item_ids`` and ``recommend``.
Recommender = AlsModel | PopularityModel


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
    """Exactly ``k`` tracks outside ``interactions`` for every user (fewer if the catalogue ends).

    Users known to the model get ALS (``source='als'``), the others genre-aware popularity
    (``cold_start``), which also tops up an ALS user left short; ordered by user then rank.
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

    # Already-recommended ALS tracks join the history so the top-up never repeats them.
    def heard(frame: pd.DataFrame) -> sp.csr_matrix:
        return known_items_matrix(frame, needing_ids, cold_start.item_ids)

    fill = cold_start.recommend(needing_ids, heard(interactions) + heard(als_recs), k)
    have = needing.reindex(fill["user_id"]).to_numpy()
    fill["rank"] = fill["rank"].to_numpy() + have
    fill = fill[fill["rank"].to_numpy() <= k].assign(source=SOURCE_COLD_START)

    # Interleave the top-ups column by column: a concatenated then sorted frame would hold every
    # recommendation three times at once (30M rows at 1M users).
    def column(name: str) -> np.ndarray:
        return np.concatenate([als_recs[name].to_numpy(), fill[name].to_numpy()])

    order = np.lexsort((column("rank"), column("user_id")))
    return pd.DataFrame({name: column(name)[order] for name in als_recs.columns}, copy=False)
