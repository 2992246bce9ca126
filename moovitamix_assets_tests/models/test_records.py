"""Contract record validation: each field type, each reject reason, and what is kept on purpose."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from moovitamix_assets.models.records import (
    REJECT_COLUMNS,
    FrameAccumulator,
    ListenHistory,
    Rejection,
    Track,
    User,
    contract_columns,
    empty_frame,
    item_field_drift,
    parse_timestamp,
    record_key,
    records_to_frame,
    rejects_frame,
    validate_item,
    validate_values,
)

TS = "2026-04-09T12:31:25.269777"
UTC_TS = dt.datetime(2026, 4, 9, 12, 31, 25, 269777, tzinfo=dt.timezone.utc)


def a_user(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "id": 81514,
        "first_name": "Patrick",
        "last_name": "Perez",
        "email": "joan18@example.org",
        "gender": "Female",
        "favorite_genres": "Electronic",
        "created_at": TS,
        "updated_at": TS,
    }
    item.update(changes)
    return item


def a_track(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {
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
    item.update(changes)
    return item


def a_history(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "user_id": 81514,
        "items": [55191, 95406, 15982],
        "created_at": TS,
        "updated_at": TS,
    }
    item.update(changes)
    return item


def rejected(endpoint: str, item: object) -> Rejection:
    result = validate_item(endpoint, item)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    return result


def test_valid_items_become_typed_records() -> None:
    user = validate_item("users", a_user())
    assert user == User(
        81514, "Patrick", "Perez", "joan18@example.org", "Female", "Electronic", UTC_TS, UTC_TS
    )
    track = validate_item("tracks", a_track())
    assert isinstance(track, Track)
    assert (track.id, track.duration, track.created_at) == (12822, "33:51", UTC_TS)
    history = validate_item("listen_history", a_history())
    assert history == ListenHistory(81514, [55191, 95406, 15982], UTC_TS, UTC_TS)


def test_models_follow_the_contract_field_order() -> None:
    assert contract_columns("users") == (
        "id",
        "first_name",
        "last_name",
        "email",
        "gender",
        "favorite_genres",
        "created_at",
        "updated_at",
    )
    assert contract_columns("tracks")[4] == "duration"
    assert contract_columns("listen_history") == ("user_id", "items", "created_at", "updated_at")
    with pytest.raises(ValueError, match="unknown MooVitamix endpoint 'albums'"):
        contract_columns("albums")


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("abc", "expected an integer, got string"),
        ("81514", "expected an integer, got string"),
        (81514.0, "expected an integer, got number"),
        (True, "expected an integer, got boolean"),
        ([1], "expected an integer, got array"),
        (2**63, "does not fit a 64-bit column"),
        (None, "null where the contract requires a value"),
    ],
)
def test_integer_key_rejections(value: object, reason_part: str) -> None:
    rejection = rejected("users", a_user(id=value))
    assert rejection.field == "id"
    assert reason_part in rejection.reason


@pytest.mark.parametrize("field", ["first_name", "last_name", "email", "gender", "favorite_genres"])
@pytest.mark.parametrize(("value", "json_type"), [(5, "integer"), ({"a": 1}, "object")])
def test_string_field_rejections(field: str, value: object, json_type: str) -> None:
    rejection = rejected("users", a_user(**{field: value}))
    assert rejection.field == field
    assert f"expected a string, got {json_type}" in rejection.reason
    assert rejection.record_key == "81514"


@pytest.mark.parametrize(
    "value",
    [
        "2026-04-09 12:31:25.269777",  # space, not T
        "2026-04-09T12:31:25.269777Z",  # a zone
        "2026-04-09T12:31:25.269777+02:00",
        "2026-04-09",
        "2026-04-09T12:31",
        "09/04/2026 12:31:25",
        "2026-13-09T12:31:25.269777",  # month 13
        "2026-02-30T12:31:25",
        "",
        1712665885,
    ],
)
def test_timestamp_rejections(value: object) -> None:
    rejection = rejected("tracks", a_track(updated_at=value))
    assert rejection.field == "updated_at"
    assert "timestamp" in rejection.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TS, UTC_TS),
        ("2026-04-09T12:31:25", dt.datetime(2026, 4, 9, 12, 31, 25, tzinfo=dt.timezone.utc)),
        ("2026-04-09T12:31:25.5", dt.datetime(2026, 4, 9, 12, 31, 25, 500000, dt.timezone.utc)),
    ],
)
def test_timestamps_parse_as_utc(value: str, expected: dt.datetime) -> None:
    # isoformat() drops the fraction when microseconds are 0: that must still load.
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert isinstance(parsed, dt.datetime) and parsed.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("value", ["3:51", "33:5", "33:60", "1:02:03", "33.51", "ab:cd", 2031])
def test_duration_rejections(value: object) -> None:
    rejection = rejected("tracks", a_track(duration=value))
    assert rejection.field == "duration"
    assert "duration" in rejection.reason or "'MM:SS'" in rejection.reason


@pytest.mark.parametrize("value", ["00:00", "59:59", "99:00"])
def test_durations_kept(value: str) -> None:
    track = validate_item("tracks", a_track(duration=value))
    assert isinstance(track, Track) and track.duration == value


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("55191,95406", "expected a list of integers, got string"),
        ([55191, "95406"], "element 1: expected an integer, got string"),
        ([55191, 1.5], "element 1: expected an integer, got number"),
        ([False], "element 0: expected an integer, got boolean"),
        ({"0": 55191}, "expected a list of integers, got object"),
    ],
)
def test_items_rejections(value: object, reason_part: str) -> None:
    rejection = rejected("listen_history", a_history(items=value))
    assert rejection.field == "items"
    assert reason_part in rejection.reason
    assert rejection.record_key == "81514"


def test_listen_history_nullability() -> None:
    history = validate_item("listen_history", a_history(user_id=None, items=None))
    assert history == ListenHistory(None, None, UTC_TS, UTC_TS)
    assert validate_item("listen_history", a_history(items=[])) == ListenHistory(
        81514, [], UTC_TS, UTC_TS
    )
    # Nullable is not optional: the key must be there (a renamed field must not load as nulls).
    item = a_history()
    del item["items"]
    rejection = rejected("listen_history", item)
    assert (rejection.field, rejection.reason) == ("items", "required field is missing")
    rejection = rejected("listen_history", a_history(created_at=None))
    assert rejection.field == "created_at"


def test_missing_required_field() -> None:
    item = a_user()
    del item["id"]
    rejection = rejected("users", item)
    assert (rejection.field, rejection.reason, rejection.record_key) == (
        "id",
        "required field is missing",
        None,
    )


def test_several_bad_fields_are_all_named() -> None:
    rejection = rejected("users", a_user(id="abc", email=None, updated_at="yesterday"))
    assert rejection.field == "id"
    assert "also invalid: email, updated_at" in rejection.reason
    assert rejection.record_key == "abc"


@pytest.mark.parametrize("item", [[1, 2], "a user", 42, None])
def test_non_object_items(item: object) -> None:
    rejection = rejected("users", item)
    assert rejection.field is None
    assert "not a JSON object" in rejection.reason
    assert rejection.record_key is None


def test_semantically_odd_values_are_kept() -> None:
    # Well-typed oddities are for the checks downstream to count, not for the loader to hide.
    user = validate_item(
        "users",
        a_user(
            gender="Robot",
            favorite_genres="Polka",
            email="not-an-email",
            created_at="2026-04-09T12:00:00.000001",
            updated_at="2020-01-01T00:00:00.000001",
            first_name="",
        ),
    )
    assert isinstance(user, User)
    assert (user.gender, user.favorite_genres, user.email) == ("Robot", "Polka", "not-an-email")
    assert user.updated_at < user.created_at
    history = validate_item("listen_history", a_history(items=[1, 1, -5]))
    assert isinstance(history, ListenHistory) and history.items == [1, 1, -5]


def test_extra_fields_keep_the_record_and_are_reported() -> None:
    item = a_user(country="FR", plan="premium")
    assert isinstance(validate_item("users", item), User)
    assert item_field_drift("users", item) == ({"country", "plan"}, set())
    del item["email"]
    assert item_field_drift("users", item) == ({"country", "plan"}, {"email"})
    assert item_field_drift("users", a_user()) == (set(), set())
    assert item_field_drift("users", [1]) == (set(), set())


def test_validate_values_is_the_tuple_form() -> None:
    values = validate_values("listen_history", a_history())
    assert values == (81514, [55191, 95406, 15982], UTC_TS, UTC_TS)
    assert isinstance(validate_values("listen_history", a_history(user_id="x")), Rejection)


@pytest.mark.parametrize(
    ("item", "expected"),
    [(a_user(), "81514"), (a_user(id="abc"), "abc"), (a_user(id=None), None), ([1], None)],
)
def test_record_key(item: object, expected: str | None) -> None:
    assert record_key("users", item) == expected


def test_records_to_frame_types() -> None:
    records = [
        validate_item("listen_history", a_history()),
        validate_item("listen_history", a_history(user_id=None, items=None)),
    ]
    frame = records_to_frame("listen_history", records)  # type: ignore[arg-type]
    assert list(frame.columns) == ["user_id", "items", "created_at", "updated_at"]
    assert str(frame["user_id"].dtype) == "Int64"
    assert frame["items"].dtype == object
    assert frame["items"].iloc[0] == [55191, 95406, 15982]
    assert frame["items"].iloc[1] is None
    assert pd.isna(frame["user_id"].iloc[1])
    assert str(frame["created_at"].dtype) == "datetime64[us, UTC]"
    assert frame["created_at"].iloc[0] == pd.Timestamp(UTC_TS)


@pytest.mark.parametrize("endpoint", ["users", "tracks", "listen_history"])
def test_empty_frame_has_contract_columns_and_dtypes(endpoint: str) -> None:
    frame = empty_frame(endpoint)
    assert list(frame.columns) == list(contract_columns(endpoint))
    assert len(frame) == 0
    assert str(frame["created_at"].dtype) == "datetime64[us, UTC]"


def test_accumulator_chunks_preserve_order_and_types() -> None:
    accumulator = FrameAccumulator("users", chunk_rows=7)
    names = contract_columns("users")
    expected_ids = []
    for page in range(5):
        columns: list[list[object]] = [[] for _ in names]
        for position in range(4):
            user_id = page * 10 + position
            expected_ids.append(user_id)
            # Pages hand over the values as sent: timestamps are still contract strings.
            item = a_user(id=user_id, first_name=f"n{user_id}")
            item["updated_at"] = f"2026-04-09T12:31:{user_id % 60:02d}" + (
                ".5" if user_id % 2 else ""
            )
            for column, name in zip(columns, names, strict=True):
                column.append(item[name])
        accumulator.extend(columns)
    accumulator.extend([[] for _ in names])
    frame = accumulator.to_frame()
    assert frame["id"].tolist() == expected_ids
    assert frame.index.tolist() == list(range(20))
    assert frame["first_name"].tolist() == [f"n{i}" for i in expected_ids]
    assert str(frame["id"].dtype) == "Int64"
    assert frame["email"].dtype == object
    assert str(frame["updated_at"].dtype) == "datetime64[us, UTC]"
    assert frame["updated_at"].tolist() == [
        pd.Timestamp(f"2026-04-09T12:31:{i % 60:02d}" + (".5" if i % 2 else ""), tz="UTC")
        for i in expected_ids
    ]
    assert accumulator.rows == 20
    with pytest.raises(ValueError, match="columns of unequal length"):
        accumulator.extend([[1], *([] for _ in names[1:])])
    assert list(FrameAccumulator("tracks").to_frame().columns) == list(contract_columns("tracks"))


def test_rejects_frame_columns() -> None:
    row = {
        "endpoint": "users",
        "page": 3,
        "position": 7,
        "record_key": "abc",
        "field": "id",
        "reason": "expected an integer, got string",
        "record": json.dumps(a_user(id="abc")),
    }
    frame = rejects_frame([row])
    assert tuple(frame.columns) == REJECT_COLUMNS
    assert frame.iloc[0].to_dict() == row
    assert str(frame["page"].dtype) == "Int64"
    empty = rejects_frame([])
    assert tuple(empty.columns) == REJECT_COLUMNS and len(empty) == 0
