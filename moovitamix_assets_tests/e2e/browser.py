"""Drive headless Chromium over the DevTools protocol, and run dagster-webserver, for UI tests.

Chromium is Debian's ``chromium`` package (no browser download by any tool). The DevTools
protocol is spoken over a websocket with the ``websockets`` package, which dagster-webserver
already installs (through ``uvicorn[standard]``). The browser can reach 127.0.0.1 only: every
other host name resolves to nothing and every other address goes to a proxy that is not there.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
VIEWPORT = (1600, 1000)
STARTUP_TIMEOUT_S = 30.0
WEBSERVER_TIMEOUT_S = 120.0


def find_chromium() -> str | None:
    """Path of the Chromium binary, or None when it is not installed."""
    for candidate in CHROMIUM_CANDIDATES:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, with its children (the webserver's gRPC one)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def dagster_webserver(workspace: Path, env: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """Run ``dagster-webserver`` on a free loopback port; yield its base URL once it answers.

    Args:
        workspace: The workspace.yaml to serve.
        env: The webserver's whole environment (DAGSTER_HOME, database URL, ...).
        log_path: Where its output goes (shown when it does not come up).
    """
    port = free_port()
    executable = shutil.which("dagster-webserver", path=os.path.dirname(sys.executable))
    assert executable, "dagster-webserver is not installed next to this Python"
    cmd = [executable, "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd,
            env=dict(env),
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WEBSERVER_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"dagster-webserver exited:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"dagster-webserver did not answer:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(process)


class Page:
    """One browser tab, driven over the DevTools protocol."""

    def __init__(self, connection: ClientConnection) -> None:
        self._ws = connection
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are ignored)."""
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=STARTUP_TIMEOUT_S))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """The page's visible text."""
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, needles: Sequence[str], timeout_s: float = 60.0) -> str:
        """Wait until every needle is in the page's text; return the text.

        Raises:
            AssertionError: Some needles never appeared; names them and shows the text.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"never shown: {missing}\n--- page text ---\n{text[:4000]}")
            time.sleep(0.5)

    def click_button(self, label: str) -> bool:
        """Click the first button whose text is ``label``; False when there is none."""
        return bool(
            self.evaluate(
                "(() => { const b = [...document.querySelectorAll('button')]"
                f".find(b => b.innerText.trim() === {json.dumps(label)});"
                " if (b) { b.click(); return true; } return false; })()"
            )
        )

    def screenshot(self, path: Path) -> Path:
        """Save the viewport as a PNG."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def headless_chromium(binary: str, user_data_dir: Path) -> Iterator[Page]:
    """Start headless Chromium with a throwaway profile; yield its first tab."""
    user_data_dir.mkdir(parents=True, exist_ok=True)
    dead_proxy = free_port()  # nothing listens there: any non-loopback request fails at once
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data_dir}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
        "--hide-scrollbars",
        # Loopback only: loopback bypasses the proxy, everything else is sent to a dead one.
        f"--proxy-server=http://127.0.0.1:{dead_proxy}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "about:blank",
    ]
    log_path = user_data_dir.parent / "chromium.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        port_file = user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Chromium did not start:\n{_tail(log_path)}")
            time.sleep(0.1)
        port = port_file.read_text().splitlines()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            targets = json.load(response)
        target = next(t for t in targets if t.get("type") == "page")
        # max_size=None: a full-page screenshot is one message of several megabytes.
        with connect(target["webSocketDebuggerUrl"], max_size=None) as connection:
            page = Page(connection)
            page.call(
                "Emulation.setDeviceMetricsOverride",
                width=VIEWPORT[0],
                height=VIEWPORT[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
    finally:
        _stop(process)
