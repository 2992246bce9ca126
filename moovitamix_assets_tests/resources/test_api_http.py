"""The API client over real HTTP against the stand-in on 127.0.0.1: pages, retries, faults."""

import functools
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import requests
from dagster import AssetExecutionContext

from moovitamix_assets.models.records import REJECT_COLUMNS, contract_columns
from moovitamix_assets.resources.api import (
    ApiDriftError,
    ApiError,
    ApiPageError,
    ApiUnavailableError,
    EndpointRead,
    MoovitamixApiResource,
)

pytestmark = pytest.mark.http

DAY = "2026-04-09"
KEYS = {"users": "id", "tracks": "id", "listen_history": "user_id"}


@pytest.fixture
def api_server(api_server: Callable[..., Any]) -> Callable[..., Any]:
    """The stand-in without its default few repeated ids: here a repeated key means a page read
    twice, which is what these tests are about (the platform's handling of repeated ids is tested
    in assets/core/test_odd_records.py and checks/test_raw_audits.py)."""
    return functools.partial(api_server, duplicate_rate=0)


def client(server: Any, **settings: Any) -> MoovitamixApiResource:
    """A client with tiny backoffs, so retry scenarios take milliseconds, not seconds."""
    defaults: dict[str, Any] = {
        "base_url": server.base_url,
        "backoff_factor": 0.01,
        "backoff_jitter": 0.01,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "max_retries": 3,
    }
    return MoovitamixApiResource(**{**defaults, **settings})


def raw_keys(server: Any, endpoint: str) -> list[Any]:
    """The endpoint's keys read page by page with plain requests (the reference)."""
    keys: list[Any] = []
    page, pages = 1, 1
    while page <= pages:
        response = requests.get(
            f"{server.base_url}/{endpoint}", params={"page": page, "size": 100}, timeout=10
        )
        response.raise_for_status()
        payload = response.json()
        pages = payload["pages"]
        keys += [item[KEYS[endpoint]] for item in payload["items"]]
        page += 1
    return keys


def keys_of(read: EndpointRead) -> list[Any]:
    """The frame's key column as Python values (a null ``user_id`` as None)."""
    return [None if pd.isna(v) else v for v in read.frame[KEYS[read.endpoint]].tolist()]


def requests_by_status(server: Any, endpoint: str) -> dict[str, int]:
    return server.stats()[endpoint]["statuses"]


def assert_typed(read: EndpointRead) -> None:
    frame = read.frame
    assert list(frame.columns) == list(contract_columns(read.endpoint))
    for column in frame.columns:
        dtype = str(frame[column].dtype)
        if column in ("id", "user_id"):
            assert dtype == "Int64", column
        elif column in ("created_at", "updated_at"):
            assert dtype == "datetime64[us, UTC]", column
        else:
            assert dtype == "object", column
    if read.endpoint == "listen_history":
        sample = frame["items"].dropna()
        assert all(isinstance(v, list) and all(type(x) is int for x in v) for v in sample)
    else:
        assert all(type(v) is str for v in frame[frame.columns[1]])


@pytest.fixture
def watch() -> Iterator[Callable[[Callable[[], bool], Callable[[], None]], None]]:
    """Run ``action`` from a thread as soon as ``condition`` holds (faults changed mid-read)."""
    threads: list[threading.Thread] = []
    stop = threading.Event()

    def start(condition: Callable[[], bool], action: Callable[[], None]) -> None:
        def run() -> None:
            while not stop.is_set():
                if condition():
                    action()
                    return
                time.sleep(0.002)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=5)


@pytest.mark.parametrize("records", [1000, 2345])
@pytest.mark.parametrize("endpoint", ["users", "tracks", "listen_history"])
def test_reads_every_page(api_server, endpoint: str, records: int) -> None:
    server = api_server(records=records, day=DAY)
    read = client(server).read_endpoint(endpoint)
    pages = math.ceil(records / 100)
    assert (read.total, read.pages, read.pages_read) == (records, pages, pages)
    assert read.rows == read.total
    assert keys_of(read) == raw_keys(server, endpoint)
    assert read.frame[KEYS[endpoint]].dropna().is_unique
    assert read.frame.index.tolist() == list(range(records))
    assert read.rejects.empty and tuple(read.rejects.columns) == REJECT_COLUMNS
    assert (read.requests, read.retries, read.rereads, read.empty_page) == (pages, 0, 0, None)
    assert read.bytes > 0
    assert read.extra_fields == [] and read.missing_fields == []
    # Each page requested exactly once by the client (the reference read above doubles them).
    assert server.stats()[endpoint]["pages"] == {str(p): 2 for p in range(1, pages + 1)}
    assert_typed(read)


def test_retries_through_a_5xx_burst(api_server) -> None:
    server = api_server(records=2345, day=DAY, fail_first_n=3)
    read = client(server, max_concurrency=4).read_endpoint("users")
    assert read.rows == read.total == 2345
    assert read.frame["id"].is_unique
    assert read.retries == 3
    assert requests_by_status(server, "users") == {"200": 24, "500": 2, "503": 1}


def test_retries_counted_under_random_5xx(api_server) -> None:
    server = api_server(records=2345, day=DAY, error_rate=0.15)
    read = client(server, max_retries=8).read_endpoint("tracks")
    assert read.rows == read.total == 2345
    failures = sum(
        n for status, n in requests_by_status(server, "tracks").items() if status != "200"
    )
    assert failures > 0
    assert read.retries == failures
    assert read.requests == 24


def test_retries_through_429_burst_honouring_retry_after(api_server) -> None:
    server = api_server(records=1000, day=DAY, rate_limit_first_n=2, retry_after_s=1)
    read = client(server).read_endpoint("listen_history")
    assert read.rows == read.total == 1000
    assert read.retries == 2
    assert requests_by_status(server, "listen_history") == {"200": 10, "429": 2}
    # The backoff configured here is 10 ms: only Retry-After (1 s, twice) explains 2 s.
    assert read.api_seconds >= 2.0


def test_exhausted_5xx_retries_fail_naming_endpoint_and_page(api_server) -> None:
    server = api_server(records=1000, day=DAY, fail_first_n=10)
    with pytest.raises(ApiError) as caught:
        client(server, max_retries=2).read_endpoint("users")
    message = str(caught.value)
    assert "endpoint 'users', page 1" in message
    assert "too many 50" in message and "gave up after 2 retries" in message
    assert requests_by_status(server, "users") == {"500": 2, "503": 1}


def test_slow_page_times_out_then_succeeds_on_retry(api_server, watch) -> None:
    server = api_server(records=1000, day=DAY, slow_pages={3: 5.0})
    # Page 3 is slow once: the fault is lifted as soon as the first request for it arrives.
    watch(lambda: server.stats()["tracks"]["pages"].get("3", 0) >= 1, server.clear_faults)
    read = client(server, read_timeout=0.5).read_endpoint("tracks")
    assert read.rows == read.total == 1000
    assert read.retries == 1
    assert server.stats()["tracks"]["pages"]["3"] == 2


def test_slow_page_exhausting_retries_fails_naming_endpoint_and_page(api_server) -> None:
    server = api_server(records=1000, day=DAY, slow_pages={2: 3.0})
    with pytest.raises(ApiError) as caught:
        client(server, read_timeout=0.3, max_retries=1).read_endpoint("users")
    message = str(caught.value)
    assert "endpoint 'users', page 2" in message
    assert "read timed out" in message and "gave up after 1 retries" in message
    assert caught.value.page == 2


def test_malformed_page_fails_naming_endpoint_and_page(api_server) -> None:
    server = api_server(records=1000, day=DAY, malformed_pages=[3])
    with pytest.raises(ApiPageError) as caught:
        client(server).read_endpoint("tracks")
    assert "endpoint 'tracks', page 3" in str(caught.value)
    assert "not a page: missing items, total, pages" in str(caught.value)


def test_truncated_page_fails_naming_endpoint_and_page(api_server) -> None:
    server = api_server(records=1000, day=DAY, truncated_pages=[2])
    with pytest.raises(ApiPageError) as caught:
        client(server).read_endpoint("listen_history")
    assert "endpoint 'listen_history', page 2" in str(caught.value)
    assert "not valid JSON" in str(caught.value)


def test_malformed_record_is_rejected_while_neighbours_load(api_server) -> None:
    server = api_server(records=1000, day=DAY, malformed_records=[(2, 5, "wrong_type")])
    read = client(server).read_endpoint("users")
    assert read.total == 1000
    assert read.rows == read.total - 1
    assert read.frame["id"].is_unique
    assert len(read.rejects) == 1
    reject = read.rejects.iloc[0]
    assert (reject["endpoint"], reject["page"], reject["position"]) == ("users", 2, 5)
    assert (reject["field"], reject["record_key"]) == ("id", "abc")
    assert "expected an integer, got string" in reject["reason"]
    assert '"id": "abc"' in reject["record"]
    # The neighbours on page 2 are there, in order.
    reference = raw_keys(server, "users")
    assert read.frame["id"].tolist() == [k for k in reference if k != "abc"]


def test_missing_field_is_rejected_and_reported(api_server) -> None:
    server = api_server(records=1000, day=DAY, malformed_records=[(4, 0, "missing_field")])
    read = client(server).read_endpoint("listen_history")
    assert read.rows == 999
    assert read.missing_fields == ["user_id"]
    reject = read.rejects.iloc[0]
    assert (reject["page"], reject["position"], reject["field"]) == (4, 0, "user_id")
    assert reject["reason"] == "required field is missing"
    assert pd.isna(reject["record_key"])


def test_total_drift_mid_read_rereads_once(api_server) -> None:
    server = api_server(records=1000, day=DAY, total_drift=5, total_drift_after=3, latency_ms=5)
    read = client(server, max_concurrency=1).read_endpoint("users")
    assert read.rereads == 1
    assert read.total == 1005 and read.pages == 11
    assert read.rows == read.total
    assert read.frame["id"].is_unique
    assert server.stats()["users"]["pages"]["1"] == 2


def test_persistent_total_drift_fails_clearly(api_server, watch) -> None:
    server = api_server(records=1000, day=DAY, total_drift=5, total_drift_after=3, latency_ms=20)

    def drift_again() -> None:
        # Counters restart with the new faults: the next answer serves 1000, later ones 1009.
        server.set_faults(total_drift=9, total_drift_after=1, latency_ms=20)

    watch(lambda: server.stats()["users"]["pages"].get("1", 0) >= 2, drift_again)
    with pytest.raises(ApiDriftError) as caught:
        client(server, max_concurrency=1).read_endpoint("users")
    message = str(caught.value)
    assert "endpoint 'users'" in message
    assert "total 1000 -> 1005" in message  # the first read
    assert f"old total {caught.value.old_total}, new total {caught.value.new_total}" in message
    assert caught.value.old_total == 1005
    assert caught.value.new_total != 1005


def test_page_size_over_contract_cap_fails_before_any_request(api_server) -> None:
    server = api_server(records=1000, day=DAY)
    with pytest.raises(ValueError, match="page_size must be between 1 and 100, got 101"):
        client(server, page_size=101)

    @dg.asset
    def users(moovitamix_api: MoovitamixApiResource) -> int:
        return moovitamix_api.read_endpoint("users").rows

    result = dg.materialize(
        [users],
        resources={"moovitamix_api": MoovitamixApiResource.configure_at_launch()},
        run_config={
            "resources": {
                "moovitamix_api": {"config": {"base_url": server.base_url, "page_size": 101}}
            }
        },
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert failures and "page_size must be between 1 and 100" in str(
        failures[0].event_specific_data
    )
    assert server.stats()["users"]["requests"] == 0


def test_smaller_page_size_reads_everything(api_server) -> None:
    server = api_server(records=1000, day=DAY)
    read = client(server, page_size=37, max_concurrency=3).read_endpoint("tracks")
    assert (read.rows, read.pages, read.requests, read.page_size) == (1000, 28, 28, 37)
    assert read.frame["id"].tolist() == raw_keys(server, "tracks")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_api_fails_fast_naming_the_setting() -> None:
    resource = MoovitamixApiResource(
        base_url=f"http://127.0.0.1:{free_port()}", max_retries=1, backoff_factor=0.01
    )
    with pytest.raises(ApiUnavailableError) as caught:
        resource.probe()
    message = str(caught.value)
    assert "MOOVITAMIX_API_URL" in message and "cannot connect" in message
    with pytest.raises(ApiError, match=r"endpoint 'users', page 1: cannot connect") as caught:
        resource.read_endpoint("users")
    assert "gave up after 1 retries" in str(caught.value)


def test_probe_reports_total_and_rejects_a_wrong_service(api_server) -> None:
    server = api_server(records=1234, day=DAY)
    probe = client(server).probe()
    assert (probe.total, probe.endpoint, probe.base_url) == (1234, "users", server.base_url)
    assert client(server).check_reachable().total == 1234
    # The stand-in's /docs page is HTML: a URL pointing at some other web page fails clearly.
    wrong = client(server, base_url=f"{server.base_url}/docs#")
    with pytest.raises(ApiUnavailableError, match="MOOVITAMIX_API_URL"):
        wrong.probe()


def test_client_error_status_is_not_retried_and_is_named(api_server) -> None:
    server = api_server(records=100, day=DAY)
    resource = client(server, base_url=f"{server.base_url}/v2")
    with pytest.raises(ApiError) as caught:
        resource.read_endpoint("users")
    message = str(caught.value)
    assert "endpoint 'users', page 1: HTTP 404 Not Found after 0 retries" in message


def test_resource_reads_its_url_from_the_environment_in_a_run(api_server, monkeypatch) -> None:
    server = api_server(records=250, day=DAY)
    monkeypatch.setenv("MOOVITAMIX_API_URL", server.base_url)

    @dg.asset
    def tracks(
        context: AssetExecutionContext, moovitamix_api: MoovitamixApiResource
    ) -> dg.MaterializeResult:
        moovitamix_api.check_reachable()
        read = moovitamix_api.read_endpoint("tracks", log=context.log)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": read.rows, "requests": read.requests}
        )

    resource = MoovitamixApiResource(base_url=dg.EnvVar("MOOVITAMIX_API_URL"))
    result = dg.materialize([tracks], resources={"moovitamix_api": resource})
    assert result.success
    metadata = result.asset_materializations_for_node("tracks")[0].metadata
    assert metadata["dagster/row_count"].value == 250
    assert metadata["requests"].value == 3


def test_a_streamed_read_hands_on_frames_in_order_equal_to_the_whole_read(api_server) -> None:
    server = api_server(records=1000, day=DAY)
    api = client(server)
    stream = api.stream_endpoint("listen_history", chunk_rows=300)
    frames = stream.frames()
    first = next(frames)
    with pytest.raises(RuntimeError, match="has not run to its end"):
        stream.result()  # the figures exist only once every page is read
    rest = list(frames)
    # Frames are handed on as soon as 300 rows are in (whole pages of 100 each).
    assert [len(f) for f in [first, *rest]] == [300, 300, 300, 100]
    streamed = pd.concat([first, *rest], ignore_index=True)
    whole = api.read_endpoint("listen_history").frame
    pd.testing.assert_frame_equal(streamed, whole)
    read = stream.result()
    assert (read.rows, read.total, read.pages_read, len(read.frame)) == (1000, 1000, 10, 0)


def test_read_ahead_starts_the_next_endpoint_once_the_previous_has_fetched_every_page(
    api_server,
) -> None:
    server = api_server(records=450, day=DAY)
    api = client(server)
    users = api.stream_endpoint("users", chunk_rows=100)
    tracks = api.stream_endpoint("tracks", chunk_rows=100)
    users.read_ahead(tracks)
    server.reset_stats()
    frames = users.frames()
    next(frames)
    assert server.stats().get("tracks", {}).get("requests", 0) == 0  # not before users is in
    rest = list(frames)
    # users has read and checked its 5 pages: tracks is requested before anyone reads it.
    deadline = time.monotonic() + 5
    while server.stats().get("tracks", {}).get("requests", 0) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats()["tracks"]["requests"] == 5
    assert sum(map(len, rest)) == 350
    streamed = pd.concat(list(tracks.frames()), ignore_index=True)
    pd.testing.assert_frame_equal(streamed, api.read_endpoint("tracks").frame)
    assert server.stats()["tracks"]["requests"] == 10  # the read ahead, then read_endpoint's
    assert tracks.result().pages_read == 5


def test_closing_a_stream_read_ahead_stops_its_fetching(api_server) -> None:
    server = api_server(records=30_000, day=DAY)
    api = client(server, max_concurrency=2)
    stream = api.stream_endpoint("users")
    server.reset_stats()
    stream.start()
    time.sleep(0.3)
    stream.close()
    stopped = server.stats()["users"]["requests"]
    time.sleep(0.3)
    # Bounded (window and queue) and stopped: far fewer than the 300 pages, none after close.
    assert 0 < stopped < 300
    assert server.stats()["users"]["requests"] == stopped
