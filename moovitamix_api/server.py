"""Run the stand-in: in a background thread (tests) or as a subprocess (end-to-end tests)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from moovitamix_api.app import StandInState, create_app
from moovitamix_api.config import FaultConfig, StandInConfig

HOST = "127.0.0.1"
_START_TIMEOUT_S = 15.0
READY_PREFIX = "MooVitamix API stand-in listening on "


def bind_socket(host: str = HOST, port: int = 0) -> socket.socket:
    """A listening TCP socket; SO_REUSEADDR lets a restarted server take the same port at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, host: str = HOST, port: int = 0) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Slow-page faults sleep for seconds: they must not hold a shutdown (or restart) hostage.
        timeout_graceful_shutdown=1,
    )


class StandInServer:
    """The stand-in served by uvicorn on 127.0.0.1 from a background thread.

    ``config`` is shared with the running app: changing ``config.data`` or the fault objects takes
    effect on the next request. ``stop()`` then ``start()`` serves again on the same port, which is
    how tests simulate "the API is down for a few seconds".
    """

    def __init__(self, config: StandInConfig | None = None, port: int = 0) -> None:
        self.state = StandInState(config or StandInConfig())
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> StandInConfig:
        return self.state.config

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("server not started yet")
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> StandInServer:
        """Start serving (on the previous port after a stop); returns self once it accepts."""
        if self.running:
            return self
        sock = bind_socket(HOST, self.port)
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn_config(create_app(self.state), HOST, self.port))
        errors: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # reported to the starting thread below
                errors.append(exc)
            finally:
                sock.close()

        thread = threading.Thread(target=run, name=f"moovitamix-api-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if errors or not thread.is_alive():
                raise RuntimeError(f"stand-in failed to start: {errors!r}")
            if time.monotonic() > deadline:
                server.should_exit = True
                raise TimeoutError("stand-in did not start in time")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving; connections are refused until ``start()``."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def restart(self, down_for_s: float = 0.0) -> None:
        """Stop, stay down for ``down_for_s`` seconds, and serve again on the same port."""
        self.stop()
        time.sleep(down_for_s)
        self.start()

    def set_faults(
        self, faults: FaultConfig | None = None, endpoint: str | None = None, **kw: Any
    ) -> None:
        """Replace the global (or one endpoint's) faults, from an object or keyword fields."""
        if faults is None and kw:
            faults = FaultConfig(**kw)
        self.state.set_faults(faults, endpoint)

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def set_day(self, day: dt.date | str | None) -> None:
        self.config.data = dataclasses.replace(self.config.data, day=day)

    def stats(self) -> dict[str, Any]:
        return self.state.stats_json()

    def reset_stats(self) -> None:
        self.state.reset_stats()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class StandInProcess:
    """The stand-in running as ``python -m moovitamix_api`` in a subprocess."""

    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call an admin route (``/_standin/...``): POST with ``body``, else GET."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> StandInProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_subprocess(args: Sequence[str] = (), env: dict[str, str] | None = None) -> StandInProcess:
    """Start ``python -m moovitamix_api --port 0 *args`` and wait until it listens.

    Args:
        args: Extra CLI arguments, e.g. ``["--records", "1000", "--day", "2026-04-09"]``.
        env: Environment of the child (defaults to this process's).

    Returns:
        The running process with its ``base_url``; use it as a context manager to stop it.
    """
    args = list(args)
    if "--port" not in args:
        args = ["--port", "0", *args]
    env = dict(os.environ if env is None else env)
    # Importable from any working directory, installed or not.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "moovitamix_api", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(READY_PREFIX):
        process.kill()
        process.wait()
        raise RuntimeError(f"stand-in subprocess did not start (said {line!r})")
    return StandInProcess(process, line[len(READY_PREFIX) :].strip())


@contextlib.contextmanager
def serve(config: StandInConfig | None = None) -> Iterator[StandInServer]:
    """``with serve(config) as server:`` – a started StandInServer, stopped on exit."""
    server = StandInServer(config)
    with server:
        yield server
