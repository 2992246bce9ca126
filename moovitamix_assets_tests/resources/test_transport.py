"""The transport over real loopback HTTP servers: what the stand-in never does.

Proxies, redirects, compressed bodies, reason phrases and connection reuse. Retries, timeouts
and truncated bodies are tested against the stand-in in ``test_api_http``.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import urllib3
from urllib3.exceptions import DecodeError, MaxRetryError, ReadTimeoutError

from moovitamix_assets.resources.transport import NO_RETRY, Connections, RetrySettings

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]
SETTINGS = RetrySettings(
    max_retries=2,
    backoff_factor=0,
    backoff_jitter=0,
    backoff_max=0,
    retry_after_max=5,
    connect_timeout=2,
    read_timeout=5,
)


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@contextmanager
def serve(handle: Handler) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """A loopback HTTP/1.1 server answering every GET with ``handle``; yields its URL and the
    (client port, path) of every request it received."""
    seen: list[tuple[int, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the API

        def do_GET(self) -> None:
            seen.append((self.client_address[1], self.path))
            handle(self)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def reply(
    request: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    request.send_response(status)
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)


def test_requests_reuse_their_connections() -> None:
    with serve(lambda r: reply(r, 200, b"{}")) as (url, seen):
        connections = Connections(url, 2)
        for page in range(20):
            assert connections.get(f"users?page={page}", NO_RETRY, SETTINGS.timeout()).data == b"{}"
        connections.clear()
    assert len(seen) == 20
    assert len({port for port, _ in seen}) == 1  # one kept-alive connection, not twenty


def test_a_base_path_prefixes_every_request_and_redirects_are_followed() -> None:
    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        if request.path == "/v1/old":
            reply(request, 307, b"", {"Location": "/v1/new"})
        else:
            reply(request, 200, request.path.encode())

    with serve(handle) as (url, _):
        answer = Connections(f"{url}/v1/", 1).get("old", NO_RETRY, SETTINGS.timeout())
    assert (answer.status, answer.data) == (200, b"/v1/new")


def test_an_error_answer_keeps_its_status_reason_and_body() -> None:
    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        reply(request, 404, b'{"detail": "Not Found"}', {"Retry-After": "7"})

    with serve(handle) as (url, seen):
        answer = Connections(url, 1).get("nope", SETTINGS.policy(), SETTINGS.timeout())
    assert (answer.status, answer.reason) == (404, "Not Found")
    assert answer.data == b'{"detail": "Not Found"}'
    assert answer.retry_after == 7
    assert len(seen) == 1  # a 404 is not retried, Retry-After or not


def test_retry_after_is_honoured_then_exhausted_retries_name_the_status() -> None:
    answers = iter([(503, {"Retry-After": "1"}), (200, {})])

    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        status, headers = next(answers, (503, {}))
        reply(request, status, b"{}", headers)

    with serve(handle) as (url, seen):
        connections = Connections(url, 1)
        started = time.monotonic()
        assert connections.get("a", SETTINGS.policy(), SETTINGS.timeout()).status == 200
        assert time.monotonic() - started >= 1  # the backoff alone would be 0 s
        with pytest.raises(MaxRetryError, match="too many 503 error responses"):
            connections.get("b", SETTINGS.policy(), SETTINGS.timeout())
    assert [path for _, path in seen] == ["/a", "/a", "/b", "/b", "/b"]  # 2 retries, then out


def test_a_compressed_body_is_decompressed_and_a_corrupt_one_is_a_decode_error() -> None:
    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        body = gzip.compress(b'{"items": []}') if request.path == "/good" else b"not gzip"
        reply(request, 200, body, {"Content-Encoding": "gzip"})

    with serve(handle) as (url, _):
        connections = Connections(url, 1)
        assert connections.get("good", NO_RETRY, SETTINGS.timeout()).data == b'{"items": []}'
        with pytest.raises(DecodeError):
            connections.get("bad", SETTINGS.policy(), SETTINGS.timeout())


def test_the_environments_proxy_carries_the_requests_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forward(request: http.server.BaseHTTPRequestHandler) -> None:
        # A forward proxy gets the absolute URL and fetches it itself.
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(request.path) as upstream:
            reply(request, upstream.status, b"via proxy: " + upstream.read())

    with (
        serve(lambda r: reply(r, 200, b"origin")) as (origin, at_origin),
        serve(forward) as (proxy, at_proxy),
    ):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        through = Connections(origin, 1)
        answer = through.get("users?page=1", NO_RETRY, SETTINGS.timeout())
        assert answer.data == b"via proxy: origin"
        assert [path for _, path in at_proxy] == [f"{origin}/users?page=1"]

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert Connections(origin, 1).proxy == ""
        assert Connections(origin, 1).get("direct", NO_RETRY, SETTINGS.timeout()).data == b"origin"
        assert len(at_proxy) == 1 and at_origin[-1][1] == "/direct"


def test_an_http_base_url_is_not_sent_through_an_https_only_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    assert Connections("https://api.example.test", 4).proxy == "http://proxy.example.test:3128"
    assert Connections("http://api.example.test", 4).proxy == ""


def test_no_read_timeout_waits_for_a_slow_answer_and_a_read_timeout_does_not() -> None:
    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        reply(request, 200, b"late")

    with serve(handle) as (url, _):
        unlimited = urllib3.Timeout(connect=2, read=None)
        assert Connections(url, 1).get("slow", NO_RETRY, unlimited).data == b"late"
        with pytest.raises(MaxRetryError) as caught:
            Connections(url, 1).get("slow", NO_RETRY, urllib3.Timeout(connect=2, read=1))
    assert isinstance(caught.value.reason, ReadTimeoutError)
