"""The MooVitamix API contract: one typed model per endpoint, and the one validator of its records.

The models mirror `API_CONTRACT.md` field for field, in contract order. Validation is deliberately
narrow: a record is rejected only when a value cannot live in its typed column (a wrong JSON type,
a missing field, a timestamp or duration that is not one, a list of something else than
integers). Values that are well typed but odd (an unknown genre, a strange email, a repeated id,
``updated_at`` before ``created_at``) are kept: the audits and the core layer count them, and
dropping them here would hide them. Every field is required to be present; ``user_id`` and
``items`` of a listen history may be ``null``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final

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
# The field that identifies a record (listen_history has no id of its own).
KEY_FIELD: Final[dict[str, str]] = {
    USERS_ENDPOINT: "id",
    TRACKS_ENDPOINT: "id",
    LISTEN_HISTORY_ENDPOINT: "user_id",
}
_NONE: Final[frozenset[str]] = frozenset()
_PAGE_ADAPTERS: Final = {e: TypeAdapter(list[m]) for e, m in MODELS.items()}


def fields_of(endpoint: str) -> tuple[str, ...]:
    """The contract's field names of an endpoint, in contract order.

    Raises:
        ValueError: If the endpoint is not one of the contract's three.
    """
    if endpoint not in MODELS:
        raise ValueError(f"unknown MooVitamix endpoint {endpoint!r} (known: {', '.join(MODELS)})")
    return tuple(MODELS[endpoint].model_fields)


@dataclass(frozen=True, slots=True)
class Reject:
    """One record that cannot be loaded: where it was, which field failed and why."""

    endpoint: str
    page: int
    position: int
    record_key: str | None
    field: str | None
    reason: str
    record: str


@dataclass(slots=True)
class ValidatedPage:
    """A page's valid records (as sent, in page order), its rejects and its field drift.

    ``extra_fields``/``missing_fields`` cover every record; ``loaded_`` ones the valid records
    only, i.e. the drift of what is stored (a rejected record is accounted for in the rejects).
    """

    records: list[dict[str, Any]]
    rejects: list[Reject]
    extra_fields: set[str]
    missing_fields: set[str]
    loaded_extra_fields: set[str]
    loaded_missing_fields: set[str]


def validate_page(endpoint: str, page: int, items: list[Any]) -> ValidatedPage:
    """Validate every record of a page; a bad record becomes a Reject, never a silent drop.

    Args:
        endpoint: ``users``, ``tracks`` or ``listen_history``.
        page: The page number (recorded on rejects).
        items: The page's ``items`` as decoded from JSON.

    Returns:
        The valid records (the dicts as sent), the rejects and the field drift.

    Raises:
        ValueError: If the endpoint is unknown.
    """
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
    result = ValidatedPage([], [], set(), set(), set(), set())
    for position, item in enumerate(items):
        keys = item.keys() if isinstance(item, dict) else expected
        extra = missing = _NONE
        if keys != expected:
            extra, missing = keys - expected, expected - keys
            result.extra_fields |= extra
            result.missing_fields |= missing
        errors = bad.get(position)
        if errors is None:
            result.records.append(item)
            if extra or missing:
                result.loaded_extra_fields |= extra
                result.loaded_missing_fields |= missing
            continue
        field, reason = errors[0]
        if len(errors) > 1:
            reason += f" (also invalid: {', '.join(str(f) for f, _ in errors[1:])})"
        key = item.get(KEY_FIELD[endpoint]) if isinstance(item, dict) else None
        result.rejects.append(
            Reject(
                endpoint=endpoint,
                page=page,
                position=position,
                record_key=None if key is None or isinstance(key, bool) else str(key),
                field=field,
                reason=reason,
                record=json.dumps(item, ensure_ascii=False),
            )
        )
    return result


def _reason(error: Any) -> str:
    if error["type"] == "missing":
        return "required field is missing"
    if error["input"] is None:
        return "null where the contract requires a value"
    if error["type"] == "model_type":
        return f"record is not a JSON object (got {_json_type(error['input'])})"
    shown = json.dumps(error["input"], ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{error['msg']} (got {_json_type(error['input'])} {shown})"


def _json_type(value: object) -> str:
    """The JSON type the service sent, which is what an operator reads in a reject."""
    if value is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    return names.get(type(value), "object" if isinstance(value, dict) else type(value).__name__)
