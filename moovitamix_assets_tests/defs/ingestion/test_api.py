"""The API client over real HTTP on loopback: the stand-in, and a scripted server for the cases
the stand-in cannot produce (an early empty page, a 503 with Retry-After, a huge total)."""

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pydantic
import pytest
import requests

from moovitamix_assets.defs.ingestion.api import (
    ApiDriftError,
    ApiError,
    ApiPageError,
    ApiUnavailableError,
    MoovitamixApiResource,
)

pytestmark = pytest.mark.http

KEYS = {"users": "id", "tracks": "id", "listen_history": "user_id"}


def client(base_url: str, **settings: Any) -> MoovitamixApiResource:
    """A client with tiny backoffs, so retry scenarios take milliseconds."""
    defaults = {"backoff_factor": 0.01, "backoff_jitter": 0.0, "read_timeout": 5.0}
    return MoovitamixApiResource(base_url=base_url, **{**defaults, **settings})


def read_all(api: MoovitamixApiResource, endpoint: str = "users") -> list[Any]:
    return [item for page in api.read_pages(endpoint) for item in page.items]


def reference(base_url: str, endpoint: str) -> list[Any]:
    """Every record read page by page with plain requests."""
    items, page, pages = [], 1, 1
    while page <= pages:
        params = {"page": page, "size": 100}
        payload = requests.get(f"{base_url}/{endpoint}", params=params, timeout=10).json()
        items, pages, page = items + payload["items"], payload["pages"], page + 1
    return items


@pytest.mark.parametrize("endpoint", ["users", "tracks", "listen_history"])
def test_every_page_is_read_in_order(api_server, endpoint: str) -> None:
    server = api_server(records=2345, seed=3, day="2026-04-09")
    pages = list(client(server.base_url).read_pages(endpoint))
    assert [p.number for p in pages] == list(range(1, 25))
    assert [i for p in pages for i in p.items] == reference(server.base_url, endpoint)
    assert server.stats()[endpoint]["requests"] == 2 * 24  # each page once, and the reference's


def test_5xx_and_429_are_retried_and_counted(api_server) -> None:
    server = api_server(records=250, fail_first_n=2, rate_limit_first_n=1, retry_after_s=1)
    started = time.monotonic()
    pages = list(client(server.base_url).read_pages("users"))
    assert time.monotonic() - started >= 1.0  # the 429's Retry-After, not the 10 ms backoff
    assert len(pages) == 3 and sum(p.retries for p in pages) == 3
    assert server.stats()["users"]["statuses"] == {"200": 3, "500": 1, "503": 1, "429": 1}


def test_exhausted_retries_fail_naming_endpoint_and_page(api_server) -> None:
    server = api_server(records=250, fail_first_n=100)
    with pytest.raises(ApiError, match=r"endpoint 'users', page 1: too many 50\d error responses"):
        read_all(client(server.base_url, max_retries=2))


def test_a_slow_page_times_out_and_fails_naming_endpoint_and_page(api_server) -> None:
    server = api_server(records=250, slow_pages={2: 2.0})
    api = client(server.base_url, read_timeout=0.3, max_retries=1)
    with pytest.raises(ApiError, match="endpoint 'users', page 2: read timed out"):
        read_all(api)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"malformed_pages": [2]}, "page 2: not a page object"),
        ({"truncated_pages": [3]}, r"page 3: body is not valid JSON \(\d+ bytes, truncated\?\)"),
    ],
)
def test_a_response_that_is_not_a_page_fails_naming_it(api_server, fault, message) -> None:
    server = api_server(records=250, **fault)
    with pytest.raises(ApiPageError, match=f"endpoint 'users', {message}"):
        read_all(client(server.base_url))


def test_total_changing_mid_read_stops_the_endpoint(api_server) -> None:
    server = api_server(records=250, total_drift=5, total_drift_after=1)
    with pytest.raises(ApiDriftError, match=r"total changed during the read: total 250 -> 255"):
        read_all(client(server.base_url))


def test_a_client_error_is_not_retried_and_is_named(api_server) -> None:
    server = api_server(records=250)
    with pytest.raises(ApiError, match="endpoint 'users', page 1: HTTP 422"):
        read_all(client(server.base_url, page_size=100).model_copy(update={"page_size": 101}))


def test_settings_out_of_range_are_refused_before_any_request() -> None:
    with pytest.raises(pydantic.ValidationError, match="page_size must be between 1 and 100"):
        MoovitamixApiResource(page_size=101)
    with pytest.raises(pydantic.ValidationError, match="max_concurrency must be between 1 and 64"):
        MoovitamixApiResource(max_concurrency=0)
    with pytest.raises(ValueError, match="must be an http"):
        MoovitamixApiResource(base_url="127.0.0.1:8000").setup_for_execution()


def test_an_unreachable_or_wrong_service_is_named_without_credentials(api_server) -> None:
    password = secrets.token_hex(8)
    api = client(f"http://moovitamix:{password}@127.0.0.1:1", max_retries=0)
    with pytest.raises(ApiUnavailableError) as raised:
        api.setup_for_execution()
    message = str(raised.value)
    assert "http://127.0.0.1:1 (from MOOVITAMIX_API_URL)" in message and "cannot connect" in message
    assert password not in message and raised.value.__cause__ is None
    server = api_server(records=10)
    with pytest.raises(ApiUnavailableError, match="answered HTTP 404 to /openapi.json"):
        client(f"{server.base_url}/v2").setup_for_execution()
    client(server.base_url).setup_for_execution()  # the real one passes, with no data request
    assert server.stats()["users"]["requests"] == 0


class Scripted(BaseHTTPRequestHandler):
    """Answers ``/users`` from ``server.answer(page) -> (status, headers, body)``."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        page = int(self.path.split("page=")[1].split("&")[0])
        self.server.requests.append(page)  # type: ignore[attr-defined]
        status, headers, body = self.server.answer(page)  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[int], tuple]], ThreadingHTTPServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[int], tuple]) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
        server.answer, server.requests = answer, []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def page(number: int, count: int, total: int) -> tuple[int, dict, bytes]:
    items = [{"id": number * 1000 + i} for i in range(count)]
    body = {"items": items, "total": total, "page": number, "size": 100, "pages": -(-total // 100)}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_an_empty_page_before_the_last_stops_the_read_with_a_warning(scripted, caplog) -> None:
    server = scripted(lambda n: page(n, 100 if n == 1 else 0, 500))
    with caplog.at_level(logging.WARNING):
        pages = list(client(url(server), max_concurrency=1).read_pages("users"))
    assert [len(p.items) for p in pages] == [100]
    assert "page 2 of 5 is empty; stopping there (total 500)" in caplog.text


def test_a_503_with_retry_after_is_honoured(scripted) -> None:
    answers = iter([(503, {"Retry-After": "1"}, b"busy")])
    server = scripted(lambda n: next(answers, None) or page(n, 3, 3))
    started = time.monotonic()
    (only,) = client(url(server)).read_pages("users")
    assert time.monotonic() - started >= 1.0
    assert (only.retries, len(only.items), server.requests) == (1, 3, [1, 1])


def test_more_pages_than_max_pages_is_an_error_not_a_truncation(scripted) -> None:
    server = scripted(lambda n: page(n, 100, 10_000_000))
    with pytest.raises(ApiError, match=r"100000 pages \(total 10000000\) exceed max_pages=50000"):
        read_all(client(url(server)))
    assert server.requests == [1]


def test_a_page_that_disagrees_with_the_request_is_refused(scripted) -> None:
    server = scripted(lambda n: page(1, 100, 300))  # the service ignores ?page=
    with pytest.raises(ApiPageError, match="page 2: answered page=1 to a request for 2"):
        read_all(client(url(server)))


@pytest.fixture
def proxy_env(monkeypatch) -> Callable[..., None]:
    """Set the proxy variables given, with every other proxy variable of this machine unset."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)

    def set_proxies(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_proxies


def test_the_environments_proxy_carries_the_requests(scripted, proxy_env) -> None:
    proxy = scripted(lambda n: page(n, 3, 3))
    proxy_env(HTTP_PROXY=url(proxy))
    # A host that exists nowhere: only the proxy can answer for it.
    assert len(read_all(client("http://moovitamix-api.invalid"))) == 3
    assert proxy.requests == [1]


def test_no_proxy_bypasses_the_proxy_for_the_api_host(scripted, proxy_env) -> None:
    server = scripted(lambda n: page(n, 3, 3))
    proxy_env(HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")  # nothing listens on 9
    assert len(read_all(client(url(server)))) == 3
    assert server.requests == [1]


def test_the_ca_bundle_comes_from_the_environment_as_requests_orders_it(monkeypatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert client("https://api.example").session.verify is True
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/openssl.pem")
    assert client("https://api.example").session.verify == "/etc/ssl/openssl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/requests.pem")
    assert client("https://api.example").session.verify == "/etc/ssl/requests.pem"
