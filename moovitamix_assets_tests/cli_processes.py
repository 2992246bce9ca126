"""Watching what `python -m moovitamix_assets.cli` starts, to prove it leaves nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from moovitamix_assets.partitions import FIRST_DAY_ENV
from moovitamix_assets.warehouse.embedded_postgres import (
    discard_embedded_postgres,
    embedded_postgres_of,
)

CLI = [sys.executable, "-m", "moovitamix_assets.cli"]


def cli_env(state_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a fresh user: no Dagster or MooVitamix settings but the state folder.

    ``PATH`` leaves the virtualenv out, as `make run` calls its python without activating it.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith(("MOOVITAMIX_", "DAGSTER_")) or k == FIRST_DAY_ENV)
    }
    env.update(PATH="/usr/bin:/bin", MOOVITAMIX_STATE_DIR=str(state_dir), **overrides)
    return env


def free_port() -> int:
    """A TCP port nothing listens on right now (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Descendants:
    """Every process ever seen below a parent, kept with its start time (pids are reused)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.root = psutil.Process(process.pid)
        self.seen: dict[int, psutil.Process] = {}
        self.commands: dict[int, str] = {}

    def record(self) -> None:
        try:
            children = self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            if child.pid not in self.seen:
                self.seen[child.pid] = child
                try:
                    self.commands[child.pid] = " ".join(child.cmdline())
                except psutil.NoSuchProcess:
                    self.commands[child.pid] = "?"

    def alive(self) -> list[str]:
        """Descriptions of the recorded processes still running (zombies count as gone)."""
        left = []
        for proc in self.seen.values():
            try:
                # is_running() compares the start time too: a reused pid is not ours.
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
            except psutil.NoSuchProcess:
                continue
        return left


def wait_recording(process: subprocess.Popen[str], descendants: Descendants, timeout: float) -> int:
    """Wait for ``process`` to exit, recording its descendants meanwhile; its exit code."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        descendants.record()
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{process.args} did not exit within {timeout} s")
        time.sleep(0.3)
    return process.returncode


def run_recording(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[subprocess.CompletedProcess[str], Descendants]:
    """Run a command to its end, its output captured, recording its descendants meanwhile."""
    process = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    descendants = Descendants(process)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            descendants.record()
            done.wait(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        done.set()
        watcher.join()
    return subprocess.CompletedProcess(args, process.returncode, out, err), descendants


def embedded_postgres_running(state_dir: Path) -> bool:
    """Whether the embedded PostgreSQL of this state folder is running."""
    return embedded_postgres_of(state_dir).is_running()


def discard_state(state_dir: Path) -> None:
    """Stop (if a test failed half-way) and delete the embedded PostgreSQL of a tmp state folder."""
    discard_embedded_postgres(state_dir)
