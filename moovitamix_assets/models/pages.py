"""One-pass decoding of a conforming API page: JSON parsing and contract validation in C.

Most pages are clean, and validating them item by item in Python cost more than fetching them
(about 1 ms per page, on the GIL the fetching threads need). ``msgspec`` decodes a page straight
into typed structs, checking types, required fields, unknown fields and integer ranges while it
parses; the two fixed-shape string formats (timestamps, durations) are then checked a whole column
at a time with numpy, and timestamps parsed for real dates. Anything refused (a bad record, schema
drift, a broken page, or simply a timestamp written without its six fraction digits) makes
``decode_conforming_page`` return None, and the caller takes the item-by-item path of
``records.validate_values``, which explains every problem, page and record by name. The fast path
therefore only ever accepts pages the explaining path would accept in full.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Any, Final

import msgspec
import numpy as np

from moovitamix_assets.models.records import (
    ENDPOINT_FIELDS,
    INT64_MAX,
    INT64_MIN,
    FieldKind,
)

_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
_Count = Annotated[int, msgspec.Meta(ge=0)]

# Strings of a fixed shape are checked here, not by msgspec: its per-value regex cost four times
# the whole decode. The timestamp shape is the contract's ("with microseconds", 26 characters).
_FIELD_TYPES: Final[dict[FieldKind, Any]] = {
    FieldKind.INTEGER: _Int64,
    FieldKind.STRING: str,
    FieldKind.DURATION: str,
    FieldKind.TIMESTAMP: str,
    FieldKind.INTEGER_LIST: list[_Int64],
}


@dataclass(frozen=True, slots=True)
class _Shape:
    """A fixed-length ASCII shape: per position, the lowest and highest byte allowed."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, template: str) -> _Shape:
        """``9`` is any digit, ``5`` a digit 0-5, any other character itself."""
        ranges = {"9": ("0", "9"), "5": ("0", "5")}
        bounds = [ranges.get(char, (char, char)) for char in template]
        return cls(
            low=np.frombuffer("".join(lo for lo, _ in bounds).encode(), dtype=np.uint8),
            high=np.frombuffer("".join(hi for _, hi in bounds).encode(), dtype=np.uint8),
        )

    def matches_all(self, values: list[str]) -> bool:
        """Whether every value has exactly this shape (one vectorised test for the column)."""
        width = len(self.low)
        if not values:
            return True
        if set(map(len, values)) != {width}:
            return False
        try:
            raw = "".join(values).encode("ascii")
        except UnicodeEncodeError:
            return False
        grid = np.frombuffer(raw, dtype=np.uint8).reshape(len(values), width)
        return bool(((grid >= self.low) & (grid <= self.high)).all())


_SHAPES: Final[dict[FieldKind, _Shape]] = {
    FieldKind.TIMESTAMP: _Shape.of("9999-99-99T99:99:99.999999"),
    FieldKind.DURATION: _Shape.of("99:59"),
}


def _page_decoder(endpoint: str) -> msgspec.json.Decoder:
    specs = ENDPOINT_FIELDS[endpoint]
    item = msgspec.defstruct(
        f"{endpoint}_item",
        [
            (s.name, _FIELD_TYPES[s.kind] | None if s.nullable else _FIELD_TYPES[s.kind])
            for s in specs
        ],
        forbid_unknown_fields=True,  # an extra field is drift: the explaining path reports it
        gc=False,  # short-lived and acyclic: no work for the garbage collector
    )
    page = msgspec.defstruct(
        f"{endpoint}_page",
        [
            ("items", list[item]),
            ("total", _Count),
            ("pages", _Count),
            # Optional, as in the explaining path; present but null is not a page number.
            ("page", int | msgspec.UnsetType, msgspec.UNSET),
            ("size", int | msgspec.UnsetType, msgspec.UNSET),
        ],
    )
    return msgspec.json.Decoder(page)


_DECODERS: Final = {endpoint: _page_decoder(endpoint) for endpoint in ENDPOINT_FIELDS}
_GETTERS: Final = {
    endpoint: tuple(attrgetter(s.name) for s in specs)
    for endpoint, specs in ENDPOINT_FIELDS.items()
}
_SHAPED_COLUMNS: Final = {
    endpoint: tuple((i, s.kind) for i, s in enumerate(specs) if s.kind in _SHAPES)
    for endpoint, specs in ENDPOINT_FIELDS.items()
}


@dataclass(frozen=True, slots=True)
class ConformingPage:
    """A page whose every item passed validation, as columns in contract order.

    Values are the JSON values as sent (timestamps stay ISO strings, already checked to be real
    dates); ``records.FrameAccumulator`` types them column by column.
    """

    total: int
    pages: int
    rows: int
    columns: list[list[Any]]


def decode_conforming_page(
    endpoint: str, body: bytes, number: int, size: int
) -> ConformingPage | None:
    """Decode a page in one pass if it and all its items follow the contract exactly.

    Args:
        endpoint: One of the contract's endpoints.
        body: The raw response body.
        number: The page requested.
        size: The page size requested.

    Returns:
        The page as validated columns, or None when anything about it needs the item-by-item
        path (which names the problem): invalid JSON, not a page, a page or size other than the
        one requested, more items than ``size``, an invalid item, fields outside the contract.
    """
    try:
        page = _DECODERS[endpoint].decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None
    items = page.items
    if (
        len(items) > size
        or (page.page is not msgspec.UNSET and page.page != number)
        or (page.size is not msgspec.UNSET and page.size != size)
    ):
        return None
    columns = [list(map(getter, items)) for getter in _GETTERS[endpoint]]
    for index, kind in _SHAPED_COLUMNS[endpoint]:
        if not _SHAPES[kind].matches_all(columns[index]):
            return None
        if kind is FieldKind.TIMESTAMP:
            try:
                # The shape admits impossible dates (month 13, February 30): fromisoformat not.
                deque(map(datetime.fromisoformat, columns[index]), maxlen=0)
            except ValueError:
                return None
    return ConformingPage(total=page.total, pages=page.pages, rows=len(items), columns=columns)
