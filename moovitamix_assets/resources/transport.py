"""HTTP transport of the MooVitamix API client: pooled connections, retries, page GETs.

urllib3 directly rather than requests (built on it): a read makes thousands of requests, and
requests' per-request work (settings merge, cookies, hooks, proxy and netrc lookups) cost 1.6 ms
of CPU per page against 0.5 ms here, on the GIL the page decoding needs. Nothing here knows
Dagster or pandas: ``api`` builds the client's reads on it.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import urllib3
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


def pool_manager(base_url: str, maxsize: int) -> urllib3.PoolManager:
    """A connection pool for the API, through the environment's proxy if it names one."""
    proxy = _environment_proxy(base_url)
    if proxy:
        return urllib3.ProxyManager(proxy, num_pools=2, maxsize=maxsize, headers=HEADERS)
    return urllib3.PoolManager(num_pools=2, maxsize=maxsize, headers=HEADERS)


class Connections:
    """The API host's pooled connections, and the shortest way to send a GET over them."""

    def __init__(self, base_url: str, maxsize: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.manager = pool_manager(base_url, maxsize)
        # Straight to the host's pool: the manager's per-request URL parsing, pool lookup and
        # redirect layer cost 0.2 ms of CPU per page (a third of a request). Through a proxy,
        # the manager keeps sending absolute URLs itself.
        self.pool: urllib3.HTTPConnectionPool | None = (
            None
            if isinstance(self.manager, urllib3.ProxyManager)
            else self.manager.connection_from_url(base_url)
        )
        self.path = urlsplit(self.base_url).path

    def get(self, path: str, retries: Retry, timeout: urllib3.Timeout) -> urllib3.BaseHTTPResponse:
        """GET ``path`` (below the base URL, query included); the body is read before returning."""
        if self.pool is None:
            return self.manager.urlopen(
                "GET", f"{self.base_url}/{path}", retries=retries, timeout=timeout
            )
        return self.pool.urlopen(
            "GET", f"{self.path}/{path}", retries=retries, timeout=timeout, headers=HEADERS
        )

    def clear(self) -> None:
        """Close every pooled connection."""
        self.manager.clear()


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
