"""Pure parts of the API client: page decoding, paginator stop logic, page validation, settings."""

from __future__ import annotations

import json

import pytest
from urllib3.exceptions import MaxRetryError, ReadTimeoutError

from moovitamix_assets.resources.api import (
    ApiError,
    ApiPage,
    ApiPageError,
    CountingRetry,
    MoovitamixApiResource,
    PageOutcome,
    PagePlan,
    parse_page,
    redact_url,
    validate_page,
)

TS = "2026-04-09T12:31:25.269777"


def body(**payload: object) -> bytes:
    return json.dumps(payload).encode()


def a_page(number: int, items: list, total: int, pages: int) -> ApiPage:
    return ApiPage(number=number, items=items, total=total, pages=pages)


def test_parse_page_accepts_a_contract_page() -> None:
    page = parse_page(
        "users", 2, body(items=[{"id": 1}], total=101, page=2, size=100, pages=2), 100
    )
    assert page == ApiPage(number=2, items=[{"id": 1}], total=101, pages=2)


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (b'{"items": [1, 2', "not valid JSON"),
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "body is a JSON array, not a page object"),
        (
            body(data=[], count=3, page=1),
            "missing items, total, pages (body has: count, data, page)",
        ),
        (body(items={}, total=1, pages=1), "'items' is a JSON object, not an array"),
        (body(items=[], total="10", pages=1), "'total' is '10'"),
        (body(items=[], total=10, pages=True), "'pages' is True"),
        (body(items=[], total=-1, pages=0), "'total' is -1"),
        (body(items=[], total=10, pages=1, page=1), "answered page=1 to a request for 3"),
        (body(items=[], total=10, pages=1, size=50), "answered size=50 to a request for 100"),
        (body(items=list(range(101)), total=500, pages=5), "101 items on a page of size 100"),
    ],
)
def test_parse_page_rejects_what_is_not_a_page(raw: bytes, reason_part: str) -> None:
    with pytest.raises(ApiPageError) as caught:
        parse_page("tracks", 3, raw, 100)
    message = str(caught.value)
    assert "endpoint 'tracks', page 3" in message
    assert reason_part in message
    assert (caught.value.endpoint, caught.value.page) == ("tracks", 3)


def test_plan_from_first_page() -> None:
    plan = PagePlan.from_first_page("users", a_page(1, [{}] * 100, 2345, 24), 100, 50)
    assert (plan.total, plan.pages, plan.size) == (2345, 24, 100)
    empty = PagePlan.from_first_page("users", a_page(1, [], 0, 0), 100, 50)
    assert (empty.total, empty.pages) == (0, 0)


def test_plan_cross_checks_pages_with_total() -> None:
    with pytest.raises(ApiPageError, match=r"pages=23 but ceil\(total 2345 / size 100\) = 24"):
        PagePlan.from_first_page("users", a_page(1, [{}] * 100, 2345, 23), 100, 50)
    with pytest.raises(ApiPageError, match="total is 0 but the page has 1 items"):
        PagePlan.from_first_page("users", a_page(1, [{}], 0, 0), 100, 50)


def test_plan_enforces_the_page_cap() -> None:
    with pytest.raises(ApiError, match="10000 pages .* exceed max_pages=5000") as caught:
        PagePlan.from_first_page(
            "listen_history", a_page(1, [{}] * 100, 1_000_000, 10_000), 100, 5000
        )
    assert caught.value.endpoint == "listen_history"
    # The default cap allows a million records at the largest page size.
    default_cap = MoovitamixApiResource().max_pages
    plan = PagePlan.from_first_page(
        "users", a_page(1, [{}] * 100, 1_000_000, 10_000), 100, default_cap
    )
    assert plan.pages == 10_000


def test_paginator_refuses_a_configuration_that_cannot_stop() -> None:
    with pytest.raises(ValueError, match="stop"):
        PagePlan.from_first_page("users", a_page(1, [], 0, 0), 100, 0)


def test_classify_stop_conditions() -> None:
    plan = PagePlan(endpoint="users", size=100, total=250, pages=3)
    assert plan.classify(a_page(2, [{}] * 100, 250, 3)) is PageOutcome.CONTINUE
    assert plan.classify(a_page(3, [{}] * 50, 250, 3)) is PageOutcome.CONTINUE
    # Backstop: an empty page before the last one stops the read there.
    assert plan.classify(a_page(2, [], 250, 3)) is PageOutcome.EMPTY_BEFORE_END
    assert plan.classify(a_page(3, [], 250, 3)) is PageOutcome.EMPTY_BEFORE_END
    # Past the last page an empty page is what the contract promises, not an anomaly.
    assert plan.classify(a_page(4, [], 250, 3)) is PageOutcome.CONTINUE
    # total or pages differing from page 1's: the data moved during the read.
    assert plan.classify(a_page(2, [{}] * 100, 251, 3)) is PageOutcome.DRIFT
    assert plan.classify(a_page(2, [{}] * 100, 250, 4)) is PageOutcome.DRIFT
    assert plan.classify(a_page(2, [], 300, 3)) is PageOutcome.DRIFT


def test_validate_page_keeps_neighbours_of_a_bad_item() -> None:
    good = {"user_id": 1, "items": [5, 6], "created_at": TS, "updated_at": TS}
    bad = dict(good, user_id="abc")
    drifted = dict(good, user_id=3, device="ios")
    batch = validate_page("listen_history", 7, [good, bad, drifted, "junk"])
    assert batch.columns[0] == [1, 3]
    assert batch.extra_fields == {"device"}
    assert batch.missing_fields == set()
    assert [(r["page"], r["position"], r["field"]) for r in batch.rejects] == [
        (7, 1, "user_id"),
        (7, 3, None),
    ]
    first = batch.rejects[0]
    assert first["endpoint"] == "listen_history"
    assert first["record_key"] == "abc"
    assert "expected an integer, got string" in str(first["reason"])
    assert json.loads(str(first["record"])) == bad


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("page_size", 101, "page_size must be between 1 and 100, got 101"),
        ("page_size", 0, "page_size must be between 1 and 100, got 0"),
        ("max_concurrency", 0, "max_concurrency must be between 1 and 64"),
        ("max_pages", 0, "max_pages must be >= 1"),
        ("max_retries", -1, "max_retries must be >= 0"),
        ("read_timeout", 0, "read_timeout must be > 0"),
        ("backoff_factor", -0.1, "backoff_factor must be >= 0"),
    ],
)
def test_invalid_settings_fail_at_construction(setting: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MoovitamixApiResource(**{setting: value})


def test_base_url_is_checked_before_any_request() -> None:
    resource = MoovitamixApiResource(base_url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="base_url \\(MOOVITAMIX_API_URL\\) must be an http"):
        resource.read_endpoint("users")
    with pytest.raises(ValueError, match="unknown MooVitamix endpoint 'songs'"):
        MoovitamixApiResource().read_endpoint("songs")


def test_counting_retry_counts_granted_retries_only() -> None:
    granted: list[int] = []
    retry = CountingRetry(total=2, read=2, on_retry=lambda: granted.append(1))
    error = ReadTimeoutError(None, "/users", "read timed out")  # type: ignore[arg-type]
    retry = retry.increment(method="GET", url="/users", error=error)
    retry = retry.increment(method="GET", url="/users", error=error)
    assert len(granted) == 2
    with pytest.raises(MaxRetryError):
        retry.increment(method="GET", url="/users", error=error)
    assert len(granted) == 2


def test_redact_url_drops_credentials_and_query() -> None:
    assert redact_url("https://user:secret@api.example.com:8443/v1?token=x#f") == (
        "https://api.example.com:8443/v1"
    )
