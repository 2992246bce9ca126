"""The MooVitamix API contract (`API_CONTRACT.md`): one typed model per endpoint, one validator.

A record is rejected only when a value cannot live in its typed column (wrong JSON type, missing
field, not a timestamp or duration, a list of non-integers). Odd but well-typed values (unknown
genre, repeated id, ``updated_at`` before ``created_at``) are kept for the audits to count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from moovitamix_assets.constants import LISTEN_HISTORY_ENDPOINT, TRACKS_ENDPOINT, USERS_ENDPOINT

# Closed vocabularies of the contract, for the checks downstream (validation keeps other values).
GENDERS: Final = frozenset({
    "Male", "Female", "Non-binary", "Genderqueer", "Genderfluid", "Agender", "Bigender",
    "Gender questioning", "Gender nonconforming",
})  # fmt: skip
# In the contract's order: code that indexes genres (synthetic data) needs a stable order.
GENRE_LIST: Final[tuple[str, ...]] = (
    "Rock", "Pop", "Hip Hop", "Jazz", "Electronic", "Classical", "Country", "Blues", "R&B",
    "Reggae", "Folk", "Metal", "Punk", "Funk", "Indie", "Alternative", "Techno",
)  # fmt: skip
GENRES: Final = frozenset(GENRE_LIST)

# ISO 8601 without a zone, as the service writes it. The fraction is optional because Python's
# isoformat() omits it when the microseconds are exactly zero (one record in a million).
TIMESTAMP_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"


def _real_timestamp(value: str) -> str:
    datetime.fromisoformat(value)  # the pattern lets 2026-13-45 through; the calendar does not
    return value


# What a BIGINT column holds; timestamps stay the service's text (PostgreSQL parses them in COPY).
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Timestamp = Annotated[str, Field(pattern=TIMESTAMP_PATTERN), AfterValidator(_real_timestamp)]
Duration = Annotated[str, Field(pattern=r"^[0-9]{2}:[0-5][0-9]$")]


class _Record(BaseModel):
    # Strict: JSON types as sent (no "12" for 12, no true for 1); fields outside the contract are
    # ignored here and reported as drift by ``validate_page``.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class Track(_Record):
    """An item of ``GET /tracks``."""

    id: Int64
    name: str
    artist: str
    songwriters: str
    duration: Duration
    genres: str
    album: str
    created_at: Timestamp
    updated_at: Timestamp


class User(_Record):
    """An item of ``GET /users``."""

    id: Int64
    first_name: str
    last_name: str
    email: str
    gender: str
    favorite_genres: str
    created_at: Timestamp
    updated_at: Timestamp


class ListenHistory(_Record):
    """An item of ``GET /listen_history``: the tracks one user listened to."""

    user_id: Int64 | None
    items: list[Int64] | None
    created_at: Timestamp
    updated_at: Timestamp


MODELS: Final[dict[str, type[_Record]]] = {
    USERS_ENDPOINT: User,
    TRACKS_ENDPOINT: Track,
    LISTEN_HISTORY_ENDPOINT: ListenHistory,
}
# The field that identifies a record, each model's first (listen_history has no id of its own).
KEY_FIELD: Final[dict[str, str]] = {e: next(iter(m.model_fields)) for e, m in MODELS.items()}
_PAGE_ADAPTERS: Final = {e: TypeAdapter(list[m]) for e, m in MODELS.items()}


def fields_of(endpoint: str) -> tuple[str, ...]:
    """The contract's field names of an endpoint, in contract order (ValueError if unknown)."""
    if endpoint not in MODELS:
        raise ValueError(f"unknown MooVitamix endpoint {endpoint!r} (known: {', '.join(MODELS)})")
    return tuple(MODELS[endpoint].model_fields)


class Reject(NamedTuple):
    """One record that cannot be loaded: where it was, which field failed and why."""

    endpoint: str
    page: int
    position: int
    record_key: str | None
    field: str | None
    reason: str
    record: str


@dataclass
class ValidatedPage:
    """Valid records (as sent, in order), rejects and field drift: of every record, and the extra
    fields of the valid ones (a valid record misses no field). Accumulates over pages."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    extra_fields: set[str] = field(default_factory=set)
    missing_fields: set[str] = field(default_factory=set)
    loaded_extra_fields: set[str] = field(default_factory=set)


def validate_page(
    endpoint: str, page: int, items: list[Any], into: ValidatedPage | None = None
) -> ValidatedPage:
    """Validate every record of a page into ``into`` (or a new ValidatedPage); a bad record
    becomes a Reject, never a silent drop."""
    expected = frozenset(fields_of(endpoint))
    bad: dict[int, list[tuple[str | None, str]]] = {}
    try:
        _PAGE_ADAPTERS[endpoint].validate_python(items)  # one call for the page, in Rust
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            position, *where = error["loc"]
            bad.setdefault(int(position), []).append(
                (str(where[0]) if where else None, _reason(error))
            )
    result = ValidatedPage() if into is None else into
    for position, item in enumerate(items):
        keys = item.keys() if isinstance(item, dict) else expected
        extra: Any = ()
        if keys != expected:
            extra = keys - expected
            result.extra_fields |= extra
            result.missing_fields |= expected - keys
        if (errors := bad.get(position)) is None:
            result.records.append(item)
            if extra:
                result.loaded_extra_fields |= extra
            continue
        field_name, reason = errors[0]
        if len(errors) > 1:
            reason += f" (also invalid: {', '.join(str(f) for f, _ in errors[1:])})"
        key = item.get(KEY_FIELD[endpoint]) if isinstance(item, dict) else None
        key = None if key is None or isinstance(key, bool) else str(key)
        record = json.dumps(item, ensure_ascii=False)
        result.rejects.append(Reject(endpoint, page, position, key, field_name, reason, record))
    return result


def _reason(error: Any) -> str:
    """The failure as an operator reads it, with the value the service sent as JSON."""
    value = error["input"]
    if error["type"] == "missing":
        return "required field is missing"
    if value is None:
        return "null where the contract requires a value"
    shown = json.dumps(value, ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    if error["type"] == "model_type":
        return f"record is not a JSON object (got {shown})"
    return f"{error['msg']} (got {shown})"
