"""PostgreSQL's binary COPY format, built a whole column at a time with numpy.

In text format PostgreSQL parses every field back from its text: a timestamp costs it about
0.7 microseconds, an array of track ids far more, and that parsing ran on the cores the API
stand-in and the fetching share. In binary format the server copies fixed-width big-endian
values. Values are laid out column by column (lengths, then payloads), then scattered into the
row layout in a few numpy operations, never a Python call per field.

Only the types in ``BINARY_TYPES`` are written this way; a table with any other column type is
written in text format (see ``io_manager``). NULLs (pandas NA, None, NaN, NaT) are NULLs, as in
the text format.

Format: https://www.postgresql.org/docs/current/sql-copy.html#SQL-COPY-BINARY-FORMAT
"""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd

from moovitamix_assets.resources.pg_types import (
    BIGINT,
    BIGINT_ARRAY,
    BOOLEAN,
    DATE,
    DOUBLE,
    TEXT,
    TIMESTAMPTZ,
)

BINARY_TYPES: Final = frozenset({BIGINT, DOUBLE, BOOLEAN, TIMESTAMPTZ, DATE, TEXT, BIGINT_ARRAY})

HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER: Final = b"\xff\xff"
_INT8_OID: Final = 20
# PostgreSQL counts days and microseconds from 2000-01-01.
_POSTGRES_EPOCH_DAYS: Final = 10_957  # days from 1970-01-01
_POSTGRES_EPOCH_ORDINAL: Final = date(2000, 1, 1).toordinal()
_POSTGRES_EPOCH_US: Final = _POSTGRES_EPOCH_DAYS * 86_400 * 1_000_000


def supports(types: dict[str, str]) -> bool:
    """Whether every column's PostgreSQL type can be written in binary format."""
    return bool(types) and all(t in BINARY_TYPES for t in types.values())


def encode_rows(frame: pd.DataFrame, types: dict[str, str]) -> bytes:
    """The rows of ``frame`` (its ``types`` columns, in that order) in binary COPY format.

    Raises:
        TypeError: A value cannot be written as its column's type (the column is named).
    """
    rows = len(frame)
    fields = []
    for name, pg_type in types.items():
        try:
            fields.append(_column(frame[name], pg_type))
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"column {name!r}: cannot write as {pg_type}: {exc}") from exc
    # Each field is a 4-byte length (-1 for NULL) and its payload; each row starts with the
    # number of fields.
    sizes = np.stack([4 + np.maximum(lengths, 0) for lengths, _ in fields], axis=1)
    row_sizes = 2 + sizes.sum(axis=1)
    row_starts = np.zeros(rows, dtype=np.int64)
    np.cumsum(row_sizes[:-1], out=row_starts[1:])
    out = np.empty(int(row_sizes.sum()), dtype=np.uint8)
    count = np.array([len(types)], dtype=">i2").view(np.uint8)
    out[row_starts] = count[0]
    out[row_starts + 1] = count[1]
    at = row_starts + 2
    for (lengths, payload), field_sizes in zip(fields, sizes.T, strict=True):
        prefixes = lengths.astype(">i4").view(np.uint8).reshape(rows, 4)
        out[at[:, None] + np.arange(4)] = prefixes
        present = lengths >= 0
        if payload.size:
            own = lengths[present]
            sources = np.zeros(len(own), dtype=np.int64)
            np.cumsum(own[:-1], out=sources[1:])
            # Byte j of the column's payloads goes to its field's start plus its offset there.
            targets = np.repeat(at[present] + 4 - sources, own) + np.arange(payload.size)
            out[targets] = payload
        at = at + field_sizes
    return out.tobytes()


def _column(series: pd.Series, pg_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-row payload lengths, -1 for NULL; every non-NULL payload, concatenated)."""
    if pg_type == TEXT and series.dtype == object:
        values = series.tolist()
        try:
            # All strings (the usual case) means no NULL: no per-value NA test needed.
            return _texts(values, "".join(values))
        except TypeError:
            pass
    mask = series.isna().to_numpy(dtype=bool)
    present = series[~mask] if mask.any() else series
    if pg_type in (BIGINT, DOUBLE, BOOLEAN, TIMESTAMPTZ, DATE):
        width, payload = _fixed_width(present, pg_type)
        lengths = np.where(mask, -1, width).astype(np.int64)
        return lengths, payload
    if pg_type == TEXT:
        values = present.tolist()
        own, payload = _texts(values, "".join(values))  # TypeError for a non-string
    elif pg_type == BIGINT_ARRAY:
        own, payload = _int8_arrays(present.tolist())
    else:
        raise TypeError(f"no binary encoding for {pg_type}")
    lengths = np.full(len(series), -1, dtype=np.int64)
    lengths[~mask] = own
    return lengths, payload


def _fixed_width(present: pd.Series, pg_type: str) -> tuple[int, np.ndarray]:
    if pg_type == BIGINT:
        values = present.to_numpy(dtype=np.int64)
        return 8, values.astype(">i8").view(np.uint8)
    if pg_type == DOUBLE:
        return 8, present.to_numpy(dtype=np.float64).astype(">f8").view(np.uint8)
    if pg_type == BOOLEAN:
        return 1, present.to_numpy(dtype=bool).astype(np.uint8)
    if pg_type == TIMESTAMPTZ:
        return 8, (_utc_microseconds(present) - _POSTGRES_EPOCH_US).astype(">i8").view(np.uint8)
    return 4, _days(present).astype(">i4").view(np.uint8)


def _utc_microseconds(present: pd.Series) -> np.ndarray:
    """Microseconds since 1970 in UTC, as the text format's session (TIME ZONE 'UTC') reads them:
    aware values converted, naive ones taken as UTC, ISO 8601 texts parsed (their offset
    honoured)."""
    if isinstance(present.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        present.dtype
    ):
        stamps = pd.DatetimeIndex(present)
    else:
        values = present.to_numpy()
        if len(values) and isinstance(values[0], str):
            stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True, format="ISO8601"))
        else:
            stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    if stamps.tz is not None:
        stamps = stamps.tz_convert("UTC").tz_localize(None)
    return stamps.as_unit("us").asi8


def _days(present: pd.Series) -> np.ndarray:
    """Days since 2000-01-01 of date values (the date part, as the text format writes it)."""
    if pd.api.types.is_datetime64_dtype(present.dtype):
        return present.to_numpy(dtype="datetime64[D]").astype(np.int64) - _POSTGRES_EPOCH_DAYS
    values = present.tolist()
    # Date columns repeat a few values (snapshot dates): convert each distinct one once.
    days = {value: _ordinal(value) - _POSTGRES_EPOCH_ORDINAL for value in dict.fromkeys(values)}
    return np.fromiter(map(days.__getitem__, values), dtype=np.int64, count=len(values))


def _ordinal(value: Any) -> int:
    if isinstance(value, date):  # datetimes too: their date part, in their own zone
        return value.toordinal()
    raise TypeError(f"{value!r} is not a date")


def _texts(values: list[str], joined: str) -> tuple[np.ndarray, np.ndarray]:
    """Byte lengths and UTF-8 bytes of strings (``joined`` is their concatenation)."""
    if joined.isascii():  # one byte per character: lengths without encoding each value
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        return lengths, np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    encoded = [value.encode("utf-8") for value in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    return lengths, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def _int8_arrays(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """One-dimensional bigint arrays: a header, then each element's length and value."""
    counts = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    flat: list[Any] = list(itertools.chain.from_iterable(values))
    if set(map(type, flat)) <= {int}:  # the usual case, checked and converted in C
        elements = np.fromiter(flat, dtype=np.int64, count=len(flat))
        nulls = np.zeros(len(flat), dtype=bool)
    else:
        for item in flat:
            if item is not None and (
                isinstance(item, bool | np.bool_) or not isinstance(item, int | np.integer)
            ):
                raise TypeError(f"unsupported array element {item!r}")
        nulls = np.fromiter((item is None for item in flat), dtype=bool, count=len(flat))
        elements = np.array([0 if item is None else int(item) for item in flat], dtype=np.int64)
    rows = len(values)
    # Header: dimensions (0 for an empty array), has-nulls flag, element type, then the one
    # dimension's length and lower bound.
    row_has_nulls = np.zeros(rows, dtype=np.int64)
    if nulls.any():
        owners = np.repeat(np.arange(rows), counts)
        row_has_nulls[np.unique(owners[nulls])] = 1
    header = np.zeros((rows, 5), dtype=">i4")
    header[:, 0] = counts > 0
    header[:, 1] = row_has_nulls
    header[:, 2] = _INT8_OID
    header[:, 3] = counts
    header[:, 4] = 1
    header_sizes = np.where(counts > 0, 20, 12)
    element_sizes = np.where(nulls, 4, 12)
    element_bytes = np.zeros(len(flat), dtype=[("length", ">i4"), ("value", ">i8")])
    element_bytes["length"] = np.where(nulls, -1, 8)
    element_bytes["value"] = elements
    # Each element is 12 bytes (length and value); a NULL one keeps its length only.
    element_stream = element_bytes.view(np.uint8).reshape(len(flat), 12)
    if nulls.any():
        keep = np.ones((len(flat), 12), dtype=bool)
        keep[nulls, 4:] = False
        element_payload = element_stream[keep]
    else:
        element_payload = element_stream.reshape(-1)
    if nulls.any():
        per_row_elements = np.zeros(rows, dtype=np.int64)
        np.add.at(per_row_elements, np.repeat(np.arange(rows), counts), element_sizes)
    else:
        per_row_elements = 12 * counts
    sizes = header_sizes + per_row_elements
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    starts = np.zeros(rows, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    header_bytes = header.view(np.uint8).reshape(rows, 20)
    keep_header = np.arange(20)[None, :] < header_sizes[:, None]
    out[(starts[:, None] + np.arange(20))[keep_header]] = header_bytes[keep_header]
    if element_payload.size:
        element_starts = np.zeros(rows, dtype=np.int64)
        np.cumsum(per_row_elements[:-1], out=element_starts[1:])
        targets = np.repeat(starts + header_sizes - element_starts, per_row_elements) + np.arange(
            element_payload.size
        )
        out[targets] = element_payload
    return sizes, out


__all__ = ["BINARY_TYPES", "HEADER", "TRAILER", "encode_rows", "supports"]
