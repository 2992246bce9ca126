"""The stand-in honours the API contract, over real HTTP on loopback."""

from __future__ import annotations

import math
import re

import pytest
import requests

pytestmark = pytest.mark.http

DAY = "2026-04-09"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
GENRES = {
    "Rock", "Pop", "Hip Hop", "Jazz", "Electronic", "Classical", "Country", "Blues", "R&B",
    "Reggae", "Folk", "Metal", "Punk", "Funk", "Indie", "Alternative", "Techno",
}  # fmt: skip
GENDERS = {
    "Male", "Female", "Non-binary", "Genderqueer", "Genderfluid", "Agender", "Bigender",
    "Gender questioning", "Gender nonconforming",
}  # fmt: skip
FIELDS = {
    "users": {
        "id": int, "first_name": str, "last_name": str, "email": str, "gender": str,
        "favorite_genres": str, "created_at": str, "updated_at": str,
    },
    "tracks": {
        "id": int, "name": str, "artist": str, "songwriters": str, "duration": str, "genres": str,
        "album": str, "created_at": str, "updated_at": str,
    },
}  # fmt: skip


def get(server, path: str, **params):
    return requests.get(server.base_url + path, params=params, timeout=10, allow_redirects=False)


@pytest.fixture
def server(api_server):
    return api_server(records=1000, seed=42, day=DAY)


@pytest.mark.parametrize("endpoint", ["users", "tracks"])
def test_records_have_the_contract_fields_and_types(server, endpoint):
    body = get(server, f"/{endpoint}").json()
    assert set(body) == {"items", "total", "page", "size", "pages"}
    for item in body["items"]:
        assert set(item) == set(FIELDS[endpoint])
        for field, kind in FIELDS[endpoint].items():
            assert type(item[field]) is kind, (field, item[field])
        assert TIMESTAMP.match(item["created_at"]) and TIMESTAMP.match(item["updated_at"])
        assert item["created_at"] <= item["updated_at"]
    if endpoint == "users":
        assert {i["gender"] for i in body["items"]} <= GENDERS
        assert {i["favorite_genres"] for i in body["items"]} <= GENRES
        assert all(
            re.match(r"^[a-z0-9.]+@example\.(org|com|net)$", i["email"]) for i in body["items"]
        )
    else:
        assert {i["genres"] for i in body["items"]} <= GENRES
        assert all(re.match(r"^\d{2}:[0-5]\d$", i["duration"]) for i in body["items"])


def test_listen_history_records(server):
    items = get(server, "/listen_history", size=100, page=3).json()["items"]
    assert len(items) == 100
    for item in items:
        assert set(item) == {"user_id", "items", "created_at", "updated_at"}
        assert item["user_id"] is None or type(item["user_id"]) is int
        assert item["items"] is None or all(type(t) is int for t in item["items"])
        assert TIMESTAMP.match(item["created_at"]) and TIMESTAMP.match(item["updated_at"])
    # Histories belong to the users listed at the same position.
    users = get(server, "/users", size=100, page=3).json()["items"]
    assert [u["id"] for u in users] == [
        h["user_id"] or u["id"] for u, h in zip(users, items, strict=True)
    ]


def test_no_parameters_returns_the_first_page_of_100(server):
    for endpoint in ("users", "tracks", "listen_history"):
        body = get(server, f"/{endpoint}").json()
        assert (body["total"], body["page"], body["size"], body["pages"]) == (1000, 1, 100, 10)
        assert len(body["items"]) == 100
        assert body == get(server, f"/{endpoint}", page=1, size=100).json()


@pytest.mark.parametrize(
    ("params", "loc", "kind"),
    [
        ({"page": 0}, ["query", "page"], "greater_than_equal"),
        ({"size": 0}, ["query", "size"], "greater_than_equal"),
        ({"size": 101}, ["query", "size"], "less_than_equal"),
        ({"page": "abc"}, ["query", "page"], "int_parsing"),
    ],
)
def test_invalid_parameters_answer_fastapi_422(server, params, loc, kind):
    response = get(server, "/users", **params)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == loc and error["type"] == kind
    assert error["input"] == str(next(iter(params.values())))
    assert error["msg"]


def test_page_past_the_end_is_empty_with_the_same_totals(server):
    body = get(server, "/tracks", page=10, size=100).json()
    assert len(body["items"]) == 100
    past = get(server, "/tracks", page=11, size=100)
    assert past.status_code == 200
    assert past.json() == {"items": [], "total": 1000, "page": 11, "size": 100, "pages": 10}
    last = get(server, "/tracks", page=34, size=30).json()
    assert (len(last["items"]), last["pages"]) == (10, math.ceil(1000 / 30))


def test_root_redirects_to_docs_and_schema_hides_admin_routes(server):
    response = get(server, "/")
    assert response.status_code == 307 and response.headers["location"] == "/docs"
    assert get(server, "/docs").status_code == 200
    schema = get(server, "/openapi.json").json()
    assert set(schema["paths"]) == {"/users", "/tracks", "/listen_history"}
    parameters = {p["name"]: p for p in schema["paths"]["/users"]["get"]["parameters"]}
    assert parameters["size"]["schema"]["maximum"] == 100
    assert parameters["page"]["schema"]["minimum"] == 1


def test_every_page_covers_each_record_exactly_once(api_server):
    # No duplicate records (a default the contract allows): every id must show exactly once.
    server = api_server(records=2345, seed=7, day=DAY, duplicate_rate=0)
    for endpoint, key in (("users", "id"), ("tracks", "id"), ("listen_history", "user_id")):
        seen = []
        for page in range(1, 25):
            body = get(server, f"/{endpoint}", page=page, size=100).json()
            assert (body["total"], body["pages"]) == (2345, 24)
            seen += [item[key] for item in body["items"]]
        if endpoint == "listen_history":  # null user ids are part of the contract
            seen = [s for s in seen if s is not None]
            assert len(seen) > 2300
        else:
            assert len(seen) == 2345
        assert len(set(seen)) == len(seen)
    # Ids look like a real service's: not 1..n.
    ids = sorted(seen)
    assert ids[-1] > 10 * 2345


def test_other_page_sizes_tile_the_same_order(server):
    big = get(server, "/users", page=2, size=100).json()["items"]
    small = [
        i for p in (5, 6, 7, 8) for i in get(server, "/users", page=p, size=25).json()["items"]
    ]
    assert big == small
