"""HTTP client of the MooVitamix API: reads a whole endpoint, page by page, into a typed frame.

The service has no cursor, no filter and no ETag (see the API contract): every read is a full read
of the current state, so the client's job is to read all pages of that state consistently, survive
transient failures, and say clearly what it could not load.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from urllib3.exceptions import HTTPError
from urllib3.util.retry import Retry

from moovitamix_assets.constants import API_MAX_PAGE_SIZE, ENDPOINTS, USERS_ENDPOINT
from moovitamix_assets.models.pages import ConformingPage, decode_conforming_page
from moovitamix_assets.models.records import (
    REJECT_COLUMNS,
    FrameAccumulator,
    Rejection,
    contract_columns,
    empty_frame,
    item_field_drift,
    rejects_frame,
    validate_values,
)
from moovitamix_assets.resources.io_manager import RestartStream
from moovitamix_assets.resources.page_feed import PageFeed, fetch_in_threads
from moovitamix_assets.resources.transport import (
    NO_RETRY,
    Answer,
    Connections,
    CountingRetry,
    FetchedBody,
    PageFetchError,
    RetrySettings,
    describe_http_error,
    fetch_page_body,
    page_path,
)

logger = logging.getLogger(__name__)

API_URL_ENV_VAR: Final = "MOOVITAMIX_API_URL"
DEFAULT_BASE_URL: Final = "http://127.0.0.1:8000"
# The service's OpenAPI schema (a FastAPI app serves it; the contract lists it).
OPENAPI_PATH: Final = "openapi.json"
# Valid rows per frame a streamed read hands on (the IO manager COPYs each while reading on).
# Small frames keep the work even: with 20,000 rows, each frame's encoding and COPY came in a
# burst that held up the fetching, and the service stood idle for 0.9-1.1 s of a 300,000-row
# ingestion; with 5,000 rows for 0.4-0.6 s (bench/bench_ingestion.py).
STREAM_CHUNK_ROWS: Final = 5_000
# Pages being fetched at once per connection: enough that the service always has a request
# waiting while responses travel back and are handed on.
_IN_FLIGHT_PER_CONNECTION: Final = 16
# Info-level progress once per this many pages: 10 lines for a million-record endpoint.
PROGRESS_EVERY_PAGES: Final = 1000


class ApiError(Exception):
    """A read of the MooVitamix API failed; the message names the endpoint and the page."""

    def __init__(self, endpoint: str, page: int | None, reason: str) -> None:
        self.endpoint = endpoint
        self.page = page
        self.reason = reason
        where = f"endpoint {endpoint!r}" + (f", page {page}" if page is not None else "")
        super().__init__(f"MooVitamix API {where}: {reason}")


class ApiPageError(ApiError):
    """A response was not a contract page (not JSON, truncated, missing or mistyped fields)."""


class ApiDriftError(ApiError):
    """The endpoint's ``total`` kept changing: no consistent read was possible."""

    def __init__(self, endpoint: str, page: int, old_total: int, new_total: int, reason: str):
        self.old_total = old_total
        self.new_total = new_total
        super().__init__(endpoint, page, reason)


class ApiUnavailableError(ApiError):
    """The API could not be reached (or did not answer like the MooVitamix API) at all."""


@dataclass(frozen=True, slots=True)
class ApiPage:
    """One decoded page of an endpoint."""

    number: int
    items: list[Any]
    total: int
    pages: int
    # Set when the page decoded in one pass with every item valid (``items`` is then empty):
    # its columns go straight to the frame, with nothing to reject or report.
    conforming: ConformingPage | None = None

    @property
    def item_count(self) -> int:
        """Items on the page."""
        return self.conforming.rows if self.conforming is not None else len(self.items)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def parse_page(endpoint: str, number: int, body: bytes, size: int) -> ApiPage:
    """Decode a response body and check that it is the contract's page object.

    Args:
        endpoint: The endpoint read (for the error message).
        number: The page requested.
        body: The raw response body.
        size: The page size requested.

    Returns:
        The decoded page.

    Raises:
        ApiPageError: If the body is not JSON, is truncated, or is not a page of that number
            and size (missing or mistyped ``items``, ``total``, ``pages``).
    """
    try:
        payload = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ApiPageError(
            endpoint, number, f"body is not valid JSON ({len(body)} bytes, truncated?): {exc}"
        ) from exc
    if not isinstance(payload, dict):
        raise ApiPageError(
            endpoint, number, f"body is a JSON {_json_type(payload)}, not a page object"
        )
    missing = [key for key in ("items", "total", "pages") if key not in payload]
    if missing:
        present = ", ".join(sorted(payload)) or "nothing"
        raise ApiPageError(
            endpoint, number, f"not a page: missing {', '.join(missing)} (body has: {present})"
        )
    items, total, pages = payload["items"], payload["total"], payload["pages"]
    if not isinstance(items, list):
        raise ApiPageError(endpoint, number, f"'items' is a JSON {_json_type(items)}, not an array")
    for key, value in (("total", total), ("pages", pages)):
        if type(value) is not int or value < 0:
            raise ApiPageError(
                endpoint, number, f"{key!r} is {value!r}, not a non-negative integer"
            )
    # A service that ignored our page or size parameters would make us skip or repeat records.
    for key, expected in (("page", number), ("size", size)):
        if key in payload and payload[key] != expected:
            raise ApiPageError(
                endpoint, number, f"answered {key}={payload[key]!r} to a request for {expected}"
            )
    if len(items) > size:
        raise ApiPageError(endpoint, number, f"{len(items)} items on a page of size {size}")
    return ApiPage(number=number, items=items, total=total, pages=pages)


class PageOutcome(Enum):
    """What a page means for the rest of the read."""

    CONTINUE = "continue"
    EMPTY_BEFORE_END = "empty_before_end"
    DRIFT = "drift"


@dataclass(frozen=True, slots=True)
class PagePlan:
    """The page-number paginator's stop conditions, learnt from page 1.

    Reading stops after ``pages`` pages (the service's count), or at an empty page met before
    that (the backstop: the data shrank under us; the completeness check compares rows with
    ``total``). ``max_pages`` caps the plan so a wrong ``total`` cannot send the reader into
    millions of requests. A page whose ``total`` or ``pages`` differs from page 1's means the
    data changed mid-read.
    """

    endpoint: str
    size: int
    total: int
    pages: int

    @classmethod
    def from_first_page(cls, endpoint: str, first: ApiPage, size: int, max_pages: int) -> PagePlan:
        """Check page 1's counts and build the plan.

        Args:
            endpoint: The endpoint read.
            first: Page 1 as decoded.
            size: The page size requested.
            max_pages: The largest number of pages the reader may follow.

        Returns:
            The plan.

        Raises:
            ApiPageError: If ``pages`` is not ceil(total / size), as the contract defines it.
            ApiError: If the endpoint has more pages than ``max_pages``.
        """
        if size < 1 or max_pages < 1:
            raise ValueError("a paginator needs size >= 1 and max_pages >= 1 to stop")
        expected = math.ceil(first.total / size)
        if first.pages != expected:
            raise ApiPageError(
                endpoint,
                first.number,
                f"pages={first.pages} but ceil(total {first.total} / size {size}) = {expected}",
            )
        if first.total == 0 and first.items:
            raise ApiPageError(
                endpoint, first.number, f"total is 0 but the page has {len(first.items)} items"
            )
        if first.pages > max_pages:
            raise ApiError(
                endpoint,
                first.number,
                f"{first.pages} pages (total {first.total}, size {size}) exceed max_pages="
                f"{max_pages}; raise the resource's max_pages if this volume is expected",
            )
        return cls(endpoint=endpoint, size=size, total=first.total, pages=first.pages)

    def classify(self, page: ApiPage) -> PageOutcome:
        """Return what ``page`` means: carry on, stop at an early empty page, or drift."""
        if page.total != self.total or page.pages != self.pages:
            return PageOutcome.DRIFT
        if not page.item_count and page.number <= self.pages:
            return PageOutcome.EMPTY_BEFORE_END
        return PageOutcome.CONTINUE


@dataclass(slots=True)
class PageBatch:
    """One page's items, validated: valid values as columns, reject rows and schema drift.

    ``extra_fields``/``missing_fields`` cover every item; the ``loaded_`` ones only the items
    that validated, i.e. the drift of what is stored (a rejected item is accounted for in the
    rejects, with its reason).
    """

    columns: list[list[object]]
    rejects: list[dict[str, object]]
    extra_fields: set[str]
    missing_fields: set[str]
    loaded_extra_fields: set[str] = field(default_factory=set)
    loaded_missing_fields: set[str] = field(default_factory=set)


def validate_page(endpoint: str, number: int, items: list[Any]) -> PageBatch:
    """Validate every item of a page; a bad item becomes a reject row, never a silent drop.

    Args:
        endpoint: The endpoint the page belongs to.
        number: The page number (recorded on reject rows).
        items: The page's raw items.

    Returns:
        The valid items' values as columns in contract order (as sent: timestamps stay
        strings), the reject rows (``REJECT_COLUMNS``) and the field names seen outside the
        contract or missing from it (in any item, and in valid items).
    """
    names = contract_columns(endpoint)
    batch = PageBatch(
        columns=[[] for _ in names], rejects=[], extra_fields=set(), missing_fields=set()
    )
    for position, item in enumerate(items):
        extra, missing = item_field_drift(endpoint, item)
        if extra:
            batch.extra_fields |= extra
        if missing:
            batch.missing_fields |= missing
        values = validate_values(endpoint, item)
        if isinstance(values, Rejection):
            batch.rejects.append(
                {
                    "endpoint": endpoint,
                    "page": number,
                    "position": position,
                    "record_key": values.record_key,
                    "field": values.field,
                    "reason": values.reason,
                    "record": json.dumps(item, ensure_ascii=False),
                }
            )
        else:
            # The values as sent, like the one-pass path keeps them (validated just above).
            for column, name in zip(batch.columns, names, strict=True):
                column.append(item[name])
            batch.loaded_extra_fields |= extra
            batch.loaded_missing_fields |= missing
    return batch


@dataclass(frozen=True, eq=False)
class EndpointRead:
    """The result of reading one endpoint in full.

    Attributes:
        endpoint: The endpoint read.
        frame: Valid records; the contract's columns in contract order, typed (``Int64``,
            object ``str``, ``datetime64[us, UTC]``, object lists of ints). Empty (zero rows,
            the same columns) after a streamed read, whose frames went on as they came.
        rows: Valid records read.
        rejects: One row per item that could not be typed (``REJECT_COLUMNS``).
        total: The service's ``total`` (of the read that succeeded).
        pages: The service's ``pages``.
        pages_read: Pages whose items were loaded (fewer than ``pages`` after an early
            empty page).
        requests: Page requests made, re-read included (each may have been retried).
        retries: Extra attempts made by the retry policy (5xx, 429, timeouts, resets).
        api_seconds: Wall-clock seconds of the whole read.
        bytes: Response body bytes received.
        extra_fields: Sorted field names seen in items that the contract does not define.
        missing_fields: Sorted contract fields absent from at least one item.
        loaded_extra_fields: ``extra_fields`` of the valid records only: the stored snapshot's
            drift (one rejected record is not a schema change; it is counted in the rejects).
        loaded_missing_fields: ``missing_fields`` of the valid records only.
        page_size: The page size used.
        rereads: 1 if ``total`` changed mid-read and the endpoint was read again, else 0.
        empty_page: The page at which an early empty page stopped the read, if any.
    """

    endpoint: str
    frame: pd.DataFrame
    rejects: pd.DataFrame
    total: int
    pages: int
    pages_read: int
    requests: int
    retries: int
    api_seconds: float
    bytes: int
    extra_fields: list[str]
    missing_fields: list[str]
    page_size: int
    rows: int
    rereads: int = 0
    empty_page: int | None = None
    loaded_extra_fields: list[str] = field(default_factory=list)
    loaded_missing_fields: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain numbers and lists for materialization metadata and logs."""
        return {
            "endpoint": self.endpoint,
            "rows": self.rows,
            "rejected": len(self.rejects),
            "total": self.total,
            "pages": self.pages,
            "pages_read": self.pages_read,
            "requests": self.requests,
            "retries": self.retries,
            "rereads": self.rereads,
            "api_seconds": round(self.api_seconds, 3),
            "bytes": self.bytes,
            "page_size": self.page_size,
            "extra_fields": self.extra_fields,
            "missing_fields": self.missing_fields,
            "empty_page": self.empty_page,
        }


@dataclass(frozen=True, slots=True)
class ApiProbe:
    """Answer of a reachability probe."""

    base_url: str
    endpoint: str
    total: int
    seconds: float


def redact_url(url: str) -> str:
    """Return ``scheme://host[:port]/path`` of a URL: no credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class _Transport:
    """A resource's pooled connections, retry settings and the retry policy made of them."""

    connections: Connections
    settings: RetrySettings
    policy: CountingRetry


def _api_error(endpoint: str, exc: PageFetchError) -> ApiError:
    """The client's error for a page the transport could not fetch."""
    kind = ApiPageError if exc.not_a_page else ApiError
    return kind(endpoint, exc.number, exc.reason)


@contextmanager
def _collector_skips_older_objects() -> Iterator[None]:
    """Keep the garbage collector off the objects that existed before a read, during the read.

    A read allocates hundreds of thousands of short-lived containers, and each time they trigger
    a full collection CPython walks every object of the process (Dagster's definitions, pandas,
    pydantic: about 250,000 in a run worker), on the GIL the fetching threads need: a quarter of
    a second per 300,000 records. ``gc.freeze`` (as forking servers use it) hides them until the
    read ends; the read's own garbage is still collected.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _ReadStats:
    """Counters of one read, updated from the fetching threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.bytes = 0

    def add(self, requests_: int, retries: int, bytes_: int) -> None:
        with self._lock:
            self.requests += requests_
            self.retries += retries
            self.bytes += bytes_


class _TotalDrift(Exception):
    def __init__(self, page: int, old_total: int, new_total: int, old_pages: int, new_pages: int):
        super().__init__(page, old_total, new_total)
        self.page = page
        self.old_total, self.new_total = old_total, new_total
        self.old_pages, self.new_pages = old_pages, new_pages

    def describe(self) -> str:
        return (
            f"total {self.old_total} -> {self.new_total} (pages {self.old_pages} -> "
            f"{self.new_pages}) at page {self.page}"
        )


@dataclass(slots=True)
class _Attempt:
    """What one pass over the pages produced (the valid rows themselves are handed on)."""

    rejects: list[dict[str, object]] = field(default_factory=list)
    plan: PagePlan | None = None
    rows: int = 0
    pages_read: int = 0
    empty_page: int | None = None
    extra_fields: set[str] = field(default_factory=set)
    missing_fields: set[str] = field(default_factory=set)
    loaded_extra_fields: set[str] = field(default_factory=set)
    loaded_missing_fields: set[str] = field(default_factory=set)


class MoovitamixApiResource(dg.ConfigurableResource):
    """Client of the MooVitamix API (resource key ``moovitamix_api``).

    One set of kept-alive connections per resource instance, sized to the page concurrency, with
    urllib3's retries (429 and 5xx with backoff, jitter and ``Retry-After``, connection errors,
    read timeouts and broken bodies). Every request carries a connect and a read timeout.
    The transport (``transport``) is libcurl through pycurl, not requests: see that module.
    """

    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description=f"Base URL of the MooVitamix API (set from {API_URL_ENV_VAR}).",
    )
    page_size: int = Field(
        default=API_MAX_PAGE_SIZE,
        description=f"Records per page, 1 to {API_MAX_PAGE_SIZE} (the contract's cap); the "
        "largest page means the fewest requests.",
    )
    connect_timeout: float = Field(
        default=5.0, description="Seconds to wait for a TCP connection before retrying."
    )
    read_timeout: float = Field(
        default=30.0, description="Seconds to wait for a response before retrying."
    )
    max_retries: int = Field(
        default=5,
        description="Retries per request on connection errors, read timeouts, 429 and 5xx; "
        "the read fails once they are exhausted.",
    )
    backoff_factor: float = Field(
        default=0.5,
        description="Exponential backoff base in seconds (factor * 2**(retry - 1)).",
    )
    backoff_jitter: float = Field(
        default=0.5,
        description="Random seconds (0 to this) added to each backoff, so concurrent "
        "fetchers do not retry in lockstep.",
    )
    backoff_max: float = Field(default=30.0, description="Longest backoff in seconds.")
    retry_after_max: int = Field(
        default=120,
        description="Longest Retry-After (seconds) honoured; longer values are capped.",
    )
    max_concurrency: int = Field(
        default=4,
        description="Pages fetched concurrently after page 1 (also the connection pool size).",
    )
    max_pages: int = Field(
        default=50_000,
        description="Page cap of one read: more pages is an error, never a silent truncation. "
        "50,000 pages of 100 allow 5 million records.",
    )

    _transport: _Transport | None = PrivateAttr(default=None)
    _pool_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # "wrap" validators see the raw value: an EnvVar.int placeholder is recognised there (pydantic
    # hands an "after" validator a plain 0) and checked at setup, once resolved.
    @field_validator("page_size", mode="wrap")
    @classmethod
    def _check_page_size(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> int:
        return _validated_range("page_size", value, handler, 1, API_MAX_PAGE_SIZE)

    @field_validator("max_concurrency", mode="wrap")
    @classmethod
    def _check_concurrency(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> int:
        return _validated_range("max_concurrency", value, handler, 1, 64)

    @field_validator("max_pages", mode="wrap")
    @classmethod
    def _check_max_pages(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> int:
        return _validated_range("max_pages", value, handler, 1, None)

    @field_validator("max_retries", "retry_after_max", mode="wrap")
    @classmethod
    def _check_non_negative_int(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> int:
        return _validated_range(info.field_name or "", value, handler, 0, None)

    @field_validator("connect_timeout", "read_timeout")
    @classmethod
    def _check_timeout(cls, value: float, info: Any) -> float:
        if value <= 0:
            raise ValueError(f"{info.field_name} must be > 0 seconds, got {value}")
        return value

    @field_validator("backoff_factor", "backoff_jitter", "backoff_max")
    @classmethod
    def _check_backoff(cls, value: float, info: Any) -> float:
        if value < 0:
            raise ValueError(f"{info.field_name} must be >= 0 seconds, got {value}")
        return value

    # Lifecycle -----------------------------------------------------------------------------------
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Check the settings and that the API answers, before any step of the run starts.

        Dagster sets resources up before the first step, so a bad ``page_size`` or an unreachable
        or wrong ``MOOVITAMIX_API_URL`` fails the run there, with the setting named, instead of
        in each raw step after its retries (or after other steps already did work).

        Raises:
            ValueError: If a setting is out of range or the base URL is not an http(s) URL.
            ApiUnavailableError: If the base URL does not serve the MooVitamix API.
        """
        self.check_settings()
        self.check_service()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the pooled connections."""
        self.close()

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        with self._pool_lock:
            if self._transport is not None:
                self._transport.connections.clear()
            self._transport = None

    def check_settings(self) -> None:
        """Validate every setting before any request.

        Pydantic validates literal values at construction; values from ``EnvVar`` are only known
        at setup, so they are checked again here.

        Raises:
            ValueError: Naming the setting that is out of range.
        """
        _check_range("page_size", self.page_size, 1, API_MAX_PAGE_SIZE)
        _check_range("max_concurrency", self.max_concurrency, 1, 64)
        _check_range("max_pages", self.max_pages, 1, None)
        _check_range("max_retries", self.max_retries, 0, None)
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"base_url ({API_URL_ENV_VAR}) must be an http(s) URL with a host, got "
                f"{redact_url(self.base_url)!r}"
            )

    def _get_transport(self) -> _Transport:
        """The pooled connections and the retry settings, made once per resource instance.

        Retry objects are immutable (each retry makes a new one): one policy serves every request.
        """
        with self._pool_lock:
            if self._transport is None:
                settings = RetrySettings(
                    max_retries=self.max_retries,
                    backoff_factor=self.backoff_factor,
                    backoff_jitter=self.backoff_jitter,
                    backoff_max=self.backoff_max,
                    retry_after_max=self.retry_after_max,
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                )
                self._transport = _Transport(
                    Connections(self.base_url, self.max_concurrency), settings, settings.policy()
                )
            return self._transport

    def _get(self, path: str, retries: Retry | None = None) -> Answer:
        """GET ``path`` below the base URL with the pool's connections (with the read retry
        policy unless ``retries`` says otherwise); the body is read (and retried) before
        returning."""
        transport = self._get_transport()
        return transport.connections.get(
            path, retries or transport.policy, transport.settings.timeout()
        )

    def _endpoint_path(self, endpoint: str, page: int, size: int) -> str:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown MooVitamix endpoint {endpoint!r} (known: {ENDPOINTS})")
        return page_path(endpoint, page, size)

    # Requests ------------------------------------------------------------------------------------
    def _fetch_body(self, endpoint: str, number: int, stats: _ReadStats) -> FetchedBody:
        """GET one page (with retries) in this process; its body, not yet decoded.

        Raises:
            ApiError: The request failed once retries were exhausted, or answered an error
                status that is not worth retrying (4xx).
            ApiPageError: The body was compressed and does not decompress.
        """
        transport = self._get_transport()
        try:
            fetched = fetch_page_body(
                transport.connections,
                transport.settings,
                transport.policy,
                endpoint,
                number,
                self.page_size,
            )
        except PageFetchError as exc:
            stats.add(1, exc.retries, exc.received)
            raise _api_error(endpoint, exc) from exc
        stats.add(1, fetched.retries, len(fetched.body))
        return fetched

    def _decode_page(self, endpoint: str, number: int, fetched: FetchedBody) -> ApiPage:
        """Decode a page's body, in one pass if it follows the contract exactly.

        Raises:
            ApiPageError: The body is not a contract page.
        """
        body = fetched.body
        conforming = decode_conforming_page(endpoint, body, number, self.page_size)
        if conforming is not None:
            return ApiPage(number, [], conforming.total, conforming.pages, conforming)
        # Something on the page is off: decode it item by item to say what, page and record.
        return parse_page(endpoint, number, body, self.page_size)

    def probe(self, endpoint: str = USERS_ENDPOINT) -> ApiProbe:
        """Check, with one request and no retries, that the API answers like the contract says.

        Use it before any work so a wrong or unreachable ``MOOVITAMIX_API_URL`` fails in a
        second with a clear message instead of after minutes of retries.

        Args:
            endpoint: The endpoint to ask for one record (``?page=1&size=1``).

        Returns:
            The redacted base URL, the endpoint's total and the round-trip seconds.

        Raises:
            ApiUnavailableError: Naming MOOVITAMIX_API_URL, when the API cannot be reached,
                answers an error status, or does not answer a contract page.
            ValueError: If a setting is invalid.
        """
        self.check_settings()
        where = f"{redact_url(self.base_url)} (from {API_URL_ENV_VAR})"
        started = time.perf_counter()
        try:
            # The probe must fail fast: no retries, unlike page reads.
            response = self._get(self._endpoint_path(endpoint, 1, 1), NO_RETRY)
        except HTTPError as exc:
            raise ApiUnavailableError(
                endpoint, None, f"API unreachable at {where}: {describe_http_error(exc)}"
            ) from exc
        if response.status != 200:
            raise ApiUnavailableError(
                endpoint, None, f"API at {where} answered HTTP {response.status}"
            )
        try:
            page = parse_page(endpoint, 1, response.data, 1)
        except ApiPageError as exc:
            raise ApiUnavailableError(
                endpoint, None, f"{where} does not answer like the MooVitamix API: {exc.reason}"
            ) from exc
        return ApiProbe(
            base_url=redact_url(self.base_url),
            endpoint=endpoint,
            total=page.total,
            seconds=time.perf_counter() - started,
        )

    def check_service(self) -> None:
        """Check, without requesting any page, that the base URL serves the MooVitamix API.

        Reads the service's OpenAPI schema (``/openapi.json``, part of the contract) with the
        page reads' retry policy, so a blip is retried like a page would be, and checks that it
        lists the three endpoints. No data endpoint is called: nothing is read before the steps
        run, and the service's page counters and rate limits are left alone.

        Raises:
            ApiUnavailableError: Naming MOOVITAMIX_API_URL, when the API cannot be reached once
                retries are exhausted, answers an error status, or is not the MooVitamix API.
            ValueError: If a setting is invalid.
        """
        self.check_settings()
        where = f"{redact_url(self.base_url)} (from {API_URL_ENV_VAR})"
        try:
            response = self._get(OPENAPI_PATH)
        except HTTPError as exc:
            raise ApiUnavailableError(
                OPENAPI_PATH, None, f"API unreachable at {where}: {describe_http_error(exc)}"
            ) from exc
        if response.status != 200:
            raise ApiUnavailableError(
                OPENAPI_PATH,
                None,
                f"API at {where} answered HTTP {response.status} to /{OPENAPI_PATH}",
            )
        try:
            schema = json.loads(response.data)
        except ValueError:
            schema = None
        paths = schema.get("paths") if isinstance(schema, dict) else None
        listed = paths if isinstance(paths, dict) else {}
        missing = [f"/{e}" for e in ENDPOINTS if f"/{e}" not in listed]
        if missing:
            raise ApiUnavailableError(
                OPENAPI_PATH,
                None,
                f"{where} does not serve the MooVitamix API: its /{OPENAPI_PATH} lists no "
                f"{', '.join(missing)}",
            )

    def check_reachable(self) -> ApiProbe:
        """Alias of ``probe()`` for call sites that read better as a precondition."""
        return self.probe()

    # Reading an endpoint -------------------------------------------------------------------------
    def read_endpoint(self, endpoint: str, log: logging.Logger | None = None) -> EndpointRead:
        """Read every page of an endpoint into a typed frame plus reject rows.

        Page 1 gives ``total`` and ``pages``; pages 2..N are then fetched concurrently
        (``max_concurrency``) and assembled in page order. If ``total`` changes mid-read, the
        service's data moved under us: the endpoint is read again once, from page 1, because
        a mix of two states would duplicate or lose records silently.

        Args:
            endpoint: ``users``, ``tracks`` or ``listen_history``.
            log: Where to log progress (e.g. ``context.log``); the module logger by default.

        Returns:
            The valid records, the rejects and the read's figures.

        Raises:
            ValueError: If the endpoint is unknown or a setting is invalid (before any request).
            ApiError: A request failed after retries, or the page cap was exceeded.
            ApiPageError: A response was not a contract page.
            ApiDriftError: ``total`` changed again during the re-read.
        """
        stream = self.stream_endpoint(endpoint, log, chunk_rows=None)
        while True:
            try:
                frames = list(stream.frames())
                break
            except RestartStream:
                continue  # read again from page 1 (at most once: then ApiDriftError)
        # One frame (chunk_rows=None hands on everything at the end), or none for no rows.
        if len(frames) == 1:
            frame = frames[0]
        else:
            frame = pd.concat(frames, ignore_index=True) if frames else empty_frame(endpoint)
        return stream.result(frame)

    def stream_endpoint(
        self,
        endpoint: str,
        log: logging.Logger | None = None,
        chunk_rows: int | None = STREAM_CHUNK_ROWS,
        timestamps_as_text: bool = False,
    ) -> EndpointStream:
        """Prepare a read of every page of an endpoint that hands on typed frames as it goes.

        Nothing is requested until ``frames()`` is iterated; see ``EndpointStream``.

        Args:
            endpoint: ``users``, ``tracks`` or ``listen_history``.
            log: Where to log progress (e.g. ``context.log``); the module logger by default.
            chunk_rows: Valid rows per frame handed on; None for one frame at the end.
            timestamps_as_text: Hand timestamps on as their validated contract strings, for a
                writer that stores them as ``timestamptz`` (skips parsing them to render them
                back as text for COPY).

        Raises:
            ValueError: If the endpoint is unknown or a setting is invalid.
        """
        contract_columns(endpoint)  # unknown endpoints fail before any request
        self.check_settings()
        return EndpointStream(self, endpoint, log or logger, chunk_rows, timestamps_as_text)

    def _page_feed(self, endpoint: str, stats: _ReadStats) -> PageFeed[FetchedBody, ApiPage]:
        """Pages 1..N of a read of ``endpoint``, fetched ahead of the reader."""
        rest = fetch_in_threads(
            lambda number: self._fetch_body(endpoint, number, stats),
            self.max_concurrency,
            _IN_FLIGHT_PER_CONNECTION * self.max_concurrency,
            name=f"moovitamix-{endpoint}",
        )
        return PageFeed(
            lambda: self._fetch_body(endpoint, 1, stats),
            rest,
            lambda number, fetched: self._decode_page(endpoint, number, fetched),
            # 192 decoded pages (about 10 MB, a third of a second of the service's work) keep
            # the service busy while the reader waits for PostgreSQL or hands over to the next
            # endpoint.
            queued=192,
            max_pages=self.max_pages,
            name=f"moovitamix-{endpoint}",
        )

    def _read_pages(
        self,
        feed: PageFeed[FetchedBody, ApiPage],
        endpoint: str,
        log: logging.Logger,
        attempt: _Attempt,
        chunk_rows: int | None,
        timestamps_as_text: bool = False,
        on_read: Callable[[], None] | None = None,
    ) -> Iterator[pd.DataFrame]:
        """One pass over the feed's pages, yielding typed frames; _TotalDrift if a page disagrees.

        ``on_read`` is called once every page is read and checked, before the last frame is
        handed on. The feed is closed when the pass ends, however it ends.
        """
        with _collector_skips_older_objects():
            try:
                pages = iter(feed)
                first = next(pages)
                plan = PagePlan.from_first_page(endpoint, first, self.page_size, self.max_pages)
                attempt.plan = plan
                log.debug("MooVitamix %s: total %d in %d pages", endpoint, plan.total, plan.pages)
                accumulator = FrameAccumulator(endpoint, timestamps_as_text=timestamps_as_text)
                # With total 0 there are no pages and page 1 is legitimately empty.
                if plan.pages >= 1:
                    for page in itertools.chain([first], pages):
                        if not self._consume(endpoint, plan, page, accumulator, attempt, log):
                            break
                        if chunk_rows is not None and accumulator.rows >= chunk_rows:
                            attempt.rows += accumulator.rows
                            yield accumulator.drain()
                if on_read is not None:
                    on_read()
                if accumulator.rows:
                    attempt.rows += accumulator.rows
                    yield accumulator.drain()
            finally:
                feed.close()  # stops the fetching threads when the read ends early

    def _consume(
        self,
        endpoint: str,
        plan: PagePlan,
        page: ApiPage,
        accumulator: FrameAccumulator,
        attempt: _Attempt,
        log: logging.Logger,
    ) -> bool:
        """Load one page, in page order; False when the read must stop at it."""
        outcome = plan.classify(page)
        if outcome is PageOutcome.DRIFT:
            raise _TotalDrift(page.number, plan.total, page.total, plan.pages, page.pages)
        if outcome is PageOutcome.EMPTY_BEFORE_END:
            attempt.empty_page = page.number
            log.warning(
                "MooVitamix %s: page %d of %d is empty; stopping there (total %d)",
                endpoint,
                page.number,
                plan.pages,
                plan.total,
            )
            return False
        if page.conforming is not None:
            accumulator.extend(page.conforming.columns)
        else:
            batch = validate_page(endpoint, page.number, page.items)
            accumulator.extend(batch.columns)
            attempt.rejects.extend(batch.rejects)
            attempt.extra_fields |= batch.extra_fields
            attempt.missing_fields |= batch.missing_fields
            attempt.loaded_extra_fields |= batch.loaded_extra_fields
            attempt.loaded_missing_fields |= batch.loaded_missing_fields
        attempt.pages_read += 1
        if attempt.pages_read % PROGRESS_EVERY_PAGES == 0:
            log.info(
                "MooVitamix %s: %d/%d pages, %d rows",
                endpoint,
                attempt.pages_read,
                plan.pages,
                attempt.rows + accumulator.rows,
            )
        return True


class EndpointStream:
    """One endpoint's read, handed on as typed frames while its pages arrive.

    ``frames()`` reads every page and yields frames of about ``chunk_rows`` valid rows, in page
    order, so that they can be stored while the next pages are fetched. If ``total`` changes
    mid-read, the service's data moved under us and a mix of two states would duplicate or lose
    records: the first time, ``frames()`` raises ``RestartStream`` (whoever stored frames discards
    them and iterates ``frames()`` again, which reads from page 1); the second time it raises
    ``ApiDriftError``. ``result()`` gives the read's figures and rejects once the frames ran out.
    """

    def __init__(
        self,
        api: MoovitamixApiResource,
        endpoint: str,
        log: logging.Logger,
        chunk_rows: int | None,
        timestamps_as_text: bool = False,
    ) -> None:
        self._api = api
        self._timestamps_as_text = timestamps_as_text
        self.endpoint = endpoint
        self._log = log
        self._chunk_rows = chunk_rows
        self._stats = _ReadStats()
        self._started: float | None = None
        self._drift: _TotalDrift | None = None
        self._attempt: _Attempt | None = None
        self._complete = False
        self._feed: PageFeed[FetchedBody, ApiPage] | None = (
            None  # started ahead of frames(), if at all
        )
        self._following: EndpointStream | None = None

    def start(self) -> None:
        """Start fetching pages now, ahead of ``frames()`` (which then reads them)."""
        if self._feed is None:
            self._feed = self._new_feed()
        self._feed.start()

    def read_ahead(self, following: EndpointStream) -> None:
        """Start ``following`` as soon as this read has read and checked its last page.

        The service then serves the next endpoint's pages while this one's last rows are being
        stored and committed, instead of waiting for the hand-over. A read that fails (a page
        that cannot be fetched, ``total`` drifting) never starts the next one.
        """
        self._following = following

    def close(self) -> None:
        """Stop fetching (pages fetched ahead and not read are dropped)."""
        if self._feed is not None:
            self._feed.close()

    def _new_feed(self) -> PageFeed[FetchedBody, ApiPage]:
        if self._started is None:
            self._started = time.perf_counter()
        return self._api._page_feed(self.endpoint, self._stats)

    def frames(self) -> Iterator[pd.DataFrame]:
        """Read every page from page 1, yielding typed frames (contract columns, in order).

        Raises:
            RestartStream: ``total`` changed during this read; iterate ``frames()`` again.
            ApiDriftError: ``total`` changed again during the re-read.
            ApiError: A request failed after retries, or the page cap was exceeded.
            ApiPageError: A response was not a contract page.
        """
        self._complete = False
        self._attempt = attempt = _Attempt()
        # The feed started ahead serves the first pass; a re-read starts from page 1 anew.
        feed, self._feed = self._feed or self._new_feed(), None
        try:
            yield from self._api._read_pages(
                feed,
                self.endpoint,
                self._log,
                attempt,
                self._chunk_rows,
                self._timestamps_as_text,
                on_read=self._following.start if self._following is not None else None,
            )
        except _TotalDrift as drift:
            if self._drift is not None:
                first = self._drift
                raise ApiDriftError(
                    self.endpoint,
                    drift.page,
                    drift.old_total,
                    drift.new_total,
                    f"total changed during the read ({first.describe()}) and again during the "
                    f"re-read ({drift.describe()}): old total {drift.old_total}, new total "
                    f"{drift.new_total}; the service's data is changing, try again later",
                ) from drift
            self._drift = drift
            self._log.warning(
                "MooVitamix %s changed during the read (%s); reading it again from page 1",
                self.endpoint,
                drift.describe(),
            )
            raise RestartStream(
                f"MooVitamix {self.endpoint} changed during the read ({drift.describe()})"
            ) from drift
        self._complete = True

    def result(self, frame: pd.DataFrame | None = None) -> EndpointRead:
        """The read's figures, once ``frames()`` ran to its end (and logs them).

        Args:
            frame: The frame to carry (``read_endpoint``'s whole read); empty when streamed.

        Raises:
            RuntimeError: ``frames()`` has not been read to its end.
        """
        attempt = self._attempt
        if not self._complete or attempt is None or attempt.plan is None:
            raise RuntimeError(f"the read of {self.endpoint} has not run to its end")
        stats, log = self._stats, self._log
        read = EndpointRead(
            endpoint=self.endpoint,
            frame=empty_frame(self.endpoint) if frame is None else frame,
            rows=attempt.rows,
            rejects=rejects_frame(attempt.rejects),
            total=attempt.plan.total,
            pages=attempt.plan.pages,
            pages_read=attempt.pages_read,
            requests=stats.requests,
            retries=stats.retries,
            api_seconds=time.perf_counter() - (self._started or time.perf_counter()),
            bytes=stats.bytes,
            extra_fields=sorted(attempt.extra_fields),
            missing_fields=sorted(attempt.missing_fields),
            loaded_extra_fields=sorted(attempt.loaded_extra_fields),
            loaded_missing_fields=sorted(attempt.loaded_missing_fields),
            page_size=self._api.page_size,
            rereads=int(self._drift is not None),
            empty_page=attempt.empty_page,
        )
        log.info(
            "MooVitamix %s: %d rows, %d rejected, total %d, %d pages, %d requests, %d retries, "
            "%.1f s",
            self.endpoint,
            read.rows,
            len(read.rejects),
            read.total,
            read.pages_read,
            read.requests,
            read.retries,
            read.api_seconds,
        )
        if read.extra_fields or read.missing_fields:
            log.warning(
                "MooVitamix %s schema drift: fields outside the contract %s, contract fields "
                "missing %s",
                self.endpoint,
                read.extra_fields,
                read.missing_fields,
            )
        return read


def _is_int_env_var(value: object) -> bool:
    """Whether ``value`` is dagster's ``EnvVar.int`` placeholder (an int subclass, not a bool)."""
    return isinstance(value, int) and type(value) is not int and not isinstance(value, bool)


def _validated_range(
    name: str, raw: Any, handler: ValidatorFunctionWrapHandler, low: int, high: int | None
) -> int:
    value = handler(raw)
    if _is_int_env_var(raw):
        return value
    return _check_range(name, value, low, high)


def _check_range(name: str, value: int, low: int, high: int | None) -> int:
    # dagster's EnvVar.int placeholder is an int subclass valued 0 until resolved at setup,
    # where check_settings() validates the real value.
    if _is_int_env_var(value):
        return value
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


__all__ = [
    "API_URL_ENV_VAR",
    "OPENAPI_PATH",
    "REJECT_COLUMNS",
    "ApiDriftError",
    "ApiError",
    "ApiPage",
    "ApiPageError",
    "ApiProbe",
    "ApiUnavailableError",
    "CountingRetry",
    "EndpointRead",
    "EndpointStream",
    "MoovitamixApiResource",
    "PageOutcome",
    "PagePlan",
    "parse_page",
    "redact_url",
    "validate_page",
]
