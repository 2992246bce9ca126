"""Arrange the core tables the recommendation layer reads: from the API stand-in or synthetic data.

``load_standin_core`` goes the real way (raw snapshots, then the core merges); ``load_core_frames``
COPYs frames straight into ``core.users``, ``core.tracks`` and ``core.listen_pairs`` (the
``core.user_track_interactions`` view reads its active pairs), for tests that only need the model
layer's input.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import sqlalchemy as sa

from moovitamix_api.config import DataConfig
from moovitamix_api.data import Dataset
from moovitamix_assets.defs.core.assets import (
    ensure_core_schema,
    interaction_figures,
    merge_listen_events,
    merge_tracks,
    merge_users,
)
from moovitamix_assets_tests.defs.core.raw_tables import load_raw_snapshot

SNAPSHOT_DAY = dt.date(2026, 11, 20)


def load_standin_core(
    engine: sa.Engine, users: int = 2_000, tracks: int = 1_000, day: dt.date = SNAPSHOT_DAY
) -> None:
    """Store one day of the stand-in's data in raw and merge it into core, as the daily run does."""
    dataset = Dataset(
        DataConfig(
            seed=5, users=users, tracks=tracks, mean_listens=30, day=day, listen_null_rate=0.0
        )
    )
    for endpoint in ("users", "tracks", "listen_history"):
        load_raw_snapshot(engine, endpoint, day, dataset.records(endpoint))
    merge_users(engine, day)
    merge_tracks(engine, day)
    merge_listen_events(engine, day)
    interaction_figures(engine)


def _copy(engine: sa.Engine, table: str, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    buffer.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cur:
            cur.copy_expert(
                f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)", buffer
            )
        raw.driver_connection.commit()
    finally:
        raw.close()


def load_core_frames(
    engine: sa.Engine,
    users: pd.DataFrame,
    tracks: pd.DataFrame,
    interactions: pd.DataFrame,
    day: dt.date = SNAPSHOT_DAY,
    *,
    inactive_tracks: tuple[int, ...] = (),
) -> None:
    """Replace the core tables' rows with ``users``, ``tracks`` and ``interactions``.

    Args:
        engine: Engine of the test database.
        users: ``[id, favorite_genres]`` (all active).
        tracks: ``[id, genres]``; ``inactive_tracks`` are marked removed from the catalogue.
        interactions: The model layer's interactions contract.
        day: Snapshot date written in ``first_seen``/``last_seen``.
        inactive_tracks: Track ids stored with ``is_active = false``.
    """
    ensure_core_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE core.users, core.tracks, core.listen_pairs, core.merge_log"))
    _copy(
        engine,
        "core.users",
        users[["id", "favorite_genres"]].assign(first_seen=day, last_seen=day, is_active=True),
    )
    track_rows = tracks[["id", "genres"]].assign(first_seen=day, last_seen=day)
    track_rows["is_active"] = ~track_rows["id"].isin(list(inactive_tracks))
    _copy(engine, "core.tracks", track_rows)
    list_length = interactions.groupby("user_id")["last_position"].transform("max") + 1
    _copy(
        engine,
        "core.listen_pairs",
        interactions[["user_id", "track_id", "play_count", "weight"]].assign(
            position=interactions["last_position"].to_numpy(dtype=np.int64),
            list_length=list_length.to_numpy(dtype=np.int64),
            first_seen=day,
            last_seen=day,
            is_active=True,
            user_known=True,
            track_known=True,
        ),
    )
