"""Typed records of the MooVitamix API contract, their validation and their typed columns.

The models mirror the MooVitamix API contract field for field, in contract order. Validation is
deliberately narrow: an item is rejected only when a value cannot live in its typed column (wrong
JSON type, a missing required field, an unparseable timestamp, a malformed duration, items that are
not a list of integers). Values that are well typed but semantically odd (an unknown genre, a
strange email, duplicated ids, ``updated_at`` before ``created_at``) are kept on purpose: the data
quality checks downstream count them, and dropping them here would hide them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from enum import Enum
from operator import attrgetter
from typing import Final

import pandas as pd

from moovitamix_assets.constants import (
    LISTEN_HISTORY_ENDPOINT,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)

# Closed vocabularies of the contract. Documented here for the checks downstream; validation keeps
# values outside them because they are well-typed strings (see the module docstring).
GENDERS: Final = frozenset(
    {
        "Male",
        "Female",
        "Non-binary",
        "Genderqueer",
        "Genderfluid",
        "Agender",
        "Bigender",
        "Gender questioning",
        "Gender nonconforming",
    }
)
# In the contract's order: code that indexes genres (synthetic data) needs a stable order.
GENRE_LIST: Final[tuple[str, ...]] = (
    "Rock",
    "Pop",
    "Hip Hop",
    "Jazz",
    "Electronic",
    "Classical",
    "Country",
    "Blues",
    "R&B",
    "Reggae",
    "Folk",
    "Metal",
    "Punk",
    "Funk",
    "Indie",
    "Alternative",
    "Techno",
)
GENRES: Final = frozenset(GENRE_LIST)

# The largest value a PostgreSQL BIGINT / pandas Int64 column holds.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# ISO 8601 without a zone, as the service writes it. The fraction is optional because Python's
# isoformat() omits it when the microseconds are exactly zero (one record in a million).
TIMESTAMP_PATTERN: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
DURATION_PATTERN: Final = r"[0-9]{2}:[0-5][0-9]"
_TIMESTAMP_RE: Final = re.compile(TIMESTAMP_PATTERN)
_DURATION_RE: Final = re.compile(DURATION_PATTERN)

# pandas dtype of each column once the records are assembled into a frame.
TIMESTAMP_DTYPE: Final = "datetime64[us, UTC]"
INTEGER_DTYPE: Final = "Int64"


class FieldKind(Enum):
    """The typed column a contract field lands in."""

    INTEGER = "integer"
    STRING = "string"
    DURATION = "duration"
    TIMESTAMP = "timestamp"
    INTEGER_LIST = "integer_list"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an endpoint's records, as the contract defines it."""

    name: str
    kind: FieldKind
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class Track:
    """An item of ``GET /tracks``."""

    id: int
    name: str
    artist: str
    songwriters: str
    duration: str
    genres: str
    album: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    """An item of ``GET /users``."""

    id: int
    first_name: str
    last_name: str
    email: str
    gender: str
    favorite_genres: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ListenHistory:
    """An item of ``GET /listen_history``: the tracks one user listened to."""

    user_id: int | None
    items: list[int] | None
    created_at: datetime
    updated_at: datetime


ContractRecord = Track | User | ListenHistory

_I, _S, _D, _T, _L = (
    FieldKind.INTEGER,
    FieldKind.STRING,
    FieldKind.DURATION,
    FieldKind.TIMESTAMP,
    FieldKind.INTEGER_LIST,
)

ENDPOINT_FIELDS: Final[dict[str, tuple[FieldSpec, ...]]] = {
    TRACKS_ENDPOINT: (
        FieldSpec("id", _I),
        FieldSpec("name", _S),
        FieldSpec("artist", _S),
        FieldSpec("songwriters", _S),
        FieldSpec("duration", _D),
        FieldSpec("genres", _S),
        FieldSpec("album", _S),
        FieldSpec("created_at", _T),
        FieldSpec("updated_at", _T),
    ),
    USERS_ENDPOINT: (
        FieldSpec("id", _I),
        FieldSpec("first_name", _S),
        FieldSpec("last_name", _S),
        FieldSpec("email", _S),
        FieldSpec("gender", _S),
        FieldSpec("favorite_genres", _S),
        FieldSpec("created_at", _T),
        FieldSpec("updated_at", _T),
    ),
    LISTEN_HISTORY_ENDPOINT: (
        FieldSpec("user_id", _I, nullable=True),
        FieldSpec("items", _L, nullable=True),
        FieldSpec("created_at", _T),
        FieldSpec("updated_at", _T),
    ),
}

RECORD_MODELS: Final[dict[str, type[ContractRecord]]] = {
    TRACKS_ENDPOINT: Track,
    USERS_ENDPOINT: User,
    LISTEN_HISTORY_ENDPOINT: ListenHistory,
}

# The field that identifies a record, used to label rejects.
RECORD_KEY_FIELD: Final[dict[str, str]] = {
    TRACKS_ENDPOINT: "id",
    USERS_ENDPOINT: "id",
    LISTEN_HISTORY_ENDPOINT: "user_id",
}

# Columns of the rejects frame, in order.
REJECT_COLUMNS: Final = (
    "endpoint",
    "page",
    "position",
    "record_key",
    "field",
    "reason",
    "record",
)

# A model's fields must match the contract table exactly: checked once at import.
for _endpoint, _specs in ENDPOINT_FIELDS.items():
    assert tuple(f.name for f in fields(RECORD_MODELS[_endpoint])) == tuple(s.name for s in _specs)


def timestamp_columns(endpoint: str) -> tuple[str, ...]:
    """Return the contract's timestamp fields of an endpoint, in contract order."""
    return tuple(s.name for s in _specs_for(endpoint) if s.kind is FieldKind.TIMESTAMP)


def contract_columns(endpoint: str) -> tuple[str, ...]:
    """Return the contract's field names for an endpoint, in contract order.

    Raises:
        ValueError: If the endpoint is not one of the contract's three.
    """
    return tuple(spec.name for spec in _specs_for(endpoint))


def _specs_for(endpoint: str) -> tuple[FieldSpec, ...]:
    try:
        return ENDPOINT_FIELDS[endpoint]
    except KeyError:
        known = ", ".join(sorted(ENDPOINT_FIELDS))
        raise ValueError(f"unknown MooVitamix endpoint {endpoint!r} (known: {known})") from None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one raw item cannot be loaded.

    ``field`` is None when the item as a whole is unusable (not a JSON object). ``reason`` names
    the first failing field's problem and lists any other failing fields.
    """

    field: str | None
    reason: str
    record_key: str | None


def _json_type(value: object) -> str:
    # Names the JSON type the service sent, which is what an operator reads in a reject.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_integer(value: object) -> str | None:
    # bool is a subclass of int in Python but a distinct JSON type.
    if type(value) is not int:
        return f"expected an integer, got {_json_type(value)} {_short(value)}"
    if not INT64_MIN <= value <= INT64_MAX:
        return f"integer {value} does not fit a 64-bit column"
    return None


def _short(value: object, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_timestamp(value: object) -> datetime | str:
    """Parse a contract timestamp (ISO 8601, no zone, UTC clock) into an aware UTC datetime.

    Args:
        value: The raw JSON value.

    Returns:
        The timezone-aware UTC datetime, or a string explaining why the value is not a
        contract timestamp.
    """
    if type(value) is not str:
        return f"expected an ISO 8601 timestamp string, got {_json_type(value)} {_short(value)}"
    if _TIMESTAMP_RE.fullmatch(value) is None:
        return (
            f"timestamp {_short(value)} is not ISO 8601 'YYYY-MM-DDTHH:MM:SS[.ffffff]' "
            "without a time zone"
        )
    try:
        # Appending the zone is several times cheaper than .replace(tzinfo=...) per value,
        # and safe: the pattern above guarantees the string carries no zone of its own.
        return datetime.fromisoformat(value + "+00:00")
    except ValueError as exc:
        return f"timestamp {_short(value)} is not a valid date/time ({exc})"


def _field_error(spec: FieldSpec, value: object) -> tuple[object, str | None]:
    """Return (normalised value, None) or (None, reason) for one present field value."""
    if value is None:
        if spec.nullable:
            return None, None
        return None, "null where the contract requires a value"
    kind = spec.kind
    if kind is FieldKind.STRING:
        if type(value) is str:
            return value, None
        return None, f"expected a string, got {_json_type(value)} {_short(value)}"
    if kind is FieldKind.INTEGER:
        reason = _check_integer(value)
        return (None, reason) if reason else (value, None)
    if kind is FieldKind.TIMESTAMP:
        parsed = parse_timestamp(value)
        return (None, parsed) if isinstance(parsed, str) else (parsed, None)
    if kind is FieldKind.DURATION:
        if type(value) is not str:
            return None, f"expected a 'MM:SS' duration string, got {_json_type(value)}"
        if _DURATION_RE.fullmatch(value) is None:
            return None, f"duration {_short(value)} is not 'MM:SS'"
        return value, None
    # FieldKind.INTEGER_LIST
    if type(value) is not list:
        return None, f"expected a list of integers, got {_json_type(value)} {_short(value)}"
    for index, element in enumerate(value):
        reason = _check_integer(element)
        if reason:
            return None, f"element {index}: {reason}"
    return list(value), None


def record_key(endpoint: str, item: object) -> str | None:
    """Return the item's key (``id`` or ``user_id``) as text when it is readable, else None."""
    if not isinstance(item, dict):
        return None
    value = item.get(RECORD_KEY_FIELD[endpoint])
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str | float):
        return str(value)
    return None


def validate_item(endpoint: str, item: object) -> ContractRecord | Rejection:
    """Validate one raw JSON item of an endpoint against the contract.

    Every contract field is required to be present, nullable ones included: the service's
    OpenAPI schema lists all of them as required (``user_id`` and ``items`` may be ``null`` but
    not absent), and an absent key usually means a renamed field, which must not load as a
    column of silent nulls. Fields the contract does not define are ignored here and reported
    by ``item_field_drift``.

    Args:
        endpoint: One of the contract's endpoints (``users``, ``tracks``, ``listen_history``).
        item: One element of the page's ``items`` array, as decoded from JSON.

    Returns:
        The typed record, or a Rejection naming the failing field and the reason.

    Raises:
        ValueError: If the endpoint is unknown.
    """
    values = validate_values(endpoint, item)
    if isinstance(values, Rejection):
        return values
    return RECORD_MODELS[endpoint](*values)


def validate_values(endpoint: str, item: object) -> tuple[object, ...] | Rejection:
    """Validate one raw item like ``validate_item`` but return the normalised values as a tuple.

    This is the bulk path (millions of items a day): a tuple in contract order is what the
    column builder needs, and it skips building a model per record. The loop only tests the
    conforming case; ``_rejection`` re-examines a failing item to explain every problem.

    Args:
        endpoint: One of the contract's endpoints.
        item: One raw item, as decoded from JSON.

    Returns:
        The normalised values in contract order (timestamps as aware UTC datetimes), or a
        Rejection.

    Raises:
        ValueError: If the endpoint is unknown.
    """
    plan = _PLANS.get(endpoint)
    if plan is None:
        _specs_for(endpoint)  # raises the unknown-endpoint error
    if type(item) is not dict:
        return Rejection(None, f"item is not a JSON object (got {_json_type(item)})", None)
    values: list[object] = []
    append = values.append
    get = item.get
    for name, kind, nullable in plan:
        value = get(name, _MISSING)
        if value is None:
            if nullable:
                append(None)
                continue
            break
        if value is _MISSING:
            break
        value_type = type(value)
        if kind is _S:
            if value_type is not str:
                break
        elif kind is _I:
            if value_type is not int or not INT64_MIN <= value <= INT64_MAX:
                break
        elif kind is _T:
            if value_type is not str or _timestamp_match(value) is None:
                break
            try:
                value = _fromisoformat(value + "+00:00")
            except ValueError:
                break
        elif kind is _D:
            if value_type is not str or _duration_match(value) is None:
                break
        elif value_type is not list or not all(
            type(e) is int and INT64_MIN <= e <= INT64_MAX for e in value
        ):
            break
        append(value)
    else:
        return tuple(values)
    return _rejection(endpoint, ENDPOINT_FIELDS[endpoint], item)


_PLANS: Final[dict[str, tuple[tuple[str, FieldKind, bool], ...]]] = {
    endpoint: tuple((s.name, s.kind, s.nullable) for s in specs)
    for endpoint, specs in ENDPOINT_FIELDS.items()
}
_MISSING: Final = object()
_timestamp_match = _TIMESTAMP_RE.fullmatch
_duration_match = _DURATION_RE.fullmatch
_fromisoformat = datetime.fromisoformat


def _rejection(endpoint: str, specs: tuple[FieldSpec, ...], item: dict) -> Rejection:
    errors: list[tuple[str, str]] = []
    for spec in specs:
        if spec.name in item:
            _, reason = _field_error(spec, item[spec.name])
        else:
            reason = "required field is missing"
        if reason is not None:
            errors.append((spec.name, reason))
    if not errors:  # the fast and the explaining paths disagree: a bug here, not in the data
        errors.append((specs[0].name, "failed validation"))
    field, reason = errors[0]
    if len(errors) > 1:
        others = ", ".join(name for name, _ in errors[1:])
        reason = f"{reason} (also invalid: {others})"
    return Rejection(field, reason, record_key(endpoint, item))


def item_field_drift(endpoint: str, item: object) -> tuple[frozenset[str], frozenset[str]]:
    """Return the (extra, missing) field names of a raw item compared with the contract.

    Args:
        endpoint: One of the contract's endpoints.
        item: One raw item; anything but a JSON object yields no drift.

    Returns:
        Fields present but not in the contract, and contract fields absent from the item.
    """
    if not isinstance(item, dict):
        return _NO_FIELDS, _NO_FIELDS
    expected = _FIELD_SETS[endpoint]
    keys = item.keys()
    # Fast path: a conforming item costs one set comparison.
    if keys == expected:
        return _NO_FIELDS, _NO_FIELDS
    return frozenset(keys - expected), frozenset(expected - keys)


_NO_FIELDS: Final[frozenset[str]] = frozenset()
_FIELD_SETS: Final[dict[str, frozenset[str]]] = {
    endpoint: frozenset(spec.name for spec in specs) for endpoint, specs in ENDPOINT_FIELDS.items()
}


def _typed_series(
    spec: FieldSpec, values: Sequence[object], timestamps_as_text: bool = False
) -> pd.Series:
    if spec.kind is FieldKind.TIMESTAMP and timestamps_as_text:
        return pd.Series(values, dtype=object, name=spec.name)
    if spec.kind is FieldKind.INTEGER:
        return pd.Series(pd.array(values, dtype=INTEGER_DTYPE), name=spec.name)
    if spec.kind is FieldKind.TIMESTAMP:
        return pd.Series(_timestamp_index(values), name=spec.name)
    # Strings and lists stay Python objects: the contract's text and the track-id lists.
    return pd.Series(values, dtype=object, name=spec.name)


def _timestamp_index(values: Sequence[object]) -> pd.DatetimeIndex:
    if not len(values):  # an empty list needs the zone spelled out
        return pd.DatetimeIndex([], tz="UTC").as_unit("us")
    if isinstance(values[0], str):
        # Validated contract strings (UTC wall clock, no zone): parsed in one vectorised call,
        # several times cheaper than building a datetime per value.
        return pd.DatetimeIndex(pd.to_datetime(values, format="ISO8601", utc=True)).as_unit("us")
    return pd.DatetimeIndex(values, tz="UTC").as_unit("us")  # aware UTC datetimes


def records_to_frame(endpoint: str, records: Sequence[ContractRecord]) -> pd.DataFrame:
    """Build a typed frame from validated records (columns in contract order).

    Integers are ``Int64``, strings are Python ``str`` in object columns, timestamps are
    ``datetime64[us, UTC]`` and ``items`` holds Python lists of ints (or None).

    Args:
        endpoint: The endpoint the records come from.
        records: Validated records of that endpoint.

    Returns:
        A frame with a RangeIndex and exactly the contract's columns.
    """
    specs = _specs_for(endpoint)
    if not records:
        return empty_frame(endpoint)
    columns = zip(*map(attrgetter(*(s.name for s in specs)), records), strict=True)
    return columns_to_frame(endpoint, [list(col) for col in columns])


def columns_to_frame(
    endpoint: str, columns: Sequence[Sequence[object]], timestamps_as_text: bool = False
) -> pd.DataFrame:
    """Build a typed frame from column lists given in contract order.

    Args:
        endpoint: The endpoint the columns belong to.
        columns: One sequence of normalised values per contract field, in contract order.
        timestamps_as_text: Keep timestamps as their validated contract strings (object
            column) for a writer that stores them as ``timestamptz`` itself.

    Returns:
        A frame with exactly the contract's columns and dtypes.
    """
    specs = _specs_for(endpoint)
    if len(columns) != len(specs):
        raise ValueError(f"{endpoint}: expected {len(specs)} columns, got {len(columns)}")
    series = [
        _typed_series(spec, col, timestamps_as_text)
        for spec, col in zip(specs, columns, strict=True)
    ]
    return pd.concat(series, axis=1) if series[0].size else empty_frame(endpoint)


def empty_frame(endpoint: str) -> pd.DataFrame:
    """Return a zero-row frame with the endpoint's contract columns and dtypes."""
    specs = _specs_for(endpoint)
    return pd.concat([_typed_series(spec, []) for spec in specs], axis=1)


class FrameAccumulator:
    """Collects validated columns page by page into typed column chunks.

    Python objects cost 30 to 60 bytes per value; typed chunks cost 8 or 9. Converting every
    ``chunk_rows`` records keeps a million-record read to a few typed arrays instead of
    millions of live Python ints and strings.
    """

    def __init__(
        self, endpoint: str, chunk_rows: int = 20_000, timestamps_as_text: bool = False
    ) -> None:
        self.endpoint = endpoint
        self._timestamps_as_text = timestamps_as_text
        self._specs = _specs_for(endpoint)
        self._chunk_rows = chunk_rows
        self._buffer: list[list[object]] = [[] for _ in self._specs]
        self._buffered = 0
        self._chunks: list[pd.DataFrame] = []
        self.rows = 0  # records held (since creation or the last drain)

    def extend(self, columns: Sequence[Sequence[object]]) -> None:
        """Append one page's valid records, given as columns in contract order.

        Values are as the API sent them once validated: ints, strings, lists of ints, and
        timestamps either as contract strings or as aware UTC datetimes (one kind per read).
        """
        if len(columns) != len(self._specs):
            raise ValueError(
                f"{self.endpoint}: expected {len(self._specs)} columns, got {len(columns)}"
            )
        count = len(columns[0])
        if not count:
            return
        for column, values in zip(self._buffer, columns, strict=True):
            if len(values) != count:
                raise ValueError(f"{self.endpoint}: columns of unequal length")
            column.extend(values)
        self._buffered += count
        self.rows += count
        if self._buffered >= self._chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffered:
            self._chunks.append(
                columns_to_frame(self.endpoint, self._buffer, self._timestamps_as_text)
            )
            self._buffer = [[] for _ in self._specs]
            self._buffered = 0

    def to_frame(self) -> pd.DataFrame:
        """Return the records held as one typed frame with a fresh RangeIndex."""
        self._flush()
        if not self._chunks:
            return empty_frame(self.endpoint)
        if len(self._chunks) == 1:
            return self._chunks[0]
        return pd.concat(self._chunks, ignore_index=True)

    def drain(self) -> pd.DataFrame:
        """Return the records held, like ``to_frame``, and start empty again."""
        frame = self.to_frame()
        self._chunks = []
        self.rows = 0
        return frame


def rejects_frame(rows: Sequence[dict[str, object]]) -> pd.DataFrame:
    """Build the rejects frame (columns ``REJECT_COLUMNS``) from reject rows."""
    frame = pd.DataFrame(
        {name: pd.Series([row[name] for row in rows], dtype=object) for name in REJECT_COLUMNS}
    )
    for name in ("page", "position"):
        frame[name] = frame[name].astype(INTEGER_DTYPE)
    return frame
