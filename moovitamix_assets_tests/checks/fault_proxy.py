"""A loopback proxy in front of the API stand-in that corrupts pages the way a real API could.

The stand-in's own fault knobs cover errors, rate limits and malformed records; the faults the
checks must catch are added here to the stand-in's real pages: a field the contract does not
define (schema drift), an item silently missing from a page (an incomplete read that the client
cannot notice, since ``total`` is unchanged) and records repeating another record's id.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

UPSTREAM_TIMEOUT_SECONDS = 10.0


@dataclass
class PageFaults:
    """What the proxy changes, per endpoint (the path's last segment)."""

    # endpoint -> fields added to every item of every page
    extra_fields: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    # endpoint -> page numbers whose last item is dropped
    drop_last_item: dict[str, set[int]] = field(default_factory=dict)
    # endpoint -> how many items of every page (the 2nd, 3rd, ...) take the first item's key
    duplicate_ids: dict[str, int] = field(default_factory=dict)


KEY_FIELD = {"listen_history": "user_id"}


def _corrupt(body: dict[str, Any], endpoint: str, page: int, faults: PageFaults) -> dict[str, Any]:
    items = list(body.get("items") or [])
    if page in faults.drop_last_item.get(endpoint, set()) and items:
        items = items[:-1]
    key = KEY_FIELD.get(endpoint, "id")
    for i in range(1, min(faults.duplicate_ids.get(endpoint, 0) + 1, len(items))):
        items[i] = {**items[i], key: items[0][key]}
    extra = faults.extra_fields.get(endpoint)
    if extra:
        items = [{**item, **extra} for item in items]
    return {**body, "items": items}


def _handler(upstream: str, faults: PageFaults) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = upstream.rstrip("/") + self.path
            with urllib.request.urlopen(url, timeout=UPSTREAM_TIMEOUT_SECONDS) as response:
                status, raw = response.status, response.read()
            parts = urlsplit(self.path)
            endpoint = parts.path.rstrip("/").rsplit("/", 1)[-1]
            page = int(parse_qs(parts.query).get("page", ["1"])[0])
            body = json.loads(raw)
            if isinstance(body, dict) and "items" in body:
                raw = json.dumps(_corrupt(body, endpoint, page, faults)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Keep test output quiet."""

    return Handler


@contextmanager
def fault_proxy(upstream: str, faults: PageFaults) -> Iterator[str]:
    """Serve ``upstream`` with ``faults`` on 127.0.0.1; yield the proxy's base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, faults))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
