"""The step-figures helper: CPU, memory and wall time in the metadata, pushed when configured."""

from collections.abc import Iterator

import dagster as dg
import pytest

from moovitamix_assets.run_metrics import PUSHGATEWAY_URL_ENV
from moovitamix_assets.step_figures import finish_step_figures, start_step_figures
from moovitamix_assets_tests.defs.monitoring.http_receiver import RecordingHttpServer


@dg.asset(key_prefix="toy")
def busy(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Does a little work and reports its figures."""
    start = start_step_figures()
    total = sum(i * i for i in range(200_000))
    metadata = finish_step_figures(context, {"rows_valid": 42, "label": "text"}, start)
    return dg.MaterializeResult(metadata={**metadata, "checksum": total % 1000})


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
    assert isinstance(figures["cpu_seconds"], float) and figures["cpu_seconds"] >= 0
    assert figures["peak_rss_mb"] > 10  # a Python process with Dagster loaded
    assert figures["step_seconds"] >= 0
    (push,) = gateway.requests
    assert push.method == "PUT"
    assert push.path == "/metrics/job/__ephemeral_asset_job__/asset@base64/dG95L2J1c3k="
    assert "moovitamix_rows_valid 42.0" in push.text
    assert "moovitamix_cpu_seconds " in push.text and "moovitamix_peak_rss_mb " in push.text
    assert "label" not in push.text  # only numbers are pushed


def test_nothing_is_pushed_by_default(
    gateway: RecordingHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PUSHGATEWAY_URL_ENV, raising=False)
    figures = figures_of(dg.materialize([busy]))
    assert "cpu_seconds" in figures
    assert gateway.requests == []


def test_a_dead_gateway_never_fails_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    with RecordingHttpServer(status=503) as broken:
        monkeypatch.setenv(PUSHGATEWAY_URL_ENV, broken.url)
        result = dg.materialize([busy])
        assert result.success and len(broken.requests) == 1
