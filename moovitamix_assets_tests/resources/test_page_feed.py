"""PageFeed: ordered, bounded fetching ahead of the reader (a pure unit: pages are made up)."""

import threading
import time
from dataclasses import dataclass

import pytest

from moovitamix_assets.resources.page_feed import PageFeed, fetch_in_threads


@dataclass(frozen=True)
class FakePage:
    number: int
    pages: int
    decoded_in: str


class Source:
    """Pages 1..pages of made-up content; fetches are counted and may be slowed or fail."""

    def __init__(self, pages: int, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.pages = pages
        self.fail_at = fail_at
        self.delay = delay
        self.fetched: list[int] = []
        self.fetch_threads: set[str] = set()
        self._lock = threading.Lock()

    def fetch(self, number: int) -> int:
        # Later pages answer first (reversed delays): the feed must still hand them out in order.
        time.sleep(self.delay * (1 + (self.pages - number) % 3))
        with self._lock:
            self.fetched.append(number)
            self.fetch_threads.add(threading.current_thread().name)
        if number == self.fail_at:
            raise RuntimeError(f"page {number} failed")
        return number

    def decode(self, number: int, fetched: int) -> FakePage:
        assert fetched == number
        return FakePage(number, self.pages, threading.current_thread().name)


def feed(
    source: Source, concurrency: int = 3, in_flight: int = 6, **settings: object
) -> PageFeed[int, FakePage]:
    options: dict = {"queued": 4, "max_pages": 1000, "name": "feed-under-test"}
    options.update(settings)
    rest = fetch_in_threads(source.fetch, concurrency, in_flight, name="fetcher")
    return PageFeed(lambda: source.fetch(1), rest, source.decode, **options)


def test_pages_come_in_order_decoded_by_the_feed_thread_not_the_fetchers() -> None:
    source = Source(pages=25, delay=0.001)
    pages = list(feed(source))
    assert [p.number for p in pages] == list(range(1, 26))
    assert sorted(source.fetched) == list(range(1, 26))  # each page fetched exactly once
    assert {p.decoded_in for p in pages} == {"feed-under-test"}
    # Pages 2..N were fetched by the pool's threads, so a response never waits for a decode.
    assert len({t for t in source.fetch_threads if t.startswith("fetcher")}) > 1


def test_page_one_says_how_many_pages_follow_capped_by_max_pages() -> None:
    source = Source(pages=50)
    assert [p.number for p in feed(source, max_pages=7)] == list(range(1, 8))
    assert max(source.fetched) == 7


def test_a_failed_fetch_is_raised_at_its_turn_after_the_pages_before_it() -> None:
    source = Source(pages=20, fail_at=9, delay=0.001)
    received = []
    with pytest.raises(RuntimeError, match="page 9 failed"):
        for page in feed(source):
            received.append(page.number)
    assert received == list(range(1, 9))


def test_fetching_stays_bounded_when_the_reader_stops_reading() -> None:
    source = Source(pages=10_000)
    pages = feed(source, in_flight=6, queued=4)
    taken = [page.number for _, page in zip(range(3), pages, strict=False)]
    time.sleep(0.2)  # give the fetchers every chance to run ahead
    ahead = len(source.fetched)
    pages.close()
    assert taken == [1, 2, 3]
    # At most the 3 taken, 4 queued, 1 held by the feed thread and 6 in flight.
    assert ahead <= 3 + 4 + 1 + 6
    settled = len(source.fetched)
    time.sleep(0.1)
    assert len(source.fetched) == settled  # closed: nothing more is fetched


def test_start_fetches_before_the_reader_asks() -> None:
    source = Source(pages=5)
    pages = feed(source, queued=10)
    assert not pages.started and source.fetched == []
    pages.start()
    deadline = time.monotonic() + 5
    while len(source.fetched) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(source.fetched) == [1, 2, 3, 4, 5]  # every page is in before anyone reads
    assert [p.number for p in pages] == [1, 2, 3, 4, 5]
