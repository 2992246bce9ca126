"""Pages of one paginated read, fetched ahead in a background thread and handed out in order.

The service's work per page is the pace of a read. The reader, though, stops now and then:
while it builds and hands on a frame, while PostgreSQL deletes the partition it replaces, while
the previous endpoint's write commits. A feed keeps fetching through those pauses (up to a
bounded number of pages ahead), and can start before its reader asks for the first page, so the
next endpoint's pages arrive while the previous endpoint is still being stored.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final, Generic, Protocol, TypeVar


class Page(Protocol):
    """What a feed needs to know of page 1: how many pages there are."""

    @property
    def pages(self) -> int: ...


P = TypeVar("P", bound=Page)
R = TypeVar("R")

_END: Final = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def fetch_in_threads(
    fetch: Callable[[int], R], concurrency: int, in_flight: int, name: str
) -> Callable[[int], Iterator[R]]:
    """Pages 2..last fetched by ``concurrency`` threads of this process, yielded in page order.

    At most ``in_flight`` pages are being fetched at once; a failed fetch is raised at its turn.
    Closing the iterator stops the fetching.
    """

    def rest(last: int) -> Iterator[R]:
        if last < 2:
            return
        pool = ThreadPoolExecutor(max_workers=min(concurrency, last - 1), thread_name_prefix=name)
        pending: dict[int, Future[R]] = {}
        next_page = 2
        try:
            for number in range(2, last + 1):
                while next_page <= last and len(pending) < in_flight:
                    pending[next_page] = pool.submit(fetch, next_page)
                    next_page += 1
                yield pending.pop(number).result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return rest


class PageFeed(Generic[R, P]):
    """Pages 1..N fetched ahead of the reader, decoded in order by the feed's thread.

    ``first`` fetches page 1, whose ``pages`` (capped at ``max_pages``: the reader refuses more)
    says how many follow; ``rest(last)`` yields pages 2..last as fetched, in page order (e.g.
    ``fetch_in_threads``). Decoding happens in the
    feed's thread, in page order, not where pages are fetched, so that a response never waits
    for a decode before the next request goes out. At most ``queued`` decoded pages wait for
    the reader, so memory stays bounded however long the read. A failed fetch or decode is
    raised to the reader at that page's turn, after the pages before it. ``close()`` stops the
    fetching (the reader stopping early, a failure elsewhere).
    """

    def __init__(
        self,
        first: Callable[[], R],
        rest: Callable[[int], Iterator[R]],
        decode: Callable[[int, R], P],
        *,
        queued: int,
        max_pages: int,
        name: str,
    ) -> None:
        """
        Args:
            first: Fetches page 1.
            rest: Yields pages 2..last (its argument), fetched, in page order.
            decode: Turns a fetched page (its number and what was fetched) into a page.
            queued: Pages decoded but not yet taken by the reader, at most.
            max_pages: Never fetch beyond this page, whatever page 1 says.
            name: Name of the feed's thread.
        """
        if queued < 1:
            raise ValueError("a feed needs queued >= 1")
        self._first = first
        self._rest = rest
        self._decode = decode
        self._max_pages = max_pages
        self._name = name
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queued)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        """Whether fetching has begun."""
        return self._thread is not None

    def start(self) -> None:
        """Begin fetching in the background (reading the feed starts it too)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def __iter__(self) -> Iterator[P]:
        """Yield pages 1..N in order; raise a fetch's error at its page's turn."""
        self.start()
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop fetching and wait for the feed's thread (pages not taken are dropped)."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join()
        # Drop what is left so that nothing holds the pages.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def _put(self, item: object) -> bool:
        """Queue an item for the reader; False once the feed is closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            first = self._decode(1, self._first())
            if not self._put(first):
                return
            rest = self._rest(min(first.pages, self._max_pages))
            try:
                for number, fetched in enumerate(rest, start=2):
                    if not self._put(self._decode(number, fetched)):
                        return
            finally:
                close = getattr(rest, "close", None)
                if close is not None:
                    close()  # stops the fetching threads or process
            self._put(_END)
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(_Failure(exc))
