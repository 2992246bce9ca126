"""`python -m moovitamix_assets.cli run|ui`: the README's one-command demo and the local UI.

Both start what a fresh machine lacks (embedded PostgreSQL, API stand-in) and stop it when they
end; Dagster's home is in the state folder, so the runs of `run` appear in the UI of `ui`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from moovitamix_api.config import DEFAULT_TASTE, TASTE_ENV, TASTES
from moovitamix_assets.alerts import error_headline
from moovitamix_assets.constants import RAW_SCHEMA, SNAPSHOT_DATE_COLUMN
from moovitamix_assets.defs.core.assets import CORE_TABLES
from moovitamix_assets.defs.ingestion.schedule import daily_refresh_job
from moovitamix_assets.defs.recommendation.retraining import RETRAINING_JOB_NAME
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import DATABASE_URL_ENV, PostgresResource, dispose_engines
from moovitamix_assets.warehouse.embedded_postgres import (
    embedded_postgres_of,
    state_dir,
    stop_embedded_postgres,
)

DAGSTER_STORAGE_ENV = "MOOVITAMIX_DAGSTER_STORAGE_URL"
DEFAULT_UI_HOST = "127.0.0.1"
# `make run` calls .venv/bin/python without activating the virtualenv: its commands are not on PATH.
DAGSTER = str(Path(sys.executable).with_name("dagster"))
DG = str(Path(sys.executable).with_name("dg"))
# Without a terminal (CI, `| tee`) the progress of a long step is a line this often at most.
PLAIN_PROGRESS_SECONDS = 30.0
# The daemon's per-tick lines (nothing to do) go to the log file only; runs and errors still show.
TICK_CHATTER = re.compile(
    r"dagster\.daemon\.\w+ - INFO - (Checking for new runs for|Sensor \S+ skipped"
    r"|No run requests returned for|Not checking for any runs since no)"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Runs, event logs and schedules in PostgreSQL (dagster-postgres), beside the warehouse; one model
# retraining at a time, as in deploy/dagster.yaml.
LOCAL_DAGSTER_YAML = f"""\
storage:
  postgres:
    postgres_url:
      env: {DAGSTER_STORAGE_ENV}
concurrency:
  runs:
    tag_concurrency_limits:
      - key: moovitamix/exclusive
        value:
          applyLimitPerUniqueValue: true
        limit: 1
telemetry:
  enabled: false
"""

logger = logging.getLogger(__name__)
EVENTS = logging.getLogger("moovitamix.dagster_events")


def prepare_environment(state: Path) -> dict[str, str]:
    """Start or reuse PostgreSQL; a copy of ``os.environ`` with DAGSTER_HOME and its storage."""
    env = dict(os.environ)
    env.setdefault("MOOVITAMIX_STATE_DIR", str(state))
    # url() starts the embedded server, and creates the database, when either is missing.
    warehouse = PostgresResource(state_dir=str(state))  # $MOOVITAMIX_DATABASE_URL, if set
    if DAGSTER_STORAGE_ENV not in env:
        url = sa.make_url(warehouse.url()).set(database="dagster").render_as_string(False)
        env[DAGSTER_STORAGE_ENV] = PostgresResource(database_url=url, state_dir=str(state)).url()
    if "DAGSTER_HOME" not in env:
        home = state / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text(LOCAL_DAGSTER_YAML)
        env["DAGSTER_HOME"] = str(home)
    return env


@contextmanager
def platform(args: argparse.Namespace, state: Path) -> Iterator[dict[str, str]]:
    """PostgreSQL (stopped on exit unless already running) and the API stand-in (unless
    MOOVITAMIX_API_URL is set) for the duration; the environment that points at them."""
    server = None if DATABASE_URL_ENV in os.environ else embedded_postgres_of(state)
    with ExitStack() as stack:
        if server is not None and not server.is_running():
            stack.callback(stop_embedded_postgres, server)
            stack.callback(dispose_engines)  # pooled connections first: a fast shutdown cuts them
        env = prepare_environment(state)
        if "MOOVITAMIX_API_URL" not in env:
            from moovitamix_api.server import run_subprocess  # the `demo` extra: only when started

            taste = ["--taste", args.taste] if args.taste else []
            command = ["--records", str(args.records), "--seed", str(args.seed), *taste]
            api = stack.enter_context(run_subprocess(command, env=env))
            env["MOOVITAMIX_API_URL"] = api.base_url
            shown = args.taste or env.get(TASTE_ENV) or DEFAULT_TASTE
            print(f"API stand-in ({args.records:,} records per endpoint, taste {shown})", end="")
            print(f" at {api.base_url}")
        yield env


def log_file_path(state: Path, name: str) -> Path:
    (state / "logs").mkdir(parents=True, exist_ok=True)
    return state / "logs" / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"


class RunConsole:
    """One run's event log: every event to the log file, a console line per finished asset step
    and, while one runs, its time (the in-process executor runs one step at a time)."""

    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        self.run_id = str(uuid.uuid4())
        self.assets: dict[str, list[str]] = {}  # step key: the assets it materializes
        self.rows: int | None = None  # the running step's
        self.failure: str | None = None  # "<assets>: <error>" once a step failed
        self.error: str | None = None  # the run's first error, wherever it happened
        self.created, self.last_line = time.time(), time.monotonic()
        self.status: tuple[str, float] | None = (f"starting {job_name}", self.created)

    def label(self, step: str) -> str:
        return ", ".join(self.assets.get(step, ())) or step

    def handle(self, entry: Any) -> None:
        """Log one event log entry to the file; print a line when an asset step ends."""
        event, step = entry.dagster_event, entry.step_key
        data = event.event_specific_data if event else None
        message = entry.user_message or (event.message if event else "") or ""
        if error := getattr(data, "error", None):
            message += "\n" + error.to_string()
            self.error = self.error or error_headline(error)
        kind = event.event_type_value if event else "LOG"
        EVENTS.log(entry.level, "%s %s %s %s", self.job_name, step or "-", kind, message)
        types = dg.DagsterEventType
        if kind == types.ASSET_MATERIALIZATION_PLANNED:
            self.assets.setdefault(step, []).append(data.asset_key.to_user_string())
        elif kind == types.STEP_START:
            self.rows = None
            running = step in self.assets  # a check step shows no progress
            self.status = (f"running {self.label(step)}", entry.timestamp) if running else None
        elif kind == types.ASSET_MATERIALIZATION:
            count = data.materialization.metadata.get("dagster/row_count")
            if count is not None:
                self.rows = (self.rows or 0) + count.value
        elif kind in (types.STEP_SUCCESS, types.STEP_FAILURE):
            self.status = None
            if kind == types.STEP_FAILURE:
                self.failure = f"{self.label(step)}: {error_headline(error)}"
                self.say(f"  FAILED {self.failure}")
            elif step in self.assets:
                rows = "" if self.rows is None else f"{self.rows:,} row{'s' * (self.rows != 1)}"
                self.say(f"  {self.label(step):<44}{rows:>14}{data.duration_ms / 1000:>7.1f} s")

    def tick(self) -> None:
        """Show the running step and its time: in place on a terminal, else every 30 s."""
        if (status := self.status) is None:
            return
        text = f"{status[0]}… {time.time() - status[1]:.0f} s"
        if sys.stdout.isatty():
            print(f"\r\033[K  {text}", end="", flush=True)
        elif time.monotonic() - self.last_line >= PLAIN_PROGRESS_SECONDS:
            self.say(f"  still {text}")

    def say(self, line: str) -> None:
        """Print a console line; on a terminal, over the progress indication."""
        print(("\r\033[K" if sys.stdout.isatty() else "") + line.rstrip(), flush=True)
        self.last_line = time.monotonic()


def run_job(
    job: dg.JobDefinition, instance: dg.DagsterInstance, key: str | None, log_path: Path
) -> bool:
    """Execute ``job`` on the main thread (where Dagster's interrupt handling works), the console
    fed each event as the instance stores it, so it says what the UI will say. On success, the
    checks' tally; on failure, the failing asset (or the job's first), the error and the log."""
    console = RunConsole(job.name)
    print(f"{job.name}{f' for {key}' if key else ''} (run {console.run_id[:8]})")
    instance.add_event_listener(console.run_id, console.handle)
    finished, result = threading.Event(), None

    def show_progress() -> None:
        while not finished.wait(0.25):
            console.tick()

    threading.Thread(target=show_progress, daemon=True).start()
    try:
        result = job.execute_in_process(
            # Dagster's console logger stays silent: the console is this listener's.
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            instance=instance,
            partition_key=key,
            run_id=console.run_id,
            raise_on_error=False,
        )
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        run = instance.get_run_by_id(console.run_id)
        if run is not None and not run.is_finished:
            instance.report_run_canceled(run, message="interrupted in the terminal")
        raise KeyboardInterrupt from None
    except Exception as exc:  # reported with the log path, not as a traceback
        logger.exception("%s could not run", job.name)
        console.error = f"{type(exc).__name__}: {exc}".split("\n")[0]
    finally:
        finished.set()
    if result is not None and result.success:
        checks = [check.passed for check in result.get_asset_check_evaluations()]
        failed = f", {checks.count(False)} failed (non-blocking)" if False in checks else ""
        print(
            f"  {job.name} succeeded in {time.time() - console.created:.1f} s;"
            f" checks: {checks.count(True)} passed{failed}"
        )
        return True
    where = f"at {console.failure}"
    if console.failure is None:  # a resource could not start: name the assets the job starts with
        deps = job.graph.dependency_structure
        roots = [
            n.name for n in job.graph.nodes if not deps.input_to_upstream_outputs_for_node(n.name)
        ]
        first = ", ".join(console.label(r) for r in roots if r in console.assets)
        where = f"before its first step ({first}): {console.error}"
    print(f"{job.name} failed {where}", file=sys.stderr)
    print(f"Full log: {log_path}", file=sys.stderr)
    print(f"Run {console.run_id} is in the UI (`make ui`).", file=sys.stderr)
    return False


def summarize(partition: str, instance: dg.DagsterInstance) -> list[str]:
    """What the platform holds after the run: raw rows and rejects, core tables, recommendations,
    the serving model and the gate's verdict on today's candidate."""
    event = instance.get_latest_materialization_event(dg.AssetKey(["ml", "candidate_model"]))
    candidate = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    core_counts = "".join(f"(SELECT count(*) FROM core.{t}), " for t in CORE_TABLES)
    with PostgresResource().engine().connect() as conn:  # $MOOVITAMIX_DATABASE_URL's, if set
        manifest = conn.execute(
            sa.text(
                f"SELECT '{RAW_SCHEMA}.' || endpoint, rows_valid, api_total, rows_rejected FROM "
                f"{RAW_SCHEMA}.snapshot_manifest WHERE {SNAPSHOT_DATE_COLUMN} = :d ORDER BY 1"
            ),
            {"d": partition},
        ).all()
        *core, served, users, model = conn.execute(
            sa.text(
                f"SELECT {core_counts}count(*), count(DISTINCT user_id), (SELECT model_type"
                " || ' v' || version FROM ml.model_registry WHERE status = 'production')"
                " FROM ml.user_recommendations"
            )
        ).one()
    gate = "gate: no candidate trained (no interactions)"
    if candidate["trained"]:  # the reason ends "candidate promoted" or "candidate refused"
        reason = candidate["gate_reason"].split(" (", 1)[0]  # its figures are in the UI
        gate = f"gate on candidate v{candidate['model_version']}: {reason}"
    return [
        f"Stored for {partition} (UTC):",
        *(f"  {n:<20}{r:>9,} rows  api total {t:>9,}  rejects {x:,}" for n, r, t, x in manifest),
        "  core: " + " · ".join(f"{t} {n:,}" for t, n in zip(CORE_TABLES, core, strict=True)),
        f"  recommendations: {served:,} rows for {users:,} users, served by {model or 'no model'}",
        f"  {gate}",
    ]


def run_command(args: argparse.Namespace, state: Path) -> int:
    """``cli run``: the day's ``daily_refresh``, then ``model_retraining``, then a summary."""
    partition = args.partition or utc_today().isoformat()
    log_path = log_file_path(state, f"run-{partition}")
    # Every log record and warning of this process to the file only, UTC timestamps.
    handler = logging.FileHandler(log_path, encoding="utf-8")
    fmt = "%(asctime)s.%(msecs)03dZ %(levelname)-8s %(name)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt, "%Y-%m-%dT%H:%M:%S"))
    handler.formatter.converter = time.gmtime
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    EVENTS.setLevel(logging.DEBUG)  # Dagster's DEBUG events belong in the full log
    started = time.monotonic()
    with platform(args, state) as env:
        os.environ.update(env)  # the definitions read the variables when imported
        from moovitamix_assets.definitions import defs

        print(f"Full log: {log_path}")
        with dg.DagsterInstance.get() as instance:
            for name, key in ((daily_refresh_job.name, partition), (RETRAINING_JOB_NAME, None)):
                if not run_job(defs.resolve_job_def(name), instance, key, log_path):
                    return 1
            print("\n".join(summarize(partition, instance)))
    print(
        f"Materialized every asset for {partition} in {time.monotonic() - started:.1f} s;"
        " see the runs with `make ui`."
    )
    return 0


def dagster_dev_command(host: str, port: int) -> list[str]:
    """The ``dg dev`` command line of ``ui``: the UI has no login, so loopback unless asked."""
    return [DG, "dev", "-m", "moovitamix_assets.definitions", "-h", host, "-p", str(port)]


def ui_command(args: argparse.Namespace, state: Path) -> int:
    """``cli ui``: ``dg dev`` with the embedded defaults until it ends, Ctrl-C or SIGTERM; all its
    output to the log file, and to the console but for the daemon's per-tick chatter."""
    log_path = log_file_path(state, "ui")
    with platform(args, state) as env:
        dispose_engines()  # this process keeps no connection while the UI runs
        # A session of its own: Ctrl-C in the terminal reaches this process only, which stops
        # the whole group (dg dev, webserver, daemon, code servers) below.
        process = subprocess.Popen(
            dagster_dev_command(args.host, args.port),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )

        def copy_output() -> None:
            with log_path.open("a", encoding="utf-8") as log:
                for line in process.stdout or ():
                    log.write(plain := ANSI.sub("", line))
                    log.flush()
                    if not TICK_CHATTER.search(plain):
                        print(line if sys.stdout.isatty() else plain, end="", flush=True)

        try:
            shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
            print(f"Dagster UI: http://{shown}:{args.port}  (Ctrl-C stops everything)")
            print(f"Full log: {log_path}", flush=True)
            threading.Thread(target=copy_output, daemon=True).start()
            return process.wait() or 1
        except KeyboardInterrupt:
            os.killpg(process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):  # dg dev gets 20 s to stop its children
                process.wait(timeout=20)
            print("Stopped the UI, its daemon and code servers, and what it started.")
            return 0
        finally:
            # Whatever of the group outlived dg dev's own shutdown goes now.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moovitamix_assets.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="refresh one day and retrain the model, then summarize")
    run.add_argument("--partition", default=None, help="UTC day, YYYY-MM-DD (default: today)")
    ui = sub.add_parser("ui", help="start `dg dev` with the same defaults")
    ui.add_argument("--port", type=int, default=3000)
    # The UI has no login: 0.0.0.0 exposes it to the network.
    ui.add_argument("--host", default=DEFAULT_UI_HOST, help="address the UI binds to")
    for p in (run, ui):
        p.add_argument("--records", type=int, default=1000, help="stand-in records per endpoint")
        p.add_argument("--seed", type=int, default=42, help="stand-in seed")
        help_taste = f"stand-in listening (default: ${TASTE_ENV}, else {DEFAULT_TASTE})"
        p.add_argument("--taste", choices=sorted(TASTES), default=None, help=help_taste)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    # Once: a second Ctrl-C must not cut short the stopping of what the command started.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, and Ctrl-C works even when a non-interactive shell started
    # this command with SIGINT ignored: what the command started is stopped either way.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        return (ui_command if args.command == "ui" else run_command)(args, state_dir())
    except KeyboardInterrupt:
        print("\nInterrupted; stopped what this command started.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
