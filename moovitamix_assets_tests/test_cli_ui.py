"""`make ui`'s command, for real: `dg dev` with its own embedded PostgreSQL and stand-in, a console
without per-tick sensor lines, and nothing left running after Ctrl-C (SIGINT) or SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from moovitamix_assets_tests.cli_processes import (
    CLI,
    Descendants,
    cli_env,
    discard_state,
    embedded_postgres_running,
    free_port,
    wait_recording,
)

pytestmark = [pytest.mark.e2e, pytest.mark.http, pytest.mark.postgres, pytest.mark.timeout(600)]

STARTUP_TIMEOUT_S = 240
# cli.py gives `dg dev` 20 s to stop its children before it kills the group, then stops the
# stand-in and PostgreSQL.
EXIT_BOUND_S = 60
TICK_LINE = "Checking for new runs for sensor"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    discard_state(state)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for(condition, what: str, process: subprocess.Popen[str], descendants: Descendants):
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not condition():
        descendants.record()
        assert process.poll() is None, f"cli ui exited early ({process.returncode})"
        assert time.monotonic() < deadline, f"no {what} within {STARTUP_TIMEOUT_S} s"
        time.sleep(1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_the_ui_command_is_quiet_and_stops_everything_on_a_signal(
    sig: signal.Signals, state_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    console = tmp_path / "console.txt"
    with console.open("w") as out:
        process = subprocess.Popen(
            [*CLI, "ui", "--port", str(port), "--records", "200"],
            env=cli_env(state_dir),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    descendants = Descendants(process)
    try:
        wait_for(
            lambda: answers(f"http://127.0.0.1:{port}/server_info"), "UI", process, descendants
        )
        # The sensors' first ticks: in the log file, not on the console.
        logs = state_dir / "logs"
        wait_for(
            lambda: any(TICK_LINE in p.read_text() for p in logs.glob("ui-*.log")),
            "sensor tick",
            process,
            descendants,
        )
        descendants.record()
        assert embedded_postgres_running(state_dir)
        started = time.monotonic()
        process.send_signal(sig)
        code = wait_recording(process, descendants, timeout=EXIT_BOUND_S)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    text = console.read_text()
    assert code == 0, text[-4000:]
    assert elapsed < EXIT_BOUND_S
    assert descendants.alive() == []
    commands = " | ".join(descendants.commands.values())
    for started_by_it in ("dg dev", "dagster_webserver", "dagster._daemon", "moovitamix_api"):
        assert started_by_it in commands, commands
    assert not embedded_postgres_running(state_dir)
    assert f"http://127.0.0.1:{port}" in text
    assert "Full log: " in text
    assert TICK_LINE not in text and " skipped" not in text, text
    assert "Serving dagster-webserver" in text
