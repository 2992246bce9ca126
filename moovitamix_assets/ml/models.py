"""ALS collaborative filtering, popularity baselines and the recommendation entry points.

Every recommender answers ``recommend(user_ids, exclude, k)`` with ``[user_id, track_id, score,
rank]``; ``exclude`` (``known_items_matrix``) is a CSR matrix, a row per user and a column per
``item_ids``, whose non-zero cells are never recommended.
"""

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Final, NamedTuple

import numpy as np
import pandas as pd
import pydantic
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.topk import topk
from pydantic import Field
from threadpoolctl import threadpool_limits

from moovitamix_assets.ml import RECOMMENDATION_COLUMNS

log = logging.getLogger(__name__)

SOURCE_ALS: Final = "als"
SOURCE_COLD_START: Final = "cold_start"
SOURCE_FALLBACK: Final = "genre_popularity"

# implicit marks filtered items with the lowest float32 instead of dropping them.
_FILTERED_SCORE: Final = float(np.finfo(np.float32).min)
# Cells of the work matrices of a top-k selection at once (~40 bytes each).
_SELECTION_CELLS: Final = 2_000_000


@pydantic.dataclasses.dataclass(frozen=True)
class AlsParams:
    """Hyper-parameters of the ALS model.

    Defaults from bench/bench_recommendations.py: precision@10 was flat from 24 to 64 factors and
    6 to 10 sweeps, so the cheapest setting wins; alpha 2 ranked slightly better than 10 or 40.
    """

    factors: Annotated[int, Field(ge=1)] = 32
    regularization: Annotated[float, Field(ge=0)] = 0.05
    alpha: Annotated[float, Field(gt=0)] = 2.0
    iterations: Annotated[int, Field(ge=1)] = 8
    random_state: int = 42

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


class InteractionMatrix(NamedTuple):
    """A user x item confidence matrix and the ids of its rows and columns."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray


def known_items_matrix(
    interactions: pd.DataFrame,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    values: np.ndarray | None = None,
) -> sp.csr_matrix:
    """CSR matrix: row i holds user ``user_ids[i]``'s tracks (columns: ``item_ids``; unique).

    Cells are 1, or ``values`` (one per interaction); duplicated (user, track) rows add up.
    """
    rows = lookup_indices(user_ids, interactions["user_id"].to_numpy(dtype=np.int64))
    col = lookup_indices(item_ids, interactions["track_id"].to_numpy(dtype=np.int64))
    data = np.ones(len(rows), np.float32) if values is None else values.astype(np.float32)
    keep = (rows >= 0) & (col >= 0)
    if not keep.all():  # copies only then: 160 MB at 5M pairs
        rows, col, data = rows[keep], col[keep], data[keep]
    return sp.csr_matrix((data, (rows, col)), shape=(len(user_ids), len(item_ids)))


def build_interaction_matrix(interactions: pd.DataFrame, alpha: float) -> InteractionMatrix:
    """The CSR user x item matrix of confidences ``1 + alpha * weight``, ids sorted."""
    user_ids = unique_ids(interactions["user_id"].to_numpy())
    item_ids = unique_ids(interactions["track_id"].to_numpy())
    confidence = 1.0 + alpha * interactions["weight"].to_numpy(dtype=np.float64)
    matrix = known_items_matrix(interactions, user_ids, item_ids, confidence)
    return InteractionMatrix(matrix, user_ids, item_ids)


def train_als(interactions: pd.DataFrame, params: AlsParams, *, num_threads: int = 0) -> AlsModel:
    """Fit implicit's CPU ALS on the interactions (``num_threads`` 0: one per core)."""
    if len(interactions) == 0:
        raise ValueError("cannot train ALS on an empty interactions frame")
    data = build_interaction_matrix(interactions, params.alpha)
    # OpenBLAS threads inside implicit's own parallel loop oversubscribe the cores (implicit
    # warns it can be 10x slower), so BLAS is pinned to one thread while fitting.
    with threadpool_limits(limits=1, user_api="blas"):
        # Confidences are already 1 + alpha * weight: implicit's own alpha stays neutral.
        settings = {**params.as_dict(), "alpha": 1.0}
        als = AlternatingLeastSquares(**settings, dtype=np.float32, num_threads=num_threads)
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


def _history_groups(exclude: sp.csr_matrix) -> list[np.ndarray]:
    """The rows of ``exclude`` (at least one), the 1% longest histories apart from the others.

    A selection asks each row for k items plus its longest history: one heavy listener made ALS
    scoring of 100,000 users take 47 s in one call, 3 s so.
    """
    lengths = np.diff(exclude.indptr)
    long = lengths > np.percentile(lengths, 99)
    return [rows for rows in (np.flatnonzero(~long), np.flatnonzero(long)) if len(rows)]


def _top_k(
    user_ids: np.ndarray,
    exclude: sp.csr_matrix | None,
    k: int,
    item_ids: np.ndarray,
    candidates: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    batch_size: int = 10_000,
) -> pd.DataFrame:
    """Each user's first ``k`` candidates that ``exclude`` allows, ordered by user then rank.

    ``candidates(rows, n)`` gives the n best (item positions, scores) of each of ``rows`` (positions
    in ``user_ids``), best first. Asking for k plus the rows' longest history and dropping the heard
    tracks afterwards is 2.4x faster than implicit's own per-row filter (``filter_query_items``).
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    shape = (len(user_ids), len(item_ids))
    if exclude is None:
        exclude = sp.csr_matrix(shape, dtype=np.float32)
    if exclude.shape != shape:
        raise ValueError(
            f"exclude must have shape {shape} (one row per user, one column per item of the"
            f" model), got {exclude.shape}"
        )
    k = min(k, len(item_ids))
    # Filled batch by batch into arrays sized for the whole result: concatenating per-batch frames
    # would hold every recommendation twice (10M rows at 1M users).
    out = [np.empty(len(user_ids) * k, dtype=t) for t in (np.int64, np.int64, float, np.int64)]
    filled = 0
    for start in range(0, len(user_ids), batch_size):
        batch = exclude[start : start + batch_size]
        found = []
        for group in _history_groups(batch):
            wanted = min(k + int(np.diff(batch[group].indptr).max()), len(item_ids))
            step = max(1, _SELECTION_CELLS // wanted)  # bounds the work matrices below
            for members in (group[i : i + step] for i in range(0, len(group), step)):
                heard, rows = batch[members], start + members
                items, scores = candidates(rows, wanted)
                allowed = scores > _FILTERED_SCORE
                if heard.nnz:
                    query = np.repeat(np.arange(len(members)), wanted)
                    allowed &= np.asarray(heard[query, items.ravel()]).reshape(items.shape) == 0
                rank = np.cumsum(allowed, axis=1)
                r, c = np.nonzero(allowed & (rank <= k))
                found.append((rows[r], items[r, c], scores[r, c], rank[r, c]))
        row, item, score, rank = (np.concatenate(part) for part in zip(*found, strict=True))
        order = np.lexsort((rank, row))
        found = (user_ids[row[order]], item_ids[item[order]], score[order], rank[order])
        for target, values in zip(out, found, strict=True):
            target[filled : filled + len(order)] = values
        filled += len(order)
    columns = zip(RECOMMENDATION_COLUMNS, out, strict=True)
    return pd.DataFrame({name: values[:filled] for name, values in columns}, copy=False)


def recommend_top_k(
    model: AlsModel,
    user_ids: np.ndarray,
    exclude: sp.csr_matrix | None,
    k: int,
    *,
    batch_size: int = 10_000,
) -> pd.DataFrame:
    """Top-k allowed tracks by ALS score for users known to the model, ordered by user and rank.

    A user gets fewer than ``k`` only when ``exclude`` leaves fewer of the model's tracks.
    """
    index = model.user_index(user_ids)
    if (index < 0).any():
        raise ValueError(
            f"{int((index < 0).sum())} users are unknown to the model (cold start): "
            "use recommend_for_all_users"
        )

    def candidates(rows: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        # implicit parallelises the selection itself; threaded BLAS on top of it oversubscribes
        # the cores (measured about twice slower on 2 cores).
        with threadpool_limits(limits=1, user_api="blas"):
            factors = model.user_factors[index[rows]]
            return topk(model.item_factors, factors, wanted)

    return _top_k(user_ids, exclude, k, model.item_ids, candidates, batch_size)


@dataclass(frozen=True, eq=False)
class PopularityModel:
    """Tracks ranked by distinct listeners (ties by track id), the user's favourite genre first.

    Genres are codes (-1: none, so global popularity): one small integer per track and per user
    rather than an ordering of the whole catalogue per genre. Without users: global popularity.
    """

    item_ids: np.ndarray
    listeners: np.ndarray
    ordering: np.ndarray
    item_genres: np.ndarray
    user_ids: np.ndarray
    user_genres: np.ndarray

    def global_popularity(self) -> "PopularityModel":
        """Global popularity over the same counts (what fills up a genre's list)."""
        return replace(self, user_ids=self.user_ids[:0], user_genres=self.user_genres[:0])

    def genre_ordering(self, genre: int) -> np.ndarray:
        """The order a fan of ``genre`` is offered the items: its tracks, then the others."""
        if genre < 0:
            return self.ordering
        in_genre = self.item_genres[self.ordering] == genre
        return np.concatenate([self.ordering[in_genre], self.ordering[~in_genre]])

    def recommend(
        self, user_ids: np.ndarray, exclude: sp.csr_matrix | None, k: int
    ) -> pd.DataFrame:
        # Unknown users (position -1) read the appended -1: no genre.
        genre = np.append(self.user_genres, -1)[lookup_indices(self.user_ids, user_ids)]
        codes, genre = np.unique(genre, return_inverse=True)
        # A row skips at most its own history: k plus the longest history suffice.
        longest = 0 if exclude is None else int(np.diff(exclude.indptr).max(initial=0))
        n = min(k + longest, len(self.item_ids))
        prefixes = np.array([self.genre_ordering(int(c))[:n] for c in codes], dtype=np.int64)

        def candidates(rows: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
            items = prefixes.reshape(len(codes), n)[genre[rows], :wanted]
            return items, self.listeners[items]

        return _top_k(user_ids, exclude, k, self.item_ids, candidates)


def fit_popularity(
    interactions: pd.DataFrame, tracks: pd.DataFrame | None = None
) -> PopularityModel:
    """Rank the catalogue (interaction tracks plus ``tracks``) by number of distinct listeners."""
    ids = [interactions["track_id"].to_numpy(dtype=np.int64)]
    if tracks is not None:
        ids.append(tracks["id"].to_numpy(dtype=np.int64))
    item_ids = unique_ids(np.concatenate(ids))
    # A cell per (user, track) pair, repeats summed: its columns' lengths are distinct listeners.
    users = unique_ids(interactions["user_id"].to_numpy())
    heard = known_items_matrix(interactions, users, item_ids).tocsc()
    listeners = np.diff(heard.indptr).astype(np.int64)
    # Stable sort on the negated count keeps ties in ascending track id order.
    ordering = np.argsort(-listeners, kind="stable")
    no_genre = np.full(len(item_ids), -1, dtype=np.int32)
    return PopularityModel(item_ids, listeners, ordering, no_genre, users[:0], no_genre[:0])


def fit_genre_popularity(
    interactions: pd.DataFrame, tracks: pd.DataFrame, users: pd.DataFrame
) -> PopularityModel:
    """Fit the genre baseline from ``tracks[id, genres]`` and ``users[id, favorite_genres]``."""
    base = fit_popularity(interactions, tracks)
    track_genres = tracks.drop_duplicates("id").set_index("id")["genres"]
    item_genres = pd.Categorical(track_genres.reindex(base.item_ids).astype(object))
    favourites = users.drop_duplicates("id").sort_values("id")
    # A favourite genre no track has is coded -1: that user gets global popularity.
    user_genres = item_genres.categories.get_indexer(favourites["favorite_genres"].astype(object))
    return replace(
        base,
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
    cold_start: PopularityModel | None = None,
) -> pd.DataFrame:
    """Exactly ``k`` tracks outside ``interactions`` for every user (fewer if the catalogue ends).

    Users known to the model get ALS (``source='als'``), the others genre-aware popularity
    (``cold_start``), which also tops up an ALS user left short; ordered by user then rank.
    """
    if cold_start is None:
        cold_start = fit_genre_popularity(interactions, tracks, users)
    user_ids = unique_ids(users["id"].to_numpy(dtype=np.int64))
    known = model.user_index(user_ids) >= 0
    als_recs = recommend_excluding_history(model, user_ids[known], interactions, k)
    als_recs["source"] = SOURCE_ALS

    per_user = als_recs.groupby("user_id").size().reindex(user_ids, fill_value=0)
    needing = per_user[per_user < k]
    if not len(needing):
        # The common case at scale: no copy of millions of rows (already ordered by user, rank).
        return als_recs
    needing_ids = needing.index.to_numpy(dtype=np.int64)

    # Already-recommended ALS tracks join the history so the top-up never repeats them.
    heard = known_items_matrix(interactions, needing_ids, cold_start.item_ids)
    heard += known_items_matrix(als_recs, needing_ids, cold_start.item_ids)
    fill = cold_start.recommend(needing_ids, heard, k)
    fill["rank"] += needing.reindex(fill["user_id"]).to_numpy()
    fill = fill[fill["rank"].to_numpy() <= k].assign(source=SOURCE_COLD_START)

    # Interleave the top-ups column by column: a concatenated then sorted frame would hold every
    # recommendation three times at once (30M rows at 1M users).
    def column(name: str) -> np.ndarray:
        return np.concatenate([als_recs[name].to_numpy(), fill[name].to_numpy()])

    order = np.lexsort((column("rank"), column("user_id")))
    return pd.DataFrame({name: column(name)[order] for name in als_recs.columns}, copy=False)
