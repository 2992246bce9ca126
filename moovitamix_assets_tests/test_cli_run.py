"""`make run`'s command, for real: its own embedded PostgreSQL and stand-in, the definitions' jobs
in process, a quiet console, the full log in a file, and nothing left running afterwards."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from moovitamix_assets.cli import PLAIN_PROGRESS_SECONDS, RunConsole
from moovitamix_assets_tests.cli_processes import (
    CLI,
    Descendants,
    cli_env,
    discard_state,
    embedded_postgres_running,
    free_port,
    run_recording,
    wait_recording,
)

E2E = (pytest.mark.e2e, pytest.mark.http, pytest.mark.postgres, pytest.mark.timeout(600))


def e2e(test: Callable) -> Callable:
    """Mark a test that runs the command for real, with its servers."""
    for mark in E2E:
        test = mark(test)
    return test


RECORDS = 300
# The console budget of issue 15: a successful run fits on one screen.
MAX_CONSOLE_LINES = 30
ASSET_STEPS = (
    "core/users",
    "core/tracks",
    "core/listen_events",
    "core/user_track_interactions",
    "ml/evaluation_holdout",
    "ml/candidate_model",
    "ml/production_model",
    "ml/production_model_evaluation",
    "ml/user_recommendations",
)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state folder of its own, so the command starts (and must stop) its own PostgreSQL."""
    state = tmp_path / "state"
    yield state
    discard_state(state)


def run_cli(env: dict[str, str], cwd: Path) -> tuple[int, str, str, Descendants]:
    proc, descendants = run_recording(
        [*CLI, "run", "--records", str(RECORDS)], env, cwd, timeout=540
    )
    return proc.returncode, proc.stdout, proc.stderr, descendants


def log_path_in(text: str) -> Path:
    match = re.search(r"Full log: (\S+\.log)", text)
    assert match, text
    return Path(match.group(1))


@e2e
def test_the_run_command_runs_both_jobs_quietly_and_stops_what_it_started(
    state_dir: Path,
    tmp_path: Path,
    fresh_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Dagster's storage on the test server, so the runs can be read after the command has
    # stopped its own embedded PostgreSQL (which holds the warehouse).
    storage = fresh_database()
    env = cli_env(state_dir, MOOVITAMIX_DAGSTER_STORAGE_URL=storage)
    code, out, err, descendants = run_cli(env, tmp_path)
    assert code == 0, (out, err[-4000:])

    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) <= MAX_CONSOLE_LINES, out
    assert err.strip() == "", err[-4000:]
    assert not any("DEBUG" in line or "dagster - " in line for line in lines), out
    # One line per asset step as it finishes: asset, rows when it has them, seconds.
    for endpoint in ("users", "tracks", "listen_history"):
        assert re.search(rf"^  .*raw/{endpoint}\b.*\s[\d,]+ rows\s+\d+\.\d s$", out, re.M), out
    for asset in ASSET_STEPS:
        assert re.search(rf"^  {asset}\s+(?:[\d,]+ rows?\s+)?\d+\.\d s$", out, re.M), (asset, out)
    # The summary: raw rows and rejects, core, recommendations, the model that serves, the gate.
    for endpoint in ("users", "tracks", "listen_history"):
        assert re.search(
            rf"raw\.{endpoint}\s+{RECORDS} rows\s+api total\s+{RECORDS}\s+rejects 0", out
        )
    assert re.search(r"recommendations: [\d,]+ rows for [\d,]+ users, served by \w+ v\d+", out)
    assert re.search(r"gate on candidate v\d+: lift .*candidate (promoted|refused)", out), out
    assert "Materialized every asset for" in out

    # The full log: Dagster's events with timestamp, level and step.
    log = log_path_in(out)
    assert log.parent == state_dir / "logs"
    text = log.read_text()
    assert re.search(r"^\S+Z DEBUG\s+\S+ daily_refresh raw\w* STEP_START ", text, re.M)
    assert re.search(r"^\S+Z INFO\s+\S+ model_retraining ml__candidate_model ", text, re.M)
    assert text.count("STEP_SUCCESS") >= len(ASSET_STEPS) + 1

    # Nothing left running: the stand-in, and the embedded PostgreSQL it started.
    assert descendants.seen, "the stand-in was never seen"
    assert descendants.alive() == []
    assert not embedded_postgres_running(state_dir)

    # The runs are the definitions' own jobs, recorded like the UI's.
    monkeypatch.setenv("MOOVITAMIX_DAGSTER_STORAGE_URL", storage)
    with dg.DagsterInstance.from_config(str(state_dir / "dagster_home")) as instance:
        recorded = instance.get_runs()
    runs = {run.job_name: run for run in recorded}
    assert len(recorded) == 2 and set(runs) == {"daily_refresh", "model_retraining"}
    assert {run.status for run in runs.values()} == {dg.DagsterRunStatus.SUCCESS}
    assert runs["daily_refresh"].tags["dagster/partition"] in out


@e2e
def test_a_failing_run_names_the_asset_and_the_log_and_exits_non_zero(
    state_dir: Path, tmp_path: Path, fresh_database: Callable[[], str]
) -> None:
    env = cli_env(
        state_dir,
        MOOVITAMIX_API_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        MOOVITAMIX_DATABASE_URL=fresh_database(),
        MOOVITAMIX_DAGSTER_STORAGE_URL=fresh_database(),
    )
    code, out, err, descendants = run_cli(env, tmp_path)
    assert code != 0
    assert re.search(r"daily_refresh failed .*raw/users.*: .*API unreachable", err), err
    log = log_path_in(err)
    assert log.exists()
    assert "RESOURCE_INIT_FAILURE" in log.read_text() or "STEP_FAILURE" in log.read_text()
    assert "model_retraining" not in out
    assert descendants.alive() == []


@e2e
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_an_interrupted_run_stops_what_it_started(
    sig: signal.Signals, state_dir: Path, tmp_path: Path, fresh_database: Callable[[], str]
) -> None:
    console = tmp_path / "console.txt"
    with console.open("w") as out:
        process = subprocess.Popen(
            [*CLI, "run", "--records", str(RECORDS)],
            env=cli_env(state_dir, MOOVITAMIX_DAGSTER_STORAGE_URL=fresh_database()),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    descendants = Descendants(process)
    try:
        deadline = time.monotonic() + 240
        while "daily_refresh for" not in console.read_text():
            descendants.record()
            assert process.poll() is None, console.read_text()
            assert time.monotonic() < deadline, console.read_text()
            time.sleep(0.2)
        descendants.record()
        process.send_signal(sig)
        code = wait_recording(process, descendants, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code != 0, console.read_text()
    assert descendants.alive() == []
    assert not embedded_postgres_running(state_dir)


def test_a_long_step_shows_its_progress_without_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    console = RunConsole("daily_refresh")
    console.status = ("running raw/users, raw/tracks", time.time())
    console.tick()
    assert capsys.readouterr().out == ""  # a pipe gets a line every 30 s at most
    console.status = ("running raw/users, raw/tracks", time.time() - 42)
    console.last_line -= PLAIN_PROGRESS_SECONDS
    console.tick()
    assert capsys.readouterr().out == "  still running raw/users, raw/tracks… 42 s\n"
    console.status = None  # between steps, and during a check step
    console.last_line -= PLAIN_PROGRESS_SECONDS
    console.tick()
    assert capsys.readouterr().out == ""


def test_a_long_step_shows_its_progress_in_place_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    console = RunConsole("model_retraining")
    console.tick()
    assert capsys.readouterr().out == "\r\033[K  starting model_retraining… 0 s"
    console.status = ("running ml/candidate_model", time.time())
    console.tick()
    assert capsys.readouterr().out == "\r\033[K  running ml/candidate_model… 0 s"
