"""The contract's validator: odd but valid records load, bad ones are rejects naming the field."""

import json
from typing import Any

import pytest

from moovitamix_assets.contract import MODELS, fields_of, validate_page

TS = "2026-04-09T12:31:25.269777"
TRACK = {
    "id": 12822,
    "name": "exactly",
    "artist": "Kevin Eaton",
    "songwriters": "Victoria Cook",
    "duration": "33:51",
    "genres": "land",
    "album": "economy",
    "created_at": TS,
    "updated_at": TS,
}
USER = {
    "id": 81514,
    "first_name": "Patrick",
    "last_name": "Perez",
    "email": "joan18@example.org",
    "gender": "Female",
    "favorite_genres": "Electronic",
    "created_at": TS,
    "updated_at": TS,
}
HISTORY = {"user_id": 81514, "items": [55191, 95406], "created_at": TS, "updated_at": TS}
RECORDS = {"tracks": TRACK, "users": USER, "listen_history": HISTORY}


def test_models_follow_the_contract_field_for_field() -> None:
    for endpoint, model in MODELS.items():
        assert tuple(model.model_fields) == tuple(RECORDS[endpoint]) == fields_of(endpoint)
    with pytest.raises(ValueError, match="unknown MooVitamix endpoint 'playlists'"):
        fields_of("playlists")


@pytest.mark.parametrize(
    ("endpoint", "changes"),
    [
        ("users", {"gender": "Robot", "favorite_genres": "Polka", "email": "not an email"}),
        ("users", {"updated_at": "2020-01-01T00:00:00", "first_name": ""}),  # no fraction
        ("tracks", {"duration": "99:59", "genres": "", "id": -(2**63)}),
        ("listen_history", {"user_id": None}),
        ("listen_history", {"items": None}),
        ("listen_history", {"items": []}),
        ("listen_history", {"items": [2**63 - 1, 1, 1]}),  # repeated tracks
    ],
)
def test_odd_but_valid_records_load_as_sent(endpoint: str, changes: dict[str, Any]) -> None:
    record = {**RECORDS[endpoint], **changes}
    page = validate_page(endpoint, 1, [record, record])  # a duplicate the contract allows
    assert page.records == [record, record] and page.rejects == []
    assert not (page.extra_fields or page.missing_fields)


@pytest.mark.parametrize(
    ("endpoint", "changes", "field", "reason"),
    [
        ("users", {"id": "81514"}, "id", "valid integer"),
        ("users", {"id": True}, "id", "valid integer"),
        ("users", {"id": 1.0}, "id", "valid integer"),
        ("users", {"id": 2**63}, "id", "less than or equal"),
        ("users", {"id": None}, "id", "requires a value"),
        ("users", {"email": 5}, "email", "valid string"),
        ("users", {"created_at": "2026-04-09T12:31:25+00:00"}, "created_at", "pattern"),
        ("users", {"created_at": "2026-13-45T12:31:25"}, "created_at", "month must be"),
        ("tracks", {"duration": "3:51"}, "duration", "pattern"),
        ("tracks", {"duration": "33:60"}, "duration", "pattern"),
        ("listen_history", {"items": [1, "2"]}, "items", "valid integer"),
        ("listen_history", {"items": "1,2"}, "items", "valid list"),
        ("listen_history", {"created_at": None}, "created_at", "requires a value"),
    ],
)
def test_a_bad_record_is_rejected_naming_page_record_and_field(
    endpoint: str, changes: dict[str, Any], field: str, reason: str
) -> None:
    good, bad = RECORDS[endpoint], {**RECORDS[endpoint], **changes}
    page = validate_page(endpoint, 7, [good, bad, good])
    assert page.records == [good, good]  # the neighbours load
    (reject,) = page.rejects
    assert (reject.endpoint, reject.page, reject.position, reject.field) == (endpoint, 7, 1, field)
    assert reason in reject.reason
    assert json.loads(reject.record) == bad


def test_a_missing_field_is_a_reject_and_drift_of_the_read_not_of_the_stored_rows() -> None:
    missing = {k: v for k, v in USER.items() if k != "email"}
    extra = {**USER, "nickname": "pat"}
    page = validate_page("users", 2, [USER, missing, extra])
    assert page.records == [USER, extra]  # a field outside the contract is drift, not an error
    (reject,) = page.rejects
    assert (reject.field, reject.reason, reject.record_key) == (
        "email",
        "required field is missing",
        "81514",
    )
    assert (page.extra_fields, page.missing_fields) == ({"nickname"}, {"email"})
    assert page.loaded_extra_fields == {"nickname"}


def test_several_bad_fields_are_named_once_and_a_non_object_is_rejected() -> None:
    page = validate_page("tracks", 1, [{**TRACK, "id": "x", "album": None}, ["not", "a record"]])
    first, second = page.rejects
    assert first.field == "id" and "(also invalid: album)" in first.reason
    assert (second.field, second.record_key) == (None, None)
    assert 'not a JSON object (got ["not", "a record"])' in second.reason
