"""Client of the MooVitamix API: every page of an endpoint, in page order, read consistently.

The service has no cursor, filter or ETag: every read is a full read. Page 1 gives ``total`` and
``pages``; the others are fetched by a small thread pool and handed on in page order. The read
stops after ``pages`` pages, or at an early empty page (the data shrank: the completeness audit
compares rows with ``total``); more than ``max_pages`` is an error, never a silent truncation. A
page whose ``total`` or ``pages`` differs from page 1's means the data changed mid-read: a mix of
two states would lose or repeat records, so the endpoint stops, loudly, and nothing is stored.
"""

import json
import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, partial
from itertools import islice
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import dagster as dg
import requests
from pydantic import Field, ValidatorFunctionWrapHandler, field_validator
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as u3
from urllib3.util import Retry

from moovitamix_assets.constants import API_MAX_PAGE_SIZE, ENDPOINTS
from moovitamix_assets.contract import fields_of

logger = logging.getLogger(__name__)

API_URL_ENV_VAR: Final = "MOOVITAMIX_API_URL"
DEFAULT_BASE_URL: Final = "http://127.0.0.1:8000"
OPENAPI_PATH: Final = "openapi.json"
# Pages requested ahead of the reader per worker: the service always has a request waiting.
_AHEAD_PER_WORKER: Final = 4
# The CA bundle's variables, in the precedence requests gives them (SSL_CERT_FILE: OpenSSL's).
_CA_BUNDLE_VARS: Final = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
# Setting -> (lowest, highest) allowed value.
_RANGES: Final[dict[str, tuple[int, int | None]]] = {
    "page_size": (1, API_MAX_PAGE_SIZE),
    "max_concurrency": (1, 64),
    "max_pages": (1, None),
}


class ApiError(Exception):
    """A read of the MooVitamix API failed; the message names the endpoint and the page."""

    def __init__(self, endpoint: str, page: int | None, reason: str) -> None:
        where = f"endpoint {endpoint!r}" + (f", page {page}" if page is not None else "")
        super().__init__(f"MooVitamix API {where}: {reason}")


class ApiPageError(ApiError):
    """A response was not a contract page (not JSON, truncated, missing or mistyped fields)."""


class ApiDriftError(ApiError):
    """The endpoint's ``total`` changed during the read: no consistent snapshot was possible."""


class ApiUnavailableError(ApiError):
    """The base URL does not answer, or does not answer like the MooVitamix API."""


class ApiPage(NamedTuple):
    """One page as received: its items (JSON-decoded), the counts and what fetching it cost."""

    number: int
    items: list[Any]
    total: int
    pages: int
    retries: int
    bytes: int


def describe(exc: requests.RequestException) -> str:
    """A short cause of a failed request (after its retries)."""
    cause: BaseException = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
    if isinstance(cause, u3.MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    if isinstance(exc, requests.ReadTimeout) or isinstance(cause, u3.ReadTimeoutError):
        return "read timed out"
    if isinstance(cause, u3.NewConnectionError):  # before its base class ConnectTimeoutError
        return "cannot connect (connection refused, unknown host or host unreachable)"
    if isinstance(cause, u3.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(cause, u3.ResponseError):
        return str(cause)  # "too many 503 error responses"
    if isinstance(cause, u3.ProtocolError):
        return f"connection broken ({cause})"
    return f"{type(cause).__name__}: {cause}"


def page_problem(payload: Any, number: int, size: int) -> str | None:
    """Why a decoded body is not the contract's page object of that number and size, or None."""
    if not isinstance(payload, dict) or {"items", "total", "pages"} - payload.keys():
        shown = ", ".join(sorted(payload)) if isinstance(payload, dict) else type(payload).__name__
        return f"not a page object (it has: {shown or 'nothing'})"
    items, total, pages = payload["items"], payload["total"], payload["pages"]
    if not isinstance(items, list):
        return "'items' is not an array"
    for key, value in (("total", total), ("pages", pages)):
        if type(value) is not int or value < 0:
            return f"{key!r} is {value!r}, not a count"
    # A service that ignored our page or size parameters would make us skip or repeat records.
    for key, expected in (("page", number), ("size", size)):
        if key in payload and payload[key] != expected:
            return f"answered {key}={payload[key]!r} to a request for {expected}"
    if len(items) > size:
        return f"{len(items)} items on a page of size {size}"
    if pages != math.ceil(total / size):
        return f"pages={pages} but ceil(total {total} / size {size}) = {math.ceil(total / size)}"
    if total == 0 and items:
        return f"total is 0 but the page has {len(items)} items"
    return None


class MoovitamixApiResource(dg.ConfigurableResource):
    """Client of the MooVitamix API (resource key ``moovitamix_api``): one ``requests.Session``
    with urllib3's ``Retry`` (connection errors, read timeouts, 429 and 5xx, backoff with jitter,
    ``Retry-After`` honoured) and a connect and read timeout on every request."""

    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description=f"Base URL of the MooVitamix API (set from {API_URL_ENV_VAR}).",
    )
    page_size: int = Field(
        default=API_MAX_PAGE_SIZE,
        description=f"Records per page, 1 to {API_MAX_PAGE_SIZE} (the contract's cap).",
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to connect.")
    read_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for an answer.")
    max_retries: int = Field(
        default=5, ge=0, description="Retries per request (connection errors, timeouts, 429, 5xx)."
    )
    backoff_factor: float = Field(
        default=0.5, ge=0, description="Backoff base in seconds: factor * 2**(retry - 1)."
    )
    backoff_jitter: float = Field(
        default=0.5,
        ge=0,
        description="Random seconds added to each backoff, so workers do not retry in lockstep.",
    )
    backoff_max: float = Field(default=30.0, ge=0, description="Longest backoff in seconds.")
    retry_after_max: int = Field(
        default=120,
        ge=0,
        description="Longest Retry-After (seconds) honoured; longer ones are capped.",
    )
    max_concurrency: int = Field(
        default=4, description="Pages fetched at once (the thread pool and connection pool size)."
    )
    max_pages: int = Field(
        default=50_000,
        description="Page cap of one read (50,000 pages of 100 = 5 million records): more is "
        "an error, never a silent truncation.",
    )

    @field_validator(*_RANGES, mode="wrap")
    @classmethod
    def _in_range(cls, raw: Any, handler: ValidatorFunctionWrapHandler, info: Any) -> int:
        value = handler(raw)
        # dagster's EnvVar.int placeholder, an int subclass valued 0, passes here: dagster builds
        # the resource again from the resolved values at setup, and this check runs then.
        low, high = _RANGES[info.field_name]
        placeholder = isinstance(raw, int) and type(raw) not in (int, bool)
        if not placeholder and (value < low or (high is not None and value > high)):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"{info.field_name} must be {bound}, got {value}")
        return value

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the session's connections."""
        if (session := self.__dict__.pop("session", None)) is not None:
            session.close()

    @cached_property
    def session(self) -> requests.Session:
        """The resource's session: pooled connections and the retry policy, made once (by the
        first request of a read or of the setup check, before any worker thread starts)."""
        retry = Retry(
            total=self.max_retries,
            status_forcelist=(429, 500, 502, 503, 504),
            backoff_factor=self.backoff_factor,
            backoff_jitter=self.backoff_jitter,
            backoff_max=self.backoff_max,
            retry_after_max=self.retry_after_max,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=self.max_concurrency, max_retries=retry
        )
        session = requests.Session()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # The environment's proxies and CA bundle, read here once for the base URL: left to
        # requests (trust_env), every request scans os.environ, a third of the client's CPU.
        session.trust_env = False
        session.proxies = requests.utils.get_environ_proxies(self.base_url)
        session.verify = next(filter(None, map(os.environ.get, _CA_BUNDLE_VARS)), True)
        return session

    def _get(self, path: str, params: dict[str, int] | None = None) -> requests.Response:
        return self.session.get(
            f"{self.base_url.rstrip('/')}/{path}",
            params=params,
            timeout=(self.connect_timeout, self.read_timeout),
        )

    def setup_for_execution(self, context: dg.InitResourceContext | None = None) -> None:
        """Check (at setup, not in the step after its retries) that the base URL, maybe an EnvVar,
        serves the three endpoints, from ``/openapi.json``: ValueError or ApiUnavailableError."""
        parts = urlsplit(self.base_url)  # shown without credentials, query or fragment
        port = f":{parts.port}" if parts.port else ""
        url = f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            reason = f"must be an http(s) URL with a host, got {url!r}"
            raise ValueError(f"base_url ({API_URL_ENV_VAR}) {reason}")
        where = f"{url} (from {API_URL_ENV_VAR})"
        try:
            response = self._get(OPENAPI_PATH)
        except requests.RequestException as exc:
            reason = f"API unreachable at {where}: {describe(exc)}"
            raise ApiUnavailableError(OPENAPI_PATH, None, reason) from None
        if response.status_code != 200:
            reason = f"API at {where} answered HTTP {response.status_code} to /{OPENAPI_PATH}"
            raise ApiUnavailableError(OPENAPI_PATH, None, reason)
        try:
            paths = response.json().get("paths") or {}
        except (ValueError, AttributeError):
            paths = {}
        if missing := [f"/{e}" for e in ENDPOINTS if f"/{e}" not in paths]:
            reason = (
                f"{where} does not serve the MooVitamix API: its /{OPENAPI_PATH} lists no "
                f"{', '.join(missing)}"
            )
            raise ApiUnavailableError(OPENAPI_PATH, None, reason)

    def fetch_page(self, endpoint: str, number: int) -> ApiPage:
        """GET one page (with retries), which must be the contract's page object of that number
        and size (ApiPageError otherwise); ApiError names the endpoint and page."""
        try:
            response = self._get(endpoint, {"page": number, "size": self.page_size})
        except requests.RequestException as exc:
            raise ApiError(endpoint, number, describe(exc)) from None
        if response.status_code != 200:
            reason = f"HTTP {response.status_code}: {response.text[:200]!r}"
            raise ApiError(endpoint, number, reason)
        body = response.content
        try:
            payload = json.loads(body)
        except ValueError as exc:
            reason = f"body is not valid JSON ({len(body)} bytes, truncated?): {exc}"
            raise ApiPageError(endpoint, number, reason) from exc
        if problem := page_problem(payload, number, self.page_size):
            raise ApiPageError(endpoint, number, problem)
        history = response.raw.retries.history if response.raw.retries else ()
        return ApiPage(
            number, payload["items"], payload["total"], payload["pages"], len(history), len(body)
        )

    def read_pages(self, endpoint: str, log: logging.Logger | None = None) -> Iterator[ApiPage]:
        """Every page of an endpoint, in page order, with the module docstring's stops (``log``
        warns of an early empty page). ValueError for an unknown endpoint, before any request."""
        fields_of(endpoint)
        first = self.fetch_page(endpoint, 1)
        if first.pages > self.max_pages:
            raise ApiError(
                endpoint,
                1,
                f"{first.pages} pages (total {first.total}) exceed max_pages={self.max_pages}; "
                "raise the resource's max_pages if this volume is expected",
            )
        yield first
        page = first
        with ThreadPoolExecutor(self.max_concurrency, f"moovitamix-{endpoint}") as pool:
            # A bounded window of pages in flight, refilled as the reader takes one.
            submit = partial(pool.submit, self.fetch_page, endpoint)
            numbers = iter(range(2, first.pages + 1) if first.items else ())
            pending = deque(map(submit, islice(numbers, _AHEAD_PER_WORKER * self.max_concurrency)))
            try:
                while page.items and pending:
                    page = pending.popleft().result()
                    pending.extend(map(submit, islice(numbers, 1)))
                    if (page.total, page.pages) != (first.total, first.pages):
                        reason = (
                            f"total changed during the read: total {first.total} -> {page.total} "
                            f"(pages {first.pages} -> {page.pages}); the service's data is "
                            "changing, nothing of this endpoint was stored, try again later"
                        )
                        raise ApiDriftError(endpoint, page.number, reason)
                    if page.items:
                        yield page
            finally:
                for future in pending:  # the read ended early: fetch nothing more
                    future.cancel()
        if first.pages and not page.items:
            (log or logger).warning(
                f"MooVitamix {endpoint}: page {page.number} of {first.pages} is empty; stopping "
                f"there (total {first.total})"
            )
