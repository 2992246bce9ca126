"""`python -m moovitamix_assets.cli run|ui`: the README's one-command demo and the local UI.

Both start what is missing on a fresh machine, with embedded defaults: a real PostgreSQL from pip
(unless MOOVITAMIX_DATABASE_URL is set) holding both the warehouse and Dagster's own instance, and
the bundled API stand-in (unless MOOVITAMIX_API_URL is set). Dagster's home lives in the project's
state folder, so the runs made by `run` show up in the UI started by `ui`; both stop what they
started (the stand-in, the embedded PostgreSQL unless it was already running) when they end.

`run` executes the definitions' own jobs in this process, `daily_refresh` for the day and then
`model_retraining`, against that instance: the runs appear on the UI's timeline under their job
names. The console gets one line per step; Dagster's full event log goes to a file.
`ui` runs `dg dev` in its own session, keeps the sensors' per-tick lines out of the console (they
stay in the log file) and stops the whole process group on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

import dagster as dg
import sqlalchemy as sa

# The stand-in's settings are plain dataclasses; its server (the `demo` extra) is imported only
# when it is started.
from moovitamix_api.config import DEFAULT_TASTE, TASTE_ENV, TASTES
from moovitamix_assets.constants import ENDPOINTS, RAW_SCHEMA, SNAPSHOT_DATE_COLUMN
from moovitamix_assets.defs.ingestion.schedule import daily_refresh_job
from moovitamix_assets.defs.recommendation.retraining import RETRAINING_JOB_NAME
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import (
    DATABASE_URL_ENV,
    PostgresResource,
    dispose_engines,
    quote_ident,
)
from moovitamix_assets.warehouse.embedded_postgres import (
    embedded_postgres_of,
    stop_embedded_postgres,
)
from moovitamix_assets.warehouse.embedded_postgres import state_dir as resolve_state_dir

DAGSTER_STORAGE_ENV = "MOOVITAMIX_DAGSTER_STORAGE_URL"
DEFAULT_UI_HOST = "127.0.0.1"
# The dagster and dg commands of this interpreter's environment: `make run` calls .venv/bin/python
# without activating the virtualenv, so neither is on PATH.
DAGSTER = str(Path(sys.executable).with_name("dagster"))
DG = str(Path(sys.executable).with_name("dg"))

LOGS_DIRNAME: Final = "logs"
# Dagster's console logger stays silent; every event still reaches the instance's event log,
# which this command reads and writes to the log file.
QUIET_RUN_CONFIG: Final = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
CLI_TAG: Final = "moovitamix/launched_by"
POLL_SECONDS: Final = 0.25
# Without a terminal (CI, `| tee`), a long step reports itself at most this often.
PLAIN_PROGRESS_SECONDS: Final = 30.0
# Metadata keys that hold a step's row count, in order of preference.
ROW_COUNT_KEYS: Final = ("dagster/row_count", "rows", "row_count", "rows_valid")
# After SIGINT/SIGTERM is forwarded, `dg dev` gets this long to stop its children itself.
UI_STOP_GRACE_SECONDS: Final = 20.0
# The daemon's per-tick INFO lines (a sensor or schedule evaluated, nothing to do): log file
# only. What a tick does (a run requested, an error) still reaches the console.
_DAEMON_INFO_RE: Final = re.compile(r"dagster\.daemon\.\w+ - INFO - ")
_TICK_LINE_RE: Final = re.compile(
    r"Checking for new runs for"
    r"|Sensor \S+ skipped"
    r"|No run requests returned for"
    r"|Not checking for any runs since no"
)
_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;]*m")

LOCAL_DAGSTER_YAML = f"""\
# Written by `python -m moovitamix_assets.cli`: Dagster's runs, event logs and schedules live in
# PostgreSQL (dagster-postgres), the same server as the warehouse, in a database of their own.
storage:
  postgres:
    postgres_url:
      env: {DAGSTER_STORAGE_ENV}
# One model retraining at a time (the job's moovitamix/exclusive tag), as in deploy/dagster.yaml.
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


def prepare_environment(state_dir: Path) -> dict[str, str]:
    """Start or reuse PostgreSQL and Dagster's home; return the environment for Dagster processes.

    Args:
        state_dir: The project's state folder.

    Returns:
        A copy of ``os.environ`` with ``DAGSTER_HOME`` and the storage URL set.
    """
    env = dict(os.environ)
    env.setdefault("MOOVITAMIX_STATE_DIR", str(state_dir))
    warehouse = PostgresResource(
        database_url=os.environ.get(DATABASE_URL_ENV), state_dir=str(state_dir)
    )
    if DAGSTER_STORAGE_ENV not in env:
        storage = PostgresResource(
            database_url=str(
                sa.make_url(warehouse.url()).set(database="dagster").render_as_string(False)
            ),
            state_dir=str(state_dir),
        )
        env[DAGSTER_STORAGE_ENV] = storage.url()  # creates the database when missing
    if "DAGSTER_HOME" not in env:
        home = state_dir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text(LOCAL_DAGSTER_YAML)
        env["DAGSTER_HOME"] = str(home)
    return env


@contextmanager
def embedded_postgres_owned(state_dir: Path) -> Iterator[None]:
    """Stop the embedded PostgreSQL on exit if this command is the one that started it.

    A server that was already running (a `make ui` in another terminal, an earlier command)
    is left alone; with MOOVITAMIX_DATABASE_URL set no embedded server is involved.
    """
    if DATABASE_URL_ENV in os.environ:
        yield
        return
    server = embedded_postgres_of(state_dir)
    was_running = server.is_running()
    try:
        yield
    finally:
        if not was_running:
            dispose_engines()  # pooled connections would only be cut by the fast shutdown
            stop_embedded_postgres(server)


@contextmanager
def api_stand_in(
    env: dict[str, str], records: int, seed: int, taste: str | None = None
) -> Iterator[None]:
    """Run the bundled API stand-in for the duration, unless MOOVITAMIX_API_URL points elsewhere.

    The stand-in inherits ``env``, so its own variables (``MOOVITAMIX_STANDIN_TASTE``,
    ``MOOVITAMIX_STANDIN_DAY``) configure it; ``taste``, when given, overrides the first.
    """
    if "MOOVITAMIX_API_URL" in env:
        yield
        return
    from moovitamix_api.server import run_subprocess

    args = ["--records", str(records), "--seed", str(seed)]
    if taste is not None:
        args += ["--taste", taste]
    with run_subprocess(args, env=env) as api:
        env["MOOVITAMIX_API_URL"] = api.base_url
        shown = taste or env.get(TASTE_ENV) or DEFAULT_TASTE
        print(f"API stand-in ({records:,} records per endpoint, taste {shown}) at {api.base_url}")
        yield


# --- run: the jobs in this process, one console line per step --------------------------------


def log_file_path(state_dir: Path, kind: str, partition: str | None = None) -> Path:
    """``<state dir>/logs/<kind>[-<partition>]-<UTC time>.log``, its folder created."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = "-".join(p for p in (kind, partition, stamp) if p)
    folder = state_dir / LOGS_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.log"


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return super().formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"


@contextmanager
def logging_to_file(path: Path) -> Iterator[None]:
    """Send every Python log record and warning of this process to ``path`` only, for the duration.

    Dagster's events are written here too by :class:`StepConsole`, with their own timestamps.
    """
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)-8s %(name)s %(message)s"))
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        root.handlers[:], level = saved
        root.setLevel(level)
        handler.close()


@dataclass
class StepFigures:
    """What the console says about one step of a run."""

    key: str
    assets: list[str] = field(default_factory=list)
    rows: int | None = None
    started: float | None = None
    seconds: float | None = None
    error: str | None = None
    checks_passed: int = 0
    checks_failed: int = 0
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunOutcome:
    """A finished run of one job, as the console saw it."""

    job_name: str
    run_id: str
    success: bool
    seconds: float
    steps: dict[str, StepFigures]
    first_assets: list[str]
    error: str | None = None

    @property
    def failed_step(self) -> StepFigures | None:
        return next((s for s in self.steps.values() if s.error), None)

    def metadata(self, asset: str) -> dict[str, Any]:
        """The materialization metadata of ``asset`` (e.g. ``ml/production_model``) in this run."""
        for step in self.steps.values():
            if asset in step.metadata:
                return step.metadata[asset]
        return {}


def _row_count(metadata: dict[str, Any]) -> int | None:
    for key in ROW_COUNT_KEYS:
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def _error_of(event: Any) -> Any | None:
    """The error (``SerializableErrorInfo``) an event carries: step, resource or run failures."""
    return getattr(event.event_specific_data, "error", None) if event is not None else None


def error_headline(error: Any) -> str:
    """The first line of the first error in the chain that is not one of Dagster's wrappers.

    Dagster wraps what an asset raised ("Error occurred while executing op ...",
    "Error executing resource_fn ..."); the user wants the cause, not the envelope.
    """
    chosen = error
    while chosen is not None:
        if not chosen.cls_name.startswith("Dagster"):
            return _first_line(chosen.message)
        chosen = chosen.cause or chosen.context
    return _first_line(error.message)


class StepConsole:
    """Turns a run's event log into console lines (one per asset step) and log-file records."""

    def __init__(self, job_name: str, out: IO[str]) -> None:
        self.out = out
        self.tty = out.isatty()
        self.steps: dict[str, StepFigures] = {}
        self.events = logging.getLogger("moovitamix.dagster_events")
        self.events.setLevel(logging.DEBUG)
        self._job_name = job_name
        self._progress_shown = False
        self._progress_text = ""
        self._last_plain_progress = time.monotonic()
        self.run_error: str | None = None
        self._created = time.monotonic()

    def handle(self, entry: Any) -> None:
        """One event log entry: to the log file always, to the console when a step ends."""
        self._log(entry)
        event = entry.dagster_event
        error = _error_of(event)
        if error is not None and self.run_error is None:
            self.run_error = error_headline(error)
        if event is None or entry.step_key is None:
            return
        step = self.steps.setdefault(entry.step_key, StepFigures(entry.step_key))
        kind = event.event_type
        data = event.event_specific_data
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            # The run's first events name every step's assets: progress lines can use them.
            step.assets.append(data.asset_key.to_user_string())
        elif kind == dg.DagsterEventType.STEP_START:
            step.started = entry.timestamp
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = data.materialization
            name = materialization.asset_key.to_user_string()
            metadata = {k: v.value for k, v in materialization.metadata.items()}
            step.metadata[name] = metadata
            if name not in step.assets:
                step.assets.append(name)
            rows = _row_count(metadata)
            if rows is not None:
                step.rows = (step.rows or 0) + rows
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            if data.passed:
                step.checks_passed += 1
            else:
                step.checks_failed += 1
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            step.seconds = data.duration_ms / 1000
            if step.assets and step.metadata:
                self._print(self._step_line(step))
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            step.seconds = entry.timestamp - step.started if step.started else None
            step.error = error_headline(data.error) if data.error else "unknown error"
            self._print(self._step_line(step))

    def tick(self) -> None:
        """Show which step is running and for how long (rewritten in place on a terminal)."""
        running = [s for s in self.steps.values() if s.started and s.seconds is None and s.assets]
        if running:
            elapsed = time.time() - (running[0].started or time.time())
            text = f"running {_label(running[0])}… {elapsed:.0f} s"
        elif not self.steps:
            # Before the first step: the resources connect (a slow or retried API shows here).
            elapsed = time.monotonic() - self._created
            text = f"starting {self._job_name}… {elapsed:.0f} s"
        else:
            return
        if self.tty:
            if text != self._progress_text:
                self.out.write(f"\r\033[K  {text}")
                self.out.flush()
                self._progress_text = text
                self._progress_shown = True
        elif time.monotonic() - self._last_plain_progress >= PLAIN_PROGRESS_SECONDS:
            self._print(f"  still {text}")

    def _print(self, line: str) -> None:
        if self._progress_shown:
            self.out.write("\r\033[K")
            self._progress_shown = False
            self._progress_text = ""
        self.out.write(line + "\n")
        self.out.flush()
        self._last_plain_progress = time.monotonic()

    def _step_line(self, step: StepFigures) -> str:
        rows = f"{step.rows:,} rows" if step.rows is not None else ""
        seconds = f"{step.seconds:.1f} s" if step.seconds is not None else ""
        line = f"  {_label(step):<44}{rows:>14}{seconds:>9}"
        if step.error:
            line = f"  FAILED {_label(step)}: {step.error}"
        return line.rstrip()

    def _log(self, entry: Any) -> None:
        event = entry.dagster_event
        kind = event.event_type_value if event is not None else "LOG"
        message = entry.user_message or (event.message if event is not None else "") or ""
        error = _error_of(event)
        if error is not None:
            message = f"{message}\n{error.to_string()}"
        record = self.events.makeRecord(
            self.events.name,
            entry.level,
            __file__,
            0,
            "%s %s %s %s",
            (self._job_name, entry.step_key or "-", kind, message),
            None,
        )
        record.created = entry.timestamp
        record.msecs = (entry.timestamp % 1) * 1000
        self.events.handle(record)


def _label(step: StepFigures) -> str:
    return ", ".join(step.assets) if step.assets else step.key


def run_job(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    partition: str | None,
    out: IO[str] = sys.stdout,
) -> RunOutcome:
    """Execute ``job`` in this process, printing each step as it finishes.

    The job runs on the main thread, where Dagster's interrupt handling works: Ctrl-C or
    SIGTERM stops it between steps and records the run as failed, with nothing left running.
    A second thread reads the run's events back from the instance (the same records the UI
    shows), so what the console says is what the UI will say.

    Args:
        job: A job of the definitions.
        instance: The instance the run is recorded in.
        partition: The partition key, for a partitioned job.
        out: Where the console lines go.

    Returns:
        The outcome; the run's events are also in the log file.

    Raises:
        KeyboardInterrupt: The run was interrupted (SIGINT or SIGTERM).
    """
    run_id = str(uuid.uuid4())
    out.write(f"{job.name}{f' for {partition}' if partition else ''} (run {run_id[:8]})\n")
    console = StepConsole(job.name, out)
    finished = threading.Event()

    def follow() -> None:
        cursor = None
        while True:
            done = finished.is_set()
            page = instance.get_records_for_run(run_id, cursor=cursor, limit=1000)
            for record in page.records:
                console.handle(record.event_log_entry)
            cursor = page.cursor
            if page.has_more:
                continue
            if done:
                return
            console.tick()
            finished.wait(POLL_SECONDS)

    follower = threading.Thread(target=follow, name=f"follow-{job.name}", daemon=True)
    started = time.monotonic()
    follower.start()
    result, error = None, None
    try:
        result = job.execute_in_process(
            run_config=QUIET_RUN_CONFIG,
            instance=instance,
            partition_key=partition,
            run_id=run_id,
            tags={CLI_TAG: "cli"},
            raise_on_error=False,
        )
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as exc:
        finished.set()
        follower.join(timeout=10)
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_canceled(run, message="interrupted in the terminal")
        raise KeyboardInterrupt from exc
    except Exception as exc:  # reported with the log path, not as a traceback
        logger.exception("%s could not run", job.name)
        error = exc
    finished.set()
    follower.join()
    return RunOutcome(
        job_name=job.name,
        run_id=run_id,
        success=result is not None and result.success,
        seconds=time.monotonic() - started,
        steps=console.steps,
        first_assets=_first_assets(job, console.steps),
        error=console.run_error
        or (_first_line(f"{type(error).__name__}: {error}") if error else None),
    )


def _first_assets(job: dg.JobDefinition, steps: dict[str, StepFigures]) -> list[str]:
    """The assets of the job's first steps: what failed when the run failed before any step."""
    structure = job.graph.dependency_structure
    return [
        asset
        for node in job.graph.nodes
        if not structure.input_to_upstream_outputs_for_node(node.name)
        for asset in (steps[node.name].assets if node.name in steps else [])
    ]


def run_summary(outcome: RunOutcome) -> str:
    checks_passed = sum(s.checks_passed for s in outcome.steps.values())
    checks_failed = sum(s.checks_failed for s in outcome.steps.values())
    failed = f", {checks_failed} failed (non-blocking)" if checks_failed else ""
    return (
        f"  {outcome.job_name} succeeded in {outcome.seconds:.1f} s; "
        f"checks: {checks_passed} passed{failed}"
    )


def report_failure(outcome: RunOutcome, log_path: Path) -> None:
    step = outcome.failed_step
    if step is not None:
        where, error = f"at {_label(step)}", step.error
    else:
        where = f"before its first step ({', '.join(outcome.first_assets)})"
        error = outcome.error or "the run failed"
    print(f"{outcome.job_name} failed {where}: {error}", file=sys.stderr)
    print(f"Full log: {log_path}", file=sys.stderr)
    print(f"Run {outcome.run_id} is in the UI (`make ui`).", file=sys.stderr)


def summarize(partition: str, retraining: RunOutcome | None = None) -> str:
    """What the platform holds after the run, in a few lines: raw rows and rejects per endpoint,
    the core tables, the recommendations, which model serves and the gate's verdict."""
    engine = PostgresResource(database_url=os.environ.get(DATABASE_URL_ENV)).engine()
    lines = [f"Stored for {partition} (UTC):"]
    with engine.connect() as conn:
        manifest = {
            row.endpoint: row
            for row in conn.execute(
                sa.text(
                    "SELECT endpoint, api_total, rows_rejected "
                    f"FROM {RAW_SCHEMA}.snapshot_manifest WHERE {SNAPSHOT_DATE_COLUMN} = :d"
                ),
                {"d": partition},
            )
        }
        for endpoint in ENDPOINTS:
            rows = conn.execute(
                sa.text(
                    f"SELECT count(*) FROM {RAW_SCHEMA}.{quote_ident(endpoint)} "
                    f"WHERE {SNAPSHOT_DATE_COLUMN} = :d"
                ),
                {"d": partition},
            ).scalar_one()
            m = manifest.get(endpoint)
            total, rejects = (f"{m.api_total:,}", f"{m.rows_rejected:,}") if m else ("?", "?")
            lines.append(
                f"  {RAW_SCHEMA + '.' + endpoint:<20}{rows:>9,} rows  api total {total:>9}  "
                f"rejects {rejects}"
            )
        core = []
        for table in ("users", "tracks", "listen_events", "user_track_interactions"):
            rows = conn.execute(sa.text(f"SELECT count(*) FROM core.{quote_ident(table)}"))
            core.append(f"{table} {rows.scalar_one():,}")
        lines.append("  core: " + " · ".join(core))
        recs = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT user_id) FROM ml.user_recommendations")
        ).one()
        serving = conn.execute(
            sa.text("SELECT model_type, version FROM ml.model_registry WHERE status = 'production'")
        ).one_or_none()
    served_by = f"{serving.model_type} v{serving.version}" if serving else "no model"
    lines.append(
        f"  recommendations: {recs[0]:,} rows for {recs[1]:,} users, served by {served_by}"
    )
    if retraining is not None:
        candidate = retraining.metadata("ml/candidate_model")
        if candidate.get("trained"):
            verdict = "promoted" if candidate.get("gate_passed") else "refused"
            # The reason's figures in brackets are in the UI and the registry; one line here.
            reason = str(candidate.get("gate_reason", "")).split(" (", 1)[0]
            lines.append(f"  gate: candidate v{candidate.get('model_version')} {verdict}: {reason}")
        elif candidate:
            lines.append("  gate: no candidate trained (no interactions)")
    return "\n".join(lines)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_command(args: argparse.Namespace, state_dir: Path) -> int:
    """``cli run``: the day's ``daily_refresh``, then ``model_retraining``, then a summary."""
    partition = args.partition or utc_today().isoformat()
    log_path = log_file_path(state_dir, "run", partition)
    # SIGTERM unwinds like Ctrl-C, so what this command started is stopped either way (and
    # Ctrl-C does too when a non-interactive shell started this command with SIGINT ignored).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        return _run(args, state_dir, partition, log_path)
    except KeyboardInterrupt:
        print(f"\nInterrupted; stopped what this command started. Full log: {log_path}")
        return 130


def _run(args: argparse.Namespace, state_dir: Path, partition: str, log_path: Path) -> int:
    started = time.monotonic()
    with ExitStack() as stack:
        stack.enter_context(logging_to_file(log_path))
        stack.enter_context(embedded_postgres_owned(state_dir))
        env = prepare_environment(state_dir)
        stack.enter_context(api_stand_in(env, args.records, args.seed, args.taste))
        # The definitions read which variables are set when they are imported.
        os.environ.update(env)
        from moovitamix_assets.definitions import defs

        print(f"Full log: {log_path}")
        instance = stack.enter_context(dg.DagsterInstance.get())
        outcomes = []
        for name, key in ((daily_refresh_job.name, partition), (RETRAINING_JOB_NAME, None)):
            outcome = run_job(defs.resolve_job_def(name), instance, key)
            if not outcome.success:
                report_failure(outcome, log_path)
                return 1
            print(run_summary(outcome))
            outcomes.append(outcome)
        print(summarize(partition, outcomes[-1]))
        print(
            f"Materialized every asset for {partition} in {time.monotonic() - started:.1f} s; "
            "see the runs with `make ui`."
        )
    return 0


# --- ui: dg dev, quiet, stopped as a whole ------------------------------------------------------


def dagster_dev_command(host: str = DEFAULT_UI_HOST, port: int = 3000) -> list[str]:
    """The ``dg dev`` command line that ``ui`` runs: the UI has no login, so loopback only
    unless ``--host`` says otherwise."""
    return [
        DG,
        "dev",
        "-m",
        "moovitamix_assets.definitions",
        "-h",
        host,
        "-p",
        str(port),
        "--log-level",
        "info",
        "--log-format",
        "colored",
    ]


def is_tick_line(line: str) -> bool:
    """Whether a line of ``dg dev``'s output is per-tick daemon chatter (kept for the log only)."""
    plain = _ANSI_RE.sub("", line)
    return bool(_DAEMON_INFO_RE.search(plain) and _TICK_LINE_RE.search(plain))


def stop_process_group(process: subprocess.Popen[Any], sig: int, grace: float) -> None:
    """Send ``sig`` to the process group of ``process``, wait ``grace`` s, then SIGKILL it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # The webserver, the daemon and the code servers share the group; any that outlived
    # dg dev's own shutdown go now.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def ui_command(args: argparse.Namespace, state_dir: Path) -> int:
    """``cli ui``: ``dg dev`` with the embedded defaults until Ctrl-C or SIGTERM."""
    log_path = log_file_path(state_dir, "ui")
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ExitStack() as stack:
            stack.enter_context(embedded_postgres_owned(state_dir))
            env = prepare_environment(state_dir)
            stack.enter_context(api_stand_in(env, args.records, args.seed, args.taste))
            dispose_engines()  # this process keeps no connection while the UI runs
            if received:
                return 130
            process = subprocess.Popen(
                dagster_dev_command(args.host, args.port),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                # Its own session: a terminal's Ctrl-C reaches this process only, which passes
                # it on to the whole group (webserver, daemon, code servers), waits, and kills
                # whatever is left: nothing outlives the command.
                start_new_session=True,
            )
            shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
            print(f"Dagster UI: http://{shown}:{args.port}  (Ctrl-C stops everything)")
            print(f"Full log: {log_path}", flush=True)
            reader = threading.Thread(
                target=_copy_output, args=(process, log_path), name="dg-dev-output", daemon=True
            )
            reader.start()
            while process.poll() is None and not received:
                time.sleep(0.2)
            if received:
                stop_process_group(process, received[0], UI_STOP_GRACE_SECONDS)
            else:
                stop_process_group(process, signal.SIGTERM, 0)
            reader.join(timeout=5)
            code = process.returncode
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        print("Stopped the UI, its daemon and code servers, and what it started.")
        return 0
    return code or 1


def _copy_output(process: subprocess.Popen[str], log_path: Path) -> None:
    """Every line to the log file; to the console, all but the per-tick daemon lines."""
    assert process.stdout is not None
    colors = sys.stdout.isatty()
    with log_path.open("a", encoding="utf-8") as log:
        for line in process.stdout:
            plain = _ANSI_RE.sub("", line)
            log.write(plain)
            log.flush()
            if not is_tick_line(plain):
                sys.stdout.write(line if colors else plain)
                sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m moovitamix_assets.cli``."""
    parser = argparse.ArgumentParser(prog="python -m moovitamix_assets.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run the daily refresh and the model retraining for one day, then summarize"
    )
    run.add_argument("--partition", default=None, help="UTC day, YYYY-MM-DD (default: today)")
    ui = sub.add_parser("ui", help="start `dg dev` on 127.0.0.1 with the same defaults")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument(
        "--host",
        default=DEFAULT_UI_HOST,
        help="address the UI binds to (default: loopback only; 0.0.0.0 exposes it to the network)",
    )
    for p in (run, ui):
        p.add_argument("--records", type=int, default=1000, help="stand-in records per endpoint")
        p.add_argument("--seed", type=int, default=42, help="stand-in seed")
        p.add_argument(
            "--taste",
            choices=sorted(TASTES),
            default=None,
            help=f"stand-in listening: structured, or none (uniform random tracks); default: "
            f"${TASTE_ENV}, else {DEFAULT_TASTE}",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state_dir = resolve_state_dir()
    if args.command == "ui":
        return ui_command(args, state_dir)
    return run_command(args, state_dir)


if __name__ == "__main__":
    sys.exit(main())
