"""ALS collaborative filtering, the popularity baselines and their top-k selection.

Both recommenders answer ``recommend(user_ids, history, k)``: ``[user_id, track_id, score, rank]``
of each user's best ``k`` tracks outside ``history[user_id, track_id]``, by user then rank.
implicit and scipy are imported where used: loading the Dagster definitions skips them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Annotated, Final

import numpy as np
import pandas as pd
import pydantic
from pydantic import Field
from threadpoolctl import threadpool_limits

from moovitamix_assets.ml import RECOMMENDATION_COLUMNS

if TYPE_CHECKING:
    import scipy.sparse as sp

log = logging.getLogger(__name__)

SOURCE_ALS: Final = "als"
SOURCE_COLD_START: Final = "cold_start"
SOURCE_FALLBACK: Final = "genre_popularity"

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


# Ids go through pandas' hash table: on millions of ids numpy's unique, isin and searchsorted
# took 2-17x longer (docs/performance.md).
def unique_ids(ids: np.ndarray) -> np.ndarray:
    return np.sort(pd.unique(np.asarray(ids, dtype=np.int64)))


def lookup_indices(known_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``known_ids`` (unique, sorted or not), -1 where absent."""
    return pd.Index(known_ids, dtype=np.int64).get_indexer(np.asarray(ids, dtype=np.int64))


def isin_ids(ids: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    ids = pd.Series(np.asarray(ids, dtype=np.int64), copy=False)
    return ids.isin(np.asarray(allowed, dtype=np.int64)).to_numpy()


def known_items_matrix(
    interactions: pd.DataFrame,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    values: np.ndarray | None = None,
) -> sp.csr_matrix:
    """CSR matrix: row i holds user ``user_ids[i]``'s tracks (columns: ``item_ids``; unique).

    Cells are 1, or ``values`` (one per interaction); duplicated (user, track) rows add up.
    """
    import scipy.sparse as sp

    rows = lookup_indices(user_ids, interactions["user_id"].to_numpy(dtype=np.int64))
    col = lookup_indices(item_ids, interactions["track_id"].to_numpy(dtype=np.int64))
    data = np.ones(len(rows), np.float32) if values is None else values.astype(np.float32)
    keep = (rows >= 0) & (col >= 0)
    if not keep.all():  # copies only then: 160 MB at 5M pairs
        rows, col, data = rows[keep], col[keep], data[keep]
    return sp.csr_matrix((data, (rows, col)), shape=(len(user_ids), len(item_ids)))


def _top_k(
    user_ids: np.ndarray,
    exclude: sp.csr_matrix,
    k: int,
    item_ids: np.ndarray,
    candidates: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    batch_size: int = 10_000,
) -> pd.DataFrame:
    """Each user's first ``k`` candidates that ``exclude`` (a row per user) allows.

    ``candidates(rows, n)`` gives the n best (item positions, scores) of each of ``rows`` (positions
    in ``user_ids``), best first. Asking for k plus the rows' longest history and dropping the heard
    tracks afterwards is 2.4x faster than implicit's own per-row filter (``filter_query_items``).
    """
    k = min(k, len(item_ids))
    # Filled batch by batch into arrays sized for the whole result: concatenating per-batch frames
    # would hold every recommendation twice (10M rows at 1M users).
    out = [np.empty(len(user_ids) * k, dtype=t) for t in (np.int64, np.int64, float, np.int64)]
    filled = 0
    for start in range(0, len(user_ids), batch_size):
        batch = exclude[start : start + batch_size]
        # The 1% longest histories are selected apart: one heavy listener made ALS scoring of
        # 100,000 users take 47 s in one call, 3 s so.
        lengths = np.diff(batch.indptr)
        long = lengths > np.percentile(lengths, 99)
        found = []
        for group in (g for g in (np.flatnonzero(~long), np.flatnonzero(long)) if len(g)):
            wanted = min(k + int(lengths[group].max()), len(item_ids))
            step = max(1, _SELECTION_CELLS // wanted)  # bounds the work matrices below
            for members in (group[i : i + step] for i in range(0, len(group), step)):
                heard, rows = batch[members], start + members
                items, scores = candidates(rows, wanted)
                allowed = np.ones(items.shape, dtype=bool)
                if heard.nnz:
                    query = np.repeat(np.arange(len(members)), wanted)
                    allowed = np.asarray(heard[query, items.ravel()]).reshape(items.shape) == 0
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


@dataclass(frozen=True, eq=False)
class AlsModel:
    """A trained ALS model: factors plus the id <-> matrix index maps (ids sorted ascending)."""

    params: AlsParams
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray

    def recommend(
        self, user_ids: np.ndarray, history: pd.DataFrame, k: int, *, batch_size: int = 10_000
    ) -> pd.DataFrame:
        """Top-k tracks by ALS score for the users the model knows (the others get no row)."""
        from implicit.cpu.topk import topk

        index = lookup_indices(self.user_ids, unique_ids(user_ids))
        index = index[index >= 0]
        user_ids = self.user_ids[index]

        def candidates(rows: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
            # implicit parallelises the selection itself; threaded BLAS on top of it
            # oversubscribes the cores (measured about twice slower on 2 cores).
            with threadpool_limits(limits=1, user_api="blas"):
                return topk(self.item_factors, self.user_factors[index[rows]], wanted)

        exclude = known_items_matrix(history, user_ids, self.item_ids)
        return _top_k(user_ids, exclude, k, self.item_ids, candidates, batch_size)


def train_als(interactions: pd.DataFrame, params: AlsParams, *, num_threads: int = 0) -> AlsModel:
    """Fit implicit's CPU ALS on confidences ``1 + alpha * weight`` (num_threads 0: all cores)."""
    from implicit.cpu.als import AlternatingLeastSquares

    user_ids = unique_ids(interactions["user_id"])
    item_ids = unique_ids(interactions["track_id"])
    confidence = 1.0 + params.alpha * interactions["weight"].to_numpy(dtype=np.float64)
    matrix = known_items_matrix(interactions, user_ids, item_ids, confidence)
    # OpenBLAS threads inside implicit's own parallel loop oversubscribe the cores (implicit
    # warns it can be 10x slower), so BLAS is pinned to one thread while fitting.
    with threadpool_limits(limits=1, user_api="blas"):
        # The confidences already hold alpha: implicit's own stays neutral.
        settings = {**params.as_dict(), "alpha": 1.0}
        als = AlternatingLeastSquares(**settings, dtype=np.float32, num_threads=num_threads)
        als.fit(matrix, show_progress=False)
    log.info("Trained ALS on %s users x tracks (%d interactions)", matrix.shape, matrix.nnz)
    factors = [np.ascontiguousarray(f, np.float32) for f in (als.user_factors, als.item_factors)]
    return AlsModel(params, user_ids, item_ids, *factors)


@dataclass(frozen=True)
class FallbackModel:
    """The registry's genre-aware popularity fallback: refitted on each day's listening."""


# What the registry holds and serving accepts.
ServingModel = AlsModel | FallbackModel


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

    def global_popularity(self) -> PopularityModel:
        """Global popularity over the same counts (what fills up a genre's list)."""
        return replace(self, user_ids=self.user_ids[:0], user_genres=self.user_genres[:0])

    def genre_ordering(self, genre: int) -> np.ndarray:
        """The order a fan of ``genre`` is offered the items: its tracks, then the others."""
        if genre < 0:
            return self.ordering
        in_genre = self.item_genres[self.ordering] == genre
        return np.concatenate([self.ordering[in_genre], self.ordering[~in_genre]])

    def recommend(self, user_ids: np.ndarray, history: pd.DataFrame, k: int) -> pd.DataFrame:
        user_ids = unique_ids(user_ids)
        exclude = known_items_matrix(history, user_ids, self.item_ids)
        # Unknown users (position -1) read the appended -1: no genre.
        genre = np.append(self.user_genres, -1)[lookup_indices(self.user_ids, user_ids)]
        codes, genre = np.unique(genre, return_inverse=True)
        # A row skips at most its own history: k plus the longest history suffice.
        n = min(k + int(np.diff(exclude.indptr).max(initial=0)), len(self.item_ids))
        prefixes = np.array([self.genre_ordering(int(c))[:n] for c in codes], dtype=np.int64)

        def candidates(rows: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
            items = prefixes[genre[rows], :wanted]
            return items, self.listeners[items]

        return _top_k(user_ids, exclude, k, self.item_ids, candidates)

    def top_up(
        self, recs: pd.DataFrame, user_ids: np.ndarray, history: pd.DataFrame, k: int
    ) -> pd.DataFrame:
        """``recs`` with each of ``user_ids``' lists shorter than ``k`` (or none) filled up from
        this model (``source='cold_start'``), ordered by user then rank."""
        per_user = recs.groupby("user_id").size().reindex(user_ids, fill_value=0)
        short = per_user[per_user < k]
        if not len(short):
            return recs  # no copy of millions of rows
        # Already-recommended tracks join the history so the top-up never repeats them.
        heard = pd.concat([history, recs[["user_id", "track_id"]]], ignore_index=True)
        fill = self.recommend(short.index.to_numpy(), heard, k)
        fill["rank"] += short.reindex(fill["user_id"]).to_numpy()
        fill = fill[fill["rank"].to_numpy() <= k].assign(source=SOURCE_COLD_START)
        # Interleaved column by column: a concatenated then sorted frame would hold every
        # recommendation three times at once (30M rows at 1M users).
        parts = {c: (recs[c].to_numpy(), fill[c].to_numpy()) for c in recs.columns}
        rows = np.lexsort([np.concatenate(parts[c]) for c in ("rank", "user_id")])
        return pd.DataFrame({c: np.concatenate(p)[rows] for c, p in parts.items()}, copy=False)


def fit_popularity(
    interactions: pd.DataFrame,
    tracks: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
) -> PopularityModel:
    """Rank the catalogue (interaction tracks plus ``tracks[id]``) by distinct listeners; with
    ``users[id, favorite_genres]`` and ``tracks[genres]``, each user's favourite genre first."""
    ids = [interactions["track_id"].to_numpy(dtype=np.int64)]
    if tracks is not None:
        ids.append(tracks["id"].to_numpy(dtype=np.int64))
    item_ids = unique_ids(np.concatenate(ids))
    # A cell per (user, track) pair, repeats summed: its columns' lengths are distinct listeners.
    heard = known_items_matrix(interactions, unique_ids(interactions["user_id"]), item_ids)
    listeners = np.diff(heard.tocsc().indptr).astype(np.int64)
    # Stable sort on the negated count keeps ties in ascending track id order.
    ordering = np.argsort(-listeners, kind="stable")
    no_genre = np.full(len(item_ids), -1, dtype=np.int32)
    model = PopularityModel(item_ids, listeners, ordering, no_genre, item_ids[:0], no_genre[:0])
    if users is None:
        return model
    track_genres = tracks.drop_duplicates("id").set_index("id")["genres"]
    item_genres = pd.Categorical(track_genres.reindex(item_ids).astype(object))
    favourites = users.drop_duplicates("id").sort_values("id")
    # A favourite genre no track has is coded -1: that user gets global popularity.
    user_genres = item_genres.categories.get_indexer(favourites["favorite_genres"].astype(object))
    return replace(
        model,
        item_genres=item_genres.codes.astype(np.int32),
        user_ids=favourites["id"].to_numpy(dtype=np.int64),
        user_genres=user_genres.astype(np.int32),
    )


# What evaluation and serving score: each has ``item_ids`` and ``recommend``.
Recommender = AlsModel | PopularityModel
