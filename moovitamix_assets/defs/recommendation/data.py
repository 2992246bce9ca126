"""The model layer's inputs: only the needed columns of ``core``, as CSV through ``COPY`` that
pandas' C parser reads straight into typed columns (a row-by-row fetch of 5M interactions builds
millions of tuples), in one REPEATABLE READ transaction: one committed state of ``core``."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa

from moovitamix_assets.defs.core.assets import (
    INTERACTIONS_TABLE,
    TRACKS_TABLE,
    USERS_TABLE,
    core_table,
)
from moovitamix_assets.defs.recommendation.registry import DataSnapshot
from moovitamix_assets.ml import INTERACTION_COLUMNS

# Narrow where the values allow: the weight feeds float32 confidences, play counts are small.
_INTERACTION_DTYPES: Final = {
    "user_id": np.int64,
    "track_id": np.int64,
    "play_count": np.int32,
    "weight": np.float32,
    "last_position": np.int64,
}


def read_model_inputs(
    engine: sa.Engine,
    *,
    columns: Sequence[str] = INTERACTION_COLUMNS,
    with_users_and_tracks: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, DataSnapshot]:
    """The interactions (only ``columns``: at 5M rows each is tens of MB), the active users
    ``[id, favorite_genres]`` and tracks ``[id, genres]`` of ``core`` (none unless asked) and
    their ``DataSnapshot``."""
    with engine.connect().execution_options(
        isolation_level="REPEATABLE READ", postgresql_readonly=True
    ) as conn:
        cursor = conn.connection.driver_connection.cursor()

        def copy_frame(query: str, dtypes: dict[str, Any]) -> pd.DataFrame:
            # Through a temporary file, not memory: at 5M rows the CSV is ~150 MB of text.
            with tempfile.TemporaryFile() as buffer:
                cursor.copy_expert(
                    f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)", buffer
                )
                buffer.seek(0)
                return pd.read_csv(buffer, dtype=dtypes, keep_default_na=False, na_values=[""])

        interactions = copy_frame(
            f"SELECT {', '.join(columns)} FROM {core_table(INTERACTIONS_TABLE)}",
            {name: _INTERACTION_DTYPES[name] for name in columns},
        )
        # A few genres repeated a million times: categories, not a million strings.
        users, tracks = (
            copy_frame(
                f"SELECT id, {genres} FROM {core_table(table)} WHERE is_active"
                + ("" if with_users_and_tracks else " LIMIT 0"),
                {"id": np.int64, genres: "category"},
            )
            for table, genres in ((USERS_TABLE, "favorite_genres"), (TRACKS_TABLE, "genres"))
        )
        # Interactions are the active pairs of the newest merged listening snapshot: their newest
        # last_seen is that snapshot's date.
        snapshot_date = conn.execute(
            sa.text(f"SELECT max(last_seen) FROM {core_table(INTERACTIONS_TABLE)}")
        ).scalar()
    snapshot = DataSnapshot(len(interactions), len(users), len(tracks), snapshot_date)
    return interactions, users, tracks, snapshot


def count_interactions(engine: sa.Engine) -> int | None:
    """Rows of ``core.user_track_interactions``, or None when the table does not exist yet."""
    table = core_table(INTERACTIONS_TABLE)
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
            return None
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
