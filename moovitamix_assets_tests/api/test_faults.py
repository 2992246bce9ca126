"""Injected faults behave as configured (off by default), over real HTTP."""

from __future__ import annotations

import json
import time

import pytest
import requests

pytestmark = [pytest.mark.http, pytest.mark.faults]

DAY = "2026-04-09"


def get(server, path: str, timeout: float = 10, **params) -> requests.Response:
    return requests.get(server.base_url + path, params=params, timeout=timeout)


def admin(server, path: str, body: dict) -> dict:
    response = requests.post(server.base_url + path, json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def test_no_fault_by_default(api_server):
    server = api_server(records=300, day=DAY)
    statuses = {
        get(server, f"/{e}", page=p).status_code for e in ("users", "tracks") for p in (1, 2)
    }
    assert statuses == {200}
    assert server.stats()["users"] == {
        "requests": 2,
        "pages": {"1": 1, "2": 1},
        "statuses": {"200": 2},
    }


def test_fail_first_n_then_recovers(api_server):
    server = api_server(records=300, day=DAY, fail_first_n=3)
    statuses = [get(server, "/users").status_code for _ in range(5)]
    assert statuses == [500, 503, 500, 200, 200]
    # Counters are per endpoint: tracks has its own three failures.
    assert get(server, "/tracks").status_code == 500


def test_error_rate_is_seeded_and_reproducible(api_server):
    runs = []
    for _ in range(2):
        server = api_server(records=300, day=DAY, error_rate=0.3)
        runs.append([get(server, "/tracks", page=1).status_code for _ in range(40)])
    assert runs[0] == runs[1]
    assert set(runs[0]) <= {200, 500, 503} and 200 in runs[0]
    assert 4 <= sum(s != 200 for s in runs[0]) <= 24


def test_rate_limit_first_n_answers_429_with_retry_after(api_server):
    server = api_server(records=300, day=DAY, rate_limit_first_n=2, retry_after_s=3)
    first, second, third = (get(server, "/listen_history") for _ in range(3))
    assert first.status_code == second.status_code == 429
    assert first.headers["Retry-After"] == "3"
    assert third.status_code == 200


def test_rate_limit_per_second_token_bucket(api_server):
    server = api_server(records=300, day=DAY, rate_limit_per_s=2)
    statuses = [get(server, "/users").status_code for _ in range(6)]
    assert statuses[:2] == [200, 200] and 429 in statuses[2:]
    time.sleep(1.1)
    assert get(server, "/users").status_code == 200


def test_latency_and_slow_pages_delay_answers(api_server):
    server = api_server(records=300, day=DAY, slow_pages={2: 3})
    assert get(server, "/users", page=1, timeout=1).status_code == 200
    with pytest.raises(requests.ReadTimeout):
        get(server, "/users", page=2, timeout=0.5)
    server.set_faults(latency_ms=300)
    started = time.monotonic()
    assert get(server, "/users", page=2).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_malformed_records_get_a_wrong_type_or_lose_a_field(api_server):
    server = api_server(
        records=300,
        day=DAY,
        endpoint_faults={
            "users": {"malformed_records": [[2, 5, "wrong_type"]]},
            "listen_history": {"malformed_records": [[1, 0, "missing_field"]]},
        },
    )
    items = get(server, "/users", page=2).json()["items"]
    assert items[5]["id"] == "abc"
    assert all(type(item["id"]) is int for i, item in enumerate(items) if i != 5)
    assert all(type(i["id"]) is int for i in get(server, "/users", page=1).json()["items"])
    history = get(server, "/listen_history").json()["items"]
    assert "user_id" not in history[0] and "user_id" in history[1]
    assert all(type(i["id"]) is int for i in get(server, "/tracks", page=2).json()["items"])


def test_malformed_and_truncated_pages_answer_200(api_server):
    server = api_server(records=300, day=DAY, malformed_pages=[2], truncated_pages=[3])
    malformed = get(server, "/tracks", page=2)
    assert malformed.status_code == 200 and "items" not in malformed.json()
    truncated = get(server, "/tracks", page=3)
    assert truncated.status_code == 200
    whole = len(json.dumps(get(server, "/tracks", page=1).json(), separators=(",", ":")))
    assert len(truncated.content) < 0.6 * whole
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.content)


def test_total_drift_changes_total_mid_read(api_server):
    server = api_server(records=250, day=DAY, total_drift=30, total_drift_after=2)
    first, second, third = (get(server, "/users", page=p).json() for p in (1, 2, 3))
    assert first["total"] == second["total"] == 250
    assert (third["total"], third["pages"], len(third["items"])) == (280, 3, 80)
    ids = [i["id"] for page in (first, second, third) for i in page["items"]]
    assert len(set(ids)) == 280
    server.set_faults(total_drift=-50)
    shrunk = get(server, "/users", page=3).json()
    assert (shrunk["total"], len(shrunk["items"])) == (200, 0)


def test_total_drift_every_keeps_the_total_moving(api_server):
    server = api_server(
        records=250, day=DAY, total_drift=5, total_drift_after=1, total_drift_every=2
    )
    totals = [get(server, "/users", page=1).json()["total"] for _ in range(6)]
    assert totals == [250, 255, 255, 260, 260, 265]


def test_faults_and_day_are_reconfigured_at_runtime_through_admin_routes(api_server):
    server = api_server(records=300, day=DAY)
    before = get(server, "/users").json()
    admin(server, "/_standin/faults", {"endpoint": "users", "fail_first_n": 1})
    assert get(server, "/users").status_code == 500
    assert get(server, "/tracks").status_code == 200
    assert get(server, "/users").status_code == 200
    admin(server, "/_standin/faults", {"clear": True})
    config = admin(server, "/_standin/day", {"day": "2026-06-01"})
    assert config["data"]["day"] == "2026-06-01"
    after = get(server, "/users").json()
    assert after["total"] == 300 and after["items"] != before["items"]
    assert (
        requests.post(server.base_url + "/_standin/faults", json={"nope": 1}, timeout=5).status_code
        == 400
    )
    stats = requests.get(server.base_url + "/_standin/stats", timeout=5).json()
    assert stats["users"]["statuses"] == {"200": 3, "500": 1}


def test_down_then_back_on_the_same_port(api_server):
    server = api_server(records=300, day=DAY)
    url = server.base_url
    body = get(server, "/tracks").json()
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/tracks", timeout=2)
    server.start()
    assert server.base_url == url
    assert requests.get(url + "/tracks", timeout=5).json() == body
