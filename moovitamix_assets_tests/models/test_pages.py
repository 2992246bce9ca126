"""The one-pass page decoder: it accepts exactly the pages the item-by-item path loads in full."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from moovitamix_assets.models.pages import decode_conforming_page
from moovitamix_assets.models.records import FrameAccumulator, contract_columns
from moovitamix_assets.resources.api import ApiPageError, parse_page, validate_page
from moovitamix_assets_tests.models.test_records import a_history, a_track, a_user

ITEM = {"users": a_user, "tracks": a_track, "listen_history": a_history}


def page_body(items: list[object], number: int = 2, size: int = 100, **extra: object) -> bytes:
    payload = {"items": items, "total": 250, "page": number, "size": size, "pages": 3, **extra}
    return json.dumps(payload).encode()


def explained(endpoint: str, body: bytes, number: int = 2, size: int = 100):
    """What the item-by-item path makes of a page: (columns, rejects, drift) or the page error."""
    try:
        page = parse_page(endpoint, number, body, size)
    except ApiPageError as exc:
        return exc
    batch = validate_page(endpoint, number, page.items)
    return batch.columns, batch.rejects, batch.extra_fields | batch.missing_fields


@pytest.mark.parametrize("endpoint", sorted(ITEM))
def test_a_clean_page_decodes_to_the_same_columns_and_frame_as_the_explaining_path(
    endpoint: str,
) -> None:
    make = ITEM[endpoint]
    key = "user_id" if endpoint == "listen_history" else "id"
    items = [make(**{key: n}) for n in range(1, 6)]
    if endpoint == "listen_history":
        items[1] = make(user_id=None, items=None)  # nullable fields, still a clean page
        items[2] = make(items=[])
    body = page_body(items)

    page = decode_conforming_page(endpoint, body, 2, 100)

    assert page is not None
    assert (page.total, page.pages, page.rows) == (250, 3, 5)
    columns, rejects, drift = explained(endpoint, body)
    assert (rejects, drift) == ([], set())
    assert page.columns == columns
    fast, slow = FrameAccumulator(endpoint), FrameAccumulator(endpoint)
    fast.extend(page.columns)
    slow.extend(columns)
    assert fast.to_frame().equals(slow.to_frame())
    assert list(fast.to_frame().columns) == list(contract_columns(endpoint))


# Each makes one item of an otherwise clean page something the contract does not allow.
BAD_ITEMS = {
    "string id": lambda: a_user(id="81514"),
    "float id": lambda: a_user(id=1.0),
    "boolean id": lambda: a_user(id=True),
    "id beyond 64 bits": lambda: a_user(id=2**63),
    "null where required": lambda: a_user(email=None),
    "missing field": lambda: {k: v for k, v in a_user().items() if k != "gender"},
    "extra field": lambda: a_user(device="ios"),
    "timestamp with a zone": lambda: a_user(created_at="2026-04-09T12:31:25.269777Z"),
    "timestamp with a newline": lambda: a_user(created_at="2026-04-09T12:31:25.269777\n"),
    "impossible date": lambda: a_user(updated_at="2026-02-30T12:31:25.269777"),
    "seven fraction digits": lambda: a_user(updated_at="2026-04-09T12:31:25.2697771"),
    "not an object": lambda: "junk",
    "non-ASCII digit in a timestamp": lambda: a_user(created_at="2026-04-09T12:31:25.26977\u0661"),
}


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_a_page_with_any_bad_item_goes_to_the_explaining_path(case: str) -> None:
    items = [a_user(id=1), BAD_ITEMS[case](), a_user(id=3)]
    body = page_body(items)

    assert decode_conforming_page("users", body, 2, 100) is None
    # ...where the problem is named: a reject or drift, and the good neighbours still load.
    columns, rejects, drift = explained("users", body)
    assert rejects or drift
    assert {1, 3} <= set(columns[0])


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("bad duration", page_body([a_track(duration="3:15")])),
        ("list of strings", None),
        ("truncated body", page_body([a_user()])[:-10]),
        ("not JSON", b"<html>502</html>"),
        ("not a page", json.dumps([a_user()]).encode()),
        ("page of another number", page_body([a_user()], number=3)),
        ("page of another size", page_body([a_user()], size=50)),
        ("null page number", page_body([a_user()], page=None)),
        ("negative total", page_body([a_user()], total=-1)),
        ("more items than size", page_body([a_user(id=n) for n in range(3)], size=2)),
    ],
)
def test_a_page_the_contract_does_not_allow_is_not_taken_in_one_pass(
    case: str, body: bytes | None
) -> None:
    endpoint = "tracks" if case == "bad duration" else "users"
    if case == "list of strings":
        endpoint, body = "listen_history", page_body([a_history(items=["1", "2"])])
    size = 2 if case == "more items than size" else 100

    assert decode_conforming_page(endpoint, body, 2, size) is None
    outcome = explained(endpoint, body, 2, size)
    assert isinstance(outcome, ApiPageError) or outcome[1], case  # a page error or a reject


@pytest.mark.parametrize("stamp", ["2026-04-09T12:31:25", "2026-04-09T12:31:25.5"])
def test_a_timestamp_without_six_fraction_digits_loads_through_the_explaining_path(
    stamp: str,
) -> None:
    # isoformat() drops the fraction when microseconds are zero: still a valid timestamp, only
    # not the fixed shape the one-pass check tests a whole column against.
    body = page_body([a_user(id=1), a_user(id=2, updated_at=stamp)])

    assert decode_conforming_page("users", body, 2, 100) is None
    columns, rejects, drift = explained("users", body)
    assert (rejects, drift) == ([], set())
    assert columns[0] == [1, 2]
    frame = FrameAccumulator("users")
    frame.extend(columns)
    assert frame.to_frame()["updated_at"].iloc[1] == pd.Timestamp(stamp, tz="UTC")
