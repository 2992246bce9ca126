"""One-pass decoding of a conforming API page: JSON parsing and contract validation in C.

Most pages are clean, and validating them item by item in Python cost more than fetching them
(about 1 ms per page, on the GIL the fetching threads need). ``msgspec`` decodes a page straight
into typed structs and checks every field while parsing, so a clean page costs a fraction of that.
The structs are strict mirrors of ``ENDPOINT_FIELDS``: every field required, unknown fields
forbidden, the same patterns and ranges as ``records.validate_values``. Anything they refuse (a
bad record, schema drift, a broken page) makes ``decode_conforming_page`` return None, and the
caller takes the item-by-item path, which explains every problem, page and record by name. The
fast path therefore only ever accepts pages the explaining path would accept in full.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Any, Final

import msgspec

from moovitamix_assets.models.records import (
    DURATION_PATTERN,
    ENDPOINT_FIELDS,
    INT64_MAX,
    INT64_MIN,
    TIMESTAMP_PATTERN,
    FieldKind,
)

_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
# msgspec matches with re.search: anchor both ends (\Z, because $ also matches before a newline).
_Timestamp = Annotated[str, msgspec.Meta(pattern=rf"\A{TIMESTAMP_PATTERN}\Z")]
_Duration = Annotated[str, msgspec.Meta(pattern=rf"\A{DURATION_PATTERN}\Z")]
_Count = Annotated[int, msgspec.Meta(ge=0)]

_FIELD_TYPES: Final[dict[FieldKind, Any]] = {
    FieldKind.INTEGER: _Int64,
    FieldKind.STRING: str,
    FieldKind.DURATION: _Duration,
    FieldKind.TIMESTAMP: _Timestamp,
    FieldKind.INTEGER_LIST: list[_Int64],
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
_TIMESTAMP_COLUMNS: Final = {
    endpoint: tuple(i for i, s in enumerate(specs) if s.kind is FieldKind.TIMESTAMP)
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
    try:
        # The pattern admits impossible dates (month 13, February 30): fromisoformat does not.
        for index in _TIMESTAMP_COLUMNS[endpoint]:
            deque(map(datetime.fromisoformat, columns[index]), maxlen=0)
    except ValueError:
        return None
    return ConformingPage(total=page.total, pages=page.pages, rows=len(items), columns=columns)
