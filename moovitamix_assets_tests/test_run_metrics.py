"""Run figures and the optional Pushgateway push, against a real HTTP receiver on loopback."""

import base64
from collections.abc import Iterator

import psutil
import pytest
from dagster import MetadataValue

from moovitamix_assets.run_metrics import (
    PUSHGATEWAY_URL_ENV,
    RunFigures,
    format_exposition,
    metric_name,
    numeric_metadata,
    push_run_metrics,
    pushgateway_path,
    sample_run_figures,
)
from moovitamix_assets_tests.defs.monitoring.http_receiver import (
    RecordingHttpServer,
    closed_port_url,
)


@pytest.fixture
def receiver() -> Iterator[RecordingHttpServer]:
    with RecordingHttpServer() as server:
        yield server


def test_figures_report_cpu_and_the_memory_high_water_mark() -> None:
    start = sample_run_figures()
    block = bytearray(64 * 1024 * 1024)  # touched pages count towards RSS
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    sum(i * i for i in range(200_000))
    figures = sample_run_figures().since(start)
    current_rss_mb = psutil.Process().memory_info().rss / (1024 * 1024)

    assert figures.cpu_seconds >= 0
    # The high-water mark covers the live 64 MiB block (and proves the unit conversion).
    assert figures.peak_rss_mb >= current_rss_mb - 1 >= 64
    del block
    metadata = figures.as_metadata()
    assert set(metadata) == {"cpu_seconds", "peak_rss_mb"}
    assert all(isinstance(value, float) for value in metadata.values())


def test_since_never_goes_negative() -> None:
    assert RunFigures(1.0, 10.0).since(RunFigures(2.0, 5.0)) == RunFigures(0.0, 10.0)


def test_numeric_metadata_keeps_finite_numbers_only() -> None:
    metadata = {
        "dagster/row_count": MetadataValue.int(1000),
        "cpu_seconds": 1.5,
        "preview": MetadataValue.md("| a |"),
        "ok": True,
        "ratio": float("nan"),
    }
    assert numeric_metadata(metadata) == {"dagster/row_count": 1000.0, "cpu_seconds": 1.5}
    assert metric_name("dagster/row_count") == "moovitamix_dagster_row_count"


def test_exposition_text_format() -> None:
    text = format_exposition({"moovitamix_b": 2.0, "moovitamix_a": 0.5}, {"env": 'p"1'})
    assert text == (
        "# TYPE moovitamix_a gauge\n"
        'moovitamix_a{env="p\\"1"} 0.5\n'
        "# TYPE moovitamix_b gauge\n"
        'moovitamix_b{env="p\\"1"} 2.0\n'
    )


def test_grouping_values_with_slashes_use_base64() -> None:
    encoded = base64.urlsafe_b64encode(b"core/users").decode()
    assert pushgateway_path("daily", {"asset": "core/users"}) == (
        f"/metrics/job/daily/asset@base64/{encoded}"
    )


def test_push_puts_the_exposition_text(
    receiver: RecordingHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PUSHGATEWAY_URL_ENV, receiver.url)
    metadata = {"dagster/row_count": MetadataValue.int(1000), "cpu_seconds": 1.25, "x": "text"}

    assert push_run_metrics("daily_refresh", metadata, {"asset": "raw/users"}) is True

    (request,) = receiver.requests
    assert request.method == "PUT"
    encoded = base64.urlsafe_b64encode(b"raw/users").decode()
    assert request.path == f"/metrics/job/daily_refresh/asset@base64/{encoded}"
    assert request.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert request.text == (
        "# TYPE moovitamix_cpu_seconds gauge\n"
        "moovitamix_cpu_seconds 1.25\n"
        "# TYPE moovitamix_dagster_row_count gauge\n"
        "moovitamix_dagster_row_count 1000.0\n"
    )


def test_nothing_is_sent_when_unset(
    receiver: RecordingHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PUSHGATEWAY_URL_ENV, raising=False)

    assert push_run_metrics("daily_refresh", {"cpu_seconds": 1.0}) is False
    assert receiver.requests == []


def test_a_dead_gateway_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PUSHGATEWAY_URL_ENV, closed_port_url())
    assert push_run_metrics("daily_refresh", {"cpu_seconds": 1.0}, timeout_seconds=2) is False
