"""The model registry in PostgreSQL: one row per model (the popularity fallback too, so a
rollback can return to it), exactly one ``production``, each artifact a large object written in
its row's transaction (a ``bytea`` parameter travels as hex built whole in memory; a model
reaches ~250 MB at 1M users)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Final, NamedTuple

import sqlalchemy as sa

from moovitamix_assets.constants import ML_SCHEMA
from moovitamix_assets.ml.artifacts import (
    CHUNK_BYTES,
    ModelArtifact,
    deserialize_model,
    serialize_model,
)
from moovitamix_assets.ml.models import SOURCE_FALLBACK, FallbackModel, ServingModel
from moovitamix_assets.ml.pipeline import RECOMMENDATION_TABLE_COLUMNS
from moovitamix_assets.warehouse.database import create_schema_sql, quote_ident

REGISTRY_TABLE: Final = "model_registry"
EVALUATIONS_TABLE: Final = "model_evaluations"
RECOMMENDATIONS_TABLE: Final = "user_recommendations"  # a view of SERVED_TABLE
SERVED_TABLE: Final = "user_recommendations_served"

STATUS_CANDIDATE: Final = "candidate"
STATUS_PRODUCTION: Final = "production"
STATUS_RETIRED: Final = "retired"
MODEL_TYPE_ALS: Final = "als"
MODEL_TYPE_FALLBACK: Final = SOURCE_FALLBACK
FALLBACK_REASON: Final = (
    "the genre-aware popularity fallback: serves until a trained model beats it significantly"
)


def ml_table(table: str) -> str:
    """Quoted ``ml.<table>`` for SQL text."""
    return f"{quote_ident(ML_SCHEMA)}.{quote_ident(table)}"


_REGISTRY = ml_table(REGISTRY_TABLE)
_PUBLISHED = ml_table(RECOMMENDATIONS_TABLE)
_SERVED = ml_table(SERVED_TABLE)
_COLUMNS = ", ".join(RECOMMENDATION_TABLE_COLUMNS)
_LOG = ml_table("model_registry_log")
_EVALUATIONS = ml_table(EVALUATIONS_TABLE)
_LOCK_SQL: Final = "SELECT pg_advisory_xact_lock(hashtext(:key))"

_DDL: Final = (
    create_schema_sql(ML_SCHEMA),
    f"""
    CREATE TABLE IF NOT EXISTS {_REGISTRY} (
        version integer PRIMARY KEY,
        status text NOT NULL CHECK (status IN ('candidate', 'production', 'retired')),
        trained_at timestamptz NOT NULL,
        run_id text,
        data_interactions bigint NOT NULL,
        data_users bigint NOT NULL,
        data_tracks bigint NOT NULL,
        data_snapshot_date date,
        parameters jsonb NOT NULL,
        metrics jsonb NOT NULL,
        gate_passed boolean NOT NULL,
        gate_reason text NOT NULL,
        gate_figures jsonb NOT NULL,
        promoted_at timestamptz,
        retired_at timestamptz,
        artifact oid NOT NULL,
        artifact_sha256 text NOT NULL,
        artifact_bytes bigint NOT NULL
    )
    """,
    # A second production row is a bug the database refuses, whatever the code does.
    f"""
    CREATE UNIQUE INDEX IF NOT EXISTS model_registry_one_production
        ON {_REGISTRY} (status) WHERE status = 'production'
    """,
    f"CREATE INDEX IF NOT EXISTS model_registry_run_id_idx ON {_REGISTRY} (run_id)",
    # Registries made before the fallback was a model hold ALS models only. Checked first: an
    # ALTER TABLE locks the registry exclusively even when the column is there, on every call.
    f"""
    DO $$ BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM information_schema.columns
            WHERE table_schema = '{ML_SCHEMA}' AND table_name = '{REGISTRY_TABLE}'
                AND column_name = 'model_type'
        ) THEN
            ALTER TABLE {_REGISTRY} ADD COLUMN model_type text NOT NULL DEFAULT 'als';
        END IF;
    END $$
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {_LOG} (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        version integer NOT NULL,
        action text NOT NULL,
        detail text NOT NULL
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {_EVALUATIONS} (
        version integer NOT NULL,
        evaluated_at timestamptz NOT NULL,
        run_id text,
        data_interactions bigint NOT NULL,
        data_snapshot_date date,
        metrics jsonb NOT NULL,
        PRIMARY KEY (version, evaluated_at)
    )
    """,
    # Serving reads the view ml.user_recommendations over ml.user_recommendations_served, which
    # each publication swaps whole (serving.py: no 10M-row DELETE, the view keeps its grants).
    # Created here for its primary key: serving reads by user, one row per user and rank.
    f"""
    DO $$
    DECLARE grant_ record;
    BEGIN
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('{_PUBLISHED}')) = 'r' THEN
            -- Published before the view (a table of that name): its rows become the served ones.
            ALTER TABLE {_PUBLISHED} RENAME TO {quote_ident(SERVED_TABLE)};
            ALTER INDEX IF EXISTS {ml_table(RECOMMENDATIONS_TABLE + "_pkey")}
                RENAME TO {quote_ident(SERVED_TABLE + "_pkey")};
        END IF;
        CREATE TABLE IF NOT EXISTS {_SERVED} (
            user_id bigint NOT NULL,
            track_id bigint NOT NULL,
            score double precision NOT NULL,
            rank bigint NOT NULL,
            source text NOT NULL,
            model_version bigint NOT NULL,
            generated_at timestamptz NOT NULL,
            PRIMARY KEY (user_id, rank)
        );
        IF to_regclass('{_PUBLISHED}') IS NULL THEN
            CREATE VIEW {_PUBLISHED} AS SELECT {_COLUMNS} FROM {_SERVED};
            -- Whoever could read the table (e.g. the serving role) reads the view.
            FOR grant_ IN
                SELECT a.privilege_type, a.grantee FROM pg_class c, aclexplode(c.relacl) a
                WHERE c.oid = to_regclass('{_SERVED}') AND a.grantee <> c.relowner
            LOOP
                EXECUTE format('GRANT %s ON {_PUBLISHED} TO %s', grant_.privilege_type,
                    CASE WHEN grant_.grantee = 0 THEN 'PUBLIC'
                    ELSE quote_ident(pg_get_userbyid(grant_.grantee)) END);
            END LOOP;
        END IF;
    END $$
    """,
)


class RegistryError(RuntimeError):
    """A registry operation is impossible: unknown version, failed gate, nothing to roll back."""


class DataSnapshot(NamedTuple):
    """What a model was trained or evaluated on, named as the registry's columns."""

    data_interactions: int
    data_users: int
    data_tracks: int
    data_snapshot_date: date | None


def ensure_registry_schema(engine: sa.Engine) -> None:
    """Create the ``ml`` tables; idempotent, under an advisory lock so first runs do not race."""
    with engine.begin() as conn:
        conn.execute(sa.text(_LOCK_SQL), {"key": "ml.ddl"})
        for ddl in _DDL:
            conn.execute(sa.text(ddl))


def _rows(conn: sa.Connection, table: str, sql: str, params: dict[str, Any]) -> list[sa.Row]:
    """The rows of ``sql`` over ``table``; none before the table exists."""
    if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
        return []
    return list(conn.execute(sa.text(sql), params))


def list_entries(engine: sa.Engine, where: str = "true", **params: Any) -> list[sa.Row]:
    """Registered models (those matching ``where``), newest first: their registry rows, with the
    ``name`` the UI and messages give them (``als v3``) and their ``state`` (the status, with a
    candidate its gate refused shown as ``refused``)."""
    sql = f"""
        SELECT *, model_type || ' v' || version AS name,
            CASE WHEN status = 'candidate' AND NOT gate_passed THEN 'refused' ELSE status END
                AS state
        FROM {_REGISTRY} WHERE {where} ORDER BY version DESC
    """
    with engine.connect() as conn:
        return _rows(conn, _REGISTRY, sql, params)


def production_entry(engine: sa.Engine) -> sa.Row | None:
    """The production model's row, or None before anything was registered."""
    return next(iter(list_entries(engine, "status = :s", s=STATUS_PRODUCTION)), None)


def latest_trained_entry(engine: sa.Engine, run_id: str | None = None) -> sa.Row | None:
    """The newest trained model (promoted or refused): the one run ``run_id`` registered if any."""
    entries = list_entries(engine, "model_type = :t", t=MODEL_TYPE_ALS)
    return next((e for e in entries if run_id and e.run_id == run_id), next(iter(entries), None))


def load_model(engine: sa.Engine, version: int) -> ServingModel:
    """Load the artifact of ``version``; ValueError when its bytes do not match their sha256."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT artifact, artifact_sha256 FROM {_REGISTRY} WHERE version = :v"),
            {"v": version},
        ).one()
        # Through a temporary file: memory holds the loaded arrays, never the payload as well.
        with tempfile.TemporaryFile() as file:
            lobject = conn.connection.driver_connection.lobject(int(row.artifact), "rb")
            try:
                shutil.copyfileobj(lobject, file, CHUNK_BYTES)
            finally:
                lobject.close()
            return deserialize_model(file, expected_sha256=row.artifact_sha256)


def _json(value: Any) -> str:
    """JSON for a jsonb column: PostgreSQL's JSON has no NaN nor infinity, so those are null."""
    finite = json.loads(json.dumps(value), parse_constant=lambda _: None)
    return json.dumps(finite, sort_keys=True, allow_nan=False)


_JSONB: Final = ("parameters", "metrics", "gate_figures")


def _insert_row(conn: sa.Connection, table: str, row: dict[str, Any]) -> None:
    """Insert ``row`` (column: value) into ``table``, the ``_JSONB`` columns as jsonb."""
    values = ", ".join(f"CAST(:{c} AS jsonb)" if c in _JSONB else f":{c}" for c in row)
    conn.execute(
        sa.text(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({values})"),
        {c: _json(v) if c in _JSONB else v for c, v in row.items()},
    )


def _log(conn: sa.Connection, version: int, action: str, detail: str) -> None:
    _insert_row(conn, _LOG, {"version": version, "action": action, "detail": detail})


@contextmanager
def _locked(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction holding the registry's advisory lock: versions and statuses change here."""
    ensure_registry_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(_LOCK_SQL), {"key": f"{ML_SCHEMA}.{REGISTRY_TABLE}"})
        yield conn


def _insert(conn: sa.Connection, artifact: ModelArtifact, **row: Any) -> int:
    """Insert and log one registry row (its columns in ``row``) under the caller's lock; return
    its version. The artifact is written in the row's transaction: a failure leaves no orphan."""
    version = int(
        conn.execute(sa.text(f"SELECT coalesce(max(version), 0) + 1 FROM {_REGISTRY}")).scalar()
    )
    lobject = conn.connection.driver_connection.lobject(0, "wb")
    try:
        artifact.file.seek(0)
        shutil.copyfileobj(artifact.file, lobject, CHUNK_BYTES)
    finally:
        lobject.close()
    _insert_row(
        conn,
        _REGISTRY,
        {
            **dict.fromkeys(_JSONB, {}),
            **row,
            "version": version,
            "artifact": int(lobject.oid),
            "artifact_sha256": artifact.sha256,
            "artifact_bytes": artifact.size_bytes,
        },
    )
    _log(conn, version, "registered" if row["gate_passed"] else "refused", row["gate_reason"])
    return version


def register_candidate(engine: sa.Engine, artifact: ModelArtifact, **row: Any) -> int:
    """Register a trained model and return its version; ``row`` holds its other columns
    (``trained_at``, ``run_id``, the ``data_*`` of its ``DataSnapshot``, ``parameters``,
    ``metrics``, ``gate_*``). A candidate its gate refused stays registered, shown as refused."""
    with _locked(engine) as conn:
        return _insert(conn, artifact, status=STATUS_CANDIDATE, model_type=MODEL_TYPE_ALS, **row)


def serving_entry(engine: sa.Engine, *, at: datetime, run_id: str | None = None) -> sa.Row:
    """The production model's row. The fallback is registered (retired beside a trained model
    that serves, for rollbacks) and serves whenever nothing else does."""
    with _locked(engine) as conn:
        fallback = conn.execute(
            sa.text(f"SELECT max(version) FROM {_REGISTRY} WHERE model_type = :t"),
            {"t": MODEL_TYPE_FALLBACK},
        ).scalar()
        if fallback is None:
            fallback = _insert(
                conn,
                serialize_model(FallbackModel()),
                **DataSnapshot(0, 0, 0, None)._asdict(),
                status=STATUS_RETIRED,
                model_type=MODEL_TYPE_FALLBACK,
                trained_at=at,
                run_id=run_id,
                gate_passed=True,
                gate_reason=FALLBACK_REASON,
            )
        serving = f"SELECT 1 FROM {_REGISTRY} WHERE status = 'production'"
        if conn.execute(sa.text(serving)).first() is None:
            _make_production(conn, fallback, "promoted", "nothing served: the fallback serves")
    return production_entry(engine)  # type: ignore[return-value]


def _make_production(conn: sa.Connection, version: int, action: str, detail: str) -> int | None:
    """Retire the production model, promote ``version`` and log ``detail`` (its ``{previous}``
    the retired version); return the retired version."""
    previous = conn.execute(
        sa.text(
            f"UPDATE {_REGISTRY} SET status = 'retired', retired_at = now() "
            "WHERE status = 'production' RETURNING version"
        )
    ).scalar()
    conn.execute(
        sa.text(
            f"UPDATE {_REGISTRY} SET status = 'production', promoted_at = now(), "
            "retired_at = NULL WHERE version = :v"
        ),
        {"v": version},
    )
    _log(conn, version, action, detail.format(previous=previous))
    return previous


def promote(engine: sa.Engine, version: int, *, rollback: bool = False) -> int | None:
    """Make ``version`` serve, retiring the production model, and return the latter's version.
    A promotion takes a candidate its gate passed (None when ``version`` already serves); a
    ``rollback``, a model that served before or the fallback."""
    with _locked(engine) as conn:
        row = conn.execute(
            sa.text(f"SELECT * FROM {_REGISTRY} WHERE version = :v FOR UPDATE"), {"v": version}
        ).first()
        if row is None:
            refusal = "it is not registered"
        elif row.status == STATUS_PRODUCTION:
            if not rollback:
                return None
            refusal = "it is already the production model"
        elif rollback:
            if row.promoted_at is not None or row.model_type == MODEL_TYPE_FALLBACK:
                detail = "rolled back from version {previous}"
                return _make_production(conn, version, "rollback", detail)
            refusal = f"it was never in production (status {row.status})"
        elif row.status != STATUS_CANDIDATE:
            refusal = (
                f"it is {row.status}; use a rollback to bring a previous production model back"
            )
        elif not row.gate_passed:
            refusal = f"its gate refused it ({row.gate_reason})"
        else:
            return _make_production(conn, version, "promoted", "replaces version {previous}")
    raise RegistryError(
        f"cannot {'roll back to' if rollback else 'promote'} version {version}: {refusal}"
    )


def record_evaluation(engine: sa.Engine, **row: Any) -> None:
    """Append one daily evaluation (``row``: its ``ml.model_evaluations`` columns)."""
    ensure_registry_schema(engine)
    with engine.begin() as conn:
        _insert_row(conn, _EVALUATIONS, row)


def latest_evaluation(engine: sa.Engine) -> sa.Row | None:
    """The production model's newest ``ml.model_evaluations`` row, with its ``name``, or None."""
    sql = f"""
        SELECT e.*, r.model_type || ' v' || r.version AS name
        FROM {_EVALUATIONS} e JOIN {_REGISTRY} r USING (version)
        WHERE r.status = 'production' ORDER BY e.evaluated_at DESC LIMIT 1
    """
    with engine.connect() as conn:
        return next(iter(_rows(conn, _EVALUATIONS, sql, {})), None)


def table_rows(engine: sa.Engine, table: str) -> int:
    """Rows of one ``ml`` table: its asset's ``dagster/row_count``."""
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {ml_table(table)}")).scalar_one()
