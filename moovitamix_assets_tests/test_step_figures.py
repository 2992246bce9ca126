"""Step figures: CPU, memory and wall time in the metadata, pushed to a Pushgateway when set."""

import base64
from collections.abc import Iterator

import dagster as dg
import psutil
import pytest

from moovitamix_assets.step_figures import (
    PUSHGATEWAY_URL_ENV,
    finish_step_figures,
    push_run_metrics,
    start_step_figures,
)
from moovitamix_assets_tests.defs.monitoring.http_receiver import (
    RecordingHttpServer,
    closed_port_url,
)


@dg.asset(key_prefix="toy")
def busy(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Does a little work and reports its figures."""
    start = start_step_figures()
    total = sum(i * i for i in range(200_000))
    metadata = finish_step_figures(context, {"rows_valid": 42, "label": "text"}, start)
    return dg.MaterializeResult(metadata={**metadata, "checksum": total % 1000})


@dg.asset
def big(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Holds 64 MiB while it reports its figures."""
    start = start_step_figures()
    block = bytearray(64 * 1024 * 1024)
    for offset in range(0, len(block), 4096):  # touched pages count towards RSS
        block[offset] = 1
    metadata = finish_step_figures(context, {}, start)
    current_rss_mb = psutil.Process().memory_info().rss / (1024 * 1024)
    return dg.MaterializeResult(metadata={**metadata, "current_rss_mb": current_rss_mb})


@pytest.fixture
def gateway() -> Iterator[RecordingHttpServer]:
    with RecordingHttpServer() as server:
        yield server


def figures_of(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (event,) = result.get_asset_materialization_events()
    materialization = event.step_materialization_data.materialization
    return {k: v.value for k, v in materialization.metadata.items()}


def test_figures_are_recorded_and_pushed(
    gateway: RecordingHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PUSHGATEWAY_URL_ENV, gateway.url)
    result = dg.materialize([busy])

    figures = figures_of(result)
    assert figures["rows_valid"] == 42 and figures["label"] == "text"
    assert isinstance(figures["cpu_s"], float) and figures["cpu_s"] >= 0
    assert figures["peak_rss_mb"] > 10  # a Python process with Dagster loaded
    assert figures["step_s"] >= 0
    (push,) = gateway.requests
    assert push.method == "PUT"
    assert push.path == "/metrics/job/__ephemeral_asset_job__/asset@base64/dG95L2J1c3k="
    assert push.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE moovitamix_rows_valid gauge\nmoovitamix_rows_valid 42.0\n" in push.text
    assert "moovitamix_cpu_s " in push.text and "moovitamix_peak_rss_mb " in push.text
    assert "label" not in push.text  # only numbers are pushed


def test_peak_memory_is_the_high_water_mark_in_mib() -> None:
    figures = figures_of(dg.materialize([big]))
    # The high-water mark covers the live 64 MiB block (and proves the unit conversion).
    assert figures["peak_rss_mb"] >= figures["current_rss_mb"] - 1 >= 64


def test_push_sends_finite_numbers_in_the_exposition_format(
    gateway: RecordingHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PUSHGATEWAY_URL_ENV, gateway.url)
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(1000),
        "cpu_s": 1.25,
        "preview": dg.MetadataValue.md("| a |"),
        "ok": True,
        "ratio": float("nan"),
    }

    assert push_run_metrics("daily", "raw/users", metadata)

    (request,) = gateway.requests
    encoded = base64.urlsafe_b64encode(b"raw/users").decode()
    assert request.path == f"/metrics/job/daily/asset@base64/{encoded}"
    assert request.text == (
        "# TYPE moovitamix_cpu_s gauge\n"
        "moovitamix_cpu_s 1.25\n"
        "# TYPE moovitamix_dagster_row_count gauge\n"
        "moovitamix_dagster_row_count 1000.0\n"
    )


def test_nothing_is_pushed_by_default(
    gateway: RecordingHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PUSHGATEWAY_URL_ENV, raising=False)
    figures = figures_of(dg.materialize([busy]))
    assert "cpu_s" in figures
    assert gateway.requests == []


def test_a_dead_gateway_never_fails_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    with RecordingHttpServer(status=503) as broken:
        monkeypatch.setenv(PUSHGATEWAY_URL_ENV, broken.url)
        result = dg.materialize([busy])
        assert result.success and len(broken.requests) == 1

    monkeypatch.setenv(PUSHGATEWAY_URL_ENV, closed_port_url())
    assert push_run_metrics("daily", "raw/users", {"cpu_s": 1.0}) is False
