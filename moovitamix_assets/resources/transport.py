"""HTTP transport of the MooVitamix API client: kept-alive connections, retries, page GETs.

A read makes thousands of requests, and every millisecond of Python per request is taken from
the GIL the page decoding and the COPY need. Measured per page: requests 1.6 ms of CPU (settings
merge, cookies, hooks, proxy and netrc lookups), urllib3 0.5 ms (http.client's line-by-line
reads and email-parser headers), libcurl through pycurl 0.25 ms, with the GIL released for the
whole exchange. So libcurl carries the requests and urllib3's ``Retry`` decides the retries
(statuses, errors, backoff with jitter, ``Retry-After``). Nothing here knows Dagster or pandas:
``api`` builds the client's reads on it.
"""

from __future__ import annotations

import math
import os
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import urlsplit

import certifi
import pycurl
import urllib3
from urllib3 import HTTPHeaderDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.util.retry import Retry

# Transient answers worth another try: rate limiting and the 5xx a proxy or a restarting app gives.
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
USER_AGENT: Final = "moovitamix-platform"
HEADERS: Final = {"Accept": "application/json", "User-Agent": USER_AGENT}
# Characters of an unexpected error body quoted in an exception message.
BODY_EXCERPT: Final = 200

# Retries are counted per thread: each page is fetched by one thread, so the count a fetch reads
# after its request is exactly the retries that request needed, even with concurrent reads.
_retry_tally = threading.local()
# A probe's single attempt: errors surface at once, redirects are still followed.
NO_RETRY: Final = Retry(
    total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_status=False
)


def _tally_retry() -> None:
    _retry_tally.count = getattr(_retry_tally, "count", 0) + 1


def reset_retry_tally() -> None:
    """Start counting the retries of this thread's next request."""
    _retry_tally.count = 0


def retry_tally() -> int:
    """Retries granted to this thread's requests since ``reset_retry_tally``."""
    return getattr(_retry_tally, "count", 0)


class CountingRetry(Retry):
    """urllib3 ``Retry`` that reports every retry it grants, for the read's metadata."""

    def __init__(self, *args: Any, on_retry: Callable[[], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_retry = on_retry

    def new(self, **kw: Any) -> CountingRetry:
        retry = super().new(**kw)
        retry.on_retry = self.on_retry
        return retry

    def increment(self, *args: Any, **kwargs: Any) -> CountingRetry:
        # super() raises MaxRetryError once retries are exhausted: only granted retries count.
        retry = super().increment(*args, **kwargs)
        if self.on_retry is not None:
            self.on_retry()
        return retry


@dataclass(frozen=True)
class RetrySettings:
    """The client's retry and timeout settings (the resource's fields of the same names)."""

    max_retries: int
    backoff_factor: float
    backoff_jitter: float
    backoff_max: float
    retry_after_max: int
    connect_timeout: float
    read_timeout: float

    def policy(self) -> CountingRetry:
        """urllib3's retries: connection errors, read timeouts, 429 and 5xx, with ``Retry-After``.

        Retry objects are immutable (each retry makes a new one): one serves every request.
        """
        retries = self.max_retries
        return CountingRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.backoff_factor,
            backoff_jitter=self.backoff_jitter,
            backoff_max=self.backoff_max,
            respect_retry_after_header=True,
            retry_after_max=self.retry_after_max,
            # An exhausted retry raises instead of handing back the last 5xx as if it were data.
            raise_on_status=True,
            on_retry=_tally_retry,
        )

    def timeout(self) -> urllib3.Timeout:
        """The connect and read timeouts of every request."""
        return urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout)


def describe_http_error(exc: HTTPError) -> str:
    """A short cause for an error urllib3 raised (after its retries, for the read pool)."""
    cause: BaseException = exc
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        cause = exc.reason
    if isinstance(cause, ReadTimeoutError):
        return "read timed out"
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(cause, NewConnectionError):
        return "cannot connect (connection refused, unknown host or host unreachable)"
    if isinstance(cause, ConnectTimeoutError):
        return "connection timed out"
    if isinstance(cause, ResponseError):
        return str(cause)  # "too many 503 error responses"
    if isinstance(cause, ProtocolError):
        return f"connection broken ({cause})"
    if isinstance(cause, Urllib3TimeoutError):
        return "timed out"
    return f"{type(cause).__name__}: {cause}"


def _environment_proxy(base_url: str) -> str | None:
    """The proxy the environment names for ``base_url`` (honouring ``no_proxy``), as requests."""
    parts = urlsplit(base_url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _ca_bundle() -> str:
    """CA certificates for https: the environment's bundle if it names one, else certifi's.

    The libcurl inside pycurl's wheels looks for a bundle where the distribution it was built on
    keeps it, which other systems do not have; requests (built on certifi) behaves the same way.
    """
    named = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    return named or certifi.where()


@dataclass(frozen=True, slots=True)
class Answer:
    """A response as received: its status, its body and the wait its ``Retry-After`` asks for.

    Header lines are not collected: each would be a Python callback taking the GIL in the middle
    of the transfer (six a page). libcurl reads ``Retry-After`` itself (seconds or an HTTP
    date), the only header the client acts on.
    """

    status: int
    data: bytes
    retry_after: int = 0  # seconds; 0 when the answer had no Retry-After (or said 0)

    @property
    def reason(self) -> str:
        """The status's standard reason phrase."""
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    @property
    def headers(self) -> HTTPHeaderDict:
        """The headers the retries read: ``Retry-After``, when the answer had one."""
        return HTTPHeaderDict({"Retry-After": str(self.retry_after)} if self.retry_after else {})

    def as_urllib3(self) -> urllib3.HTTPResponse:
        """The answer as urllib3's response, for its ``Retry`` (status, ``Retry-After``)."""
        return urllib3.HTTPResponse(
            body=self.data, headers=self.headers, status=self.status, reason=self.reason
        )


def _transport_error(handle: pycurl.Curl, exc: pycurl.error, url: str) -> HTTPError:
    """libcurl's error as the urllib3 error ``Retry`` counts (connect, read) and
    ``describe_http_error`` explains."""
    code, message = exc.args[0], str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    if code in _CONNECT_ERRORS:
        return NewConnectionError(None, message)  # type: ignore[arg-type]
    if code == pycurl.E_OPERATION_TIMEDOUT:
        # Once the request went out, a timeout is the read timeout (as urllib3 reports it).
        if handle.getinfo(pycurl.PRETRANSFER_TIME) > 0:
            return ReadTimeoutError(None, url, message)  # type: ignore[arg-type]
        return ConnectTimeoutError(message)
    if code == pycurl.E_BAD_CONTENT_ENCODING:
        return DecodeError(message)
    if code == pycurl.E_TOO_MANY_REDIRECTS:
        return MaxRetryError(None, url, ResponseError(message))  # type: ignore[arg-type]
    # A body cut short, a reset, an empty or garbled answer: a read error, retried.
    return ProtocolError(f"Connection broken: {message}")


_CONNECT_ERRORS: Final = frozenset(
    {pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY}
)


class Connections:
    """The API host's kept-alive connections (libcurl handles, at most ``maxsize`` kept), and a
    GET retried by urllib3's ``Retry``, driven as urllib3's own pool drives it."""

    def __init__(self, base_url: str, maxsize: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.maxsize = maxsize
        # Explicit, so that libcurl's own (different) reading of the environment does not apply.
        self.proxy = _environment_proxy(base_url) or ""
        self._ca_bundle = _ca_bundle()
        self._idle: list[pycurl.Curl] = []
        self._lock = threading.Lock()

    def get(self, path: str, retries: Retry, timeout: urllib3.Timeout) -> Answer:
        """GET ``path`` (below the base URL, query included), retrying as ``retries`` says.

        Raises:
            MaxRetryError: Retries exhausted (its ``reason`` is the last error or the status).
            HTTPError: A failure ``retries`` does not retry (e.g. an undecodable body).
        """
        url = f"{self.base_url}/{path}"
        # urllib3's HTTPConnectionPool.urlopen, step for step: every decision (retry or not,
        # which counter, how long to sleep, when to give up) is the Retry object's.
        while True:
            try:
                answer = self._send(url, timeout)
            except HTTPError as error:
                if isinstance(error, DecodeError | MaxRetryError):
                    raise
                # Raises MaxRetryError (reason: this error) once the retries are spent.
                retries = retries.increment("GET", url, error=error)
                retries.sleep()
                continue
            if not retries.is_retry("GET", answer.status, answer.retry_after > 0):
                return answer
            response = answer.as_urllib3()
            try:
                retries = retries.increment("GET", url, response=response)
            except MaxRetryError:
                if retries.raise_on_status:
                    raise
                return answer
            retries.sleep(response)

    def _send(self, url: str, timeout: urllib3.Timeout) -> Answer:
        handle = self._checkout()
        body: list[bytes] = []
        try:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.WRITEFUNCTION, body.append)
            # None (no timeout) becomes 0: libcurl's default for a connection, no read limit.
            connect, read = timeout.connect_timeout, timeout.read_timeout
            handle.setopt(
                pycurl.CONNECTTIMEOUT_MS, 0 if connect is None else math.ceil(connect * 1000)
            )
            # urllib3's read timeout bounds each wait for data; libcurl's equivalent is a
            # transfer slower than 1 byte/s for that long, in whole seconds.
            handle.setopt(pycurl.LOW_SPEED_TIME, 0 if read is None else max(1, math.ceil(read)))
            try:
                handle.perform()
            except pycurl.error as exc:
                raise _transport_error(handle, exc, url) from exc
            status = handle.getinfo(pycurl.RESPONSE_CODE)
            retry_after = handle.getinfo(pycurl.RETRY_AFTER) if status >= 400 else 0
            return Answer(status, b"".join(body), retry_after)
        finally:
            self._checkin(handle)

    def _checkout(self) -> pycurl.Curl:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: required with threads
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in HEADERS.items()])
        handle.setopt(pycurl.PROXY, self.proxy)
        handle.setopt(pycurl.CAINFO, self._ca_bundle)
        # Accept compressed bodies (libcurl decompresses them); the stand-in sends none.
        handle.setopt(pycurl.ACCEPT_ENCODING, "")
        handle.setopt(pycurl.FOLLOWLOCATION, 1)
        handle.setopt(pycurl.MAXREDIRS, 5)
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        return handle

    def _checkin(self, handle: pycurl.Curl) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(handle)
                return
        handle.close()

    def clear(self) -> None:
        """Close every idle connection (a later request opens new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for handle in idle:
            handle.close()


class PageFetchError(Exception):
    """A page GET failed; ``not_a_page`` when the body came but cannot be a page at all."""

    def __init__(
        self, number: int, reason: str, retries: int, received: int, not_a_page: bool = False
    ):
        super().__init__(f"page {number}: {reason}")
        self.number = number
        self.reason = reason
        self.retries = retries
        self.received = received
        self.not_a_page = not_a_page


@dataclass(frozen=True, slots=True)
class FetchedBody:
    """A page's body as received, with the retries getting it took."""

    body: bytes
    retries: int


def page_path(endpoint: str, page: int, size: int) -> str:
    """The request path (below the base URL) of one page."""
    return f"{endpoint}?page={page}&size={size}"


def fetch_page_body(
    connections: Connections,
    settings: RetrySettings,
    policy: Retry,
    endpoint: str,
    number: int,
    size: int,
) -> FetchedBody:
    """GET one page with retries; its body, not yet decoded.

    Raises:
        PageFetchError: Retries were exhausted, the answer was an error status not worth
            retrying (4xx), or a compressed body did not decompress (``not_a_page``).
    """
    reset_retry_tally()
    try:
        response = connections.get(page_path(endpoint, number, size), policy, settings.timeout())
        body = response.data
    except DecodeError as exc:  # a compressed body that does not decompress
        raise PageFetchError(
            number, f"undecodable body: {exc}", retry_tally(), 0, not_a_page=True
        ) from exc
    except HTTPError as exc:
        timeouts = f"connect {settings.connect_timeout}s, read {settings.read_timeout}s"
        raise PageFetchError(
            number,
            f"{describe_http_error(exc)}; gave up after {retry_tally()} retries "
            f"(max_retries={settings.max_retries}, timeouts {timeouts})",
            retry_tally(),
            0,
        ) from exc
    if response.status >= 400:
        excerpt = body[:BODY_EXCERPT].decode("utf-8", "replace")
        raise PageFetchError(
            number,
            f"HTTP {response.status} {response.reason} after {retry_tally()} retries: {excerpt}",
            retry_tally(),
            len(body),
        )
    return FetchedBody(body, retry_tally())
