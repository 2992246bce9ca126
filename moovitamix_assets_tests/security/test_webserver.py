"""The UI binds to loopback unless told otherwise, and shows variable names, never their values.

Dagster's UI has no login: whoever reaches the port can launch runs. `cli ui` therefore passes
``-h 127.0.0.1`` unless ``--host`` says otherwise, and the webserver itself (started here for
real) listens on 127.0.0.1 only; its GraphQL API (what the UI renders) is searched for secrets.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from moovitamix_assets.cli import DEFAULT_UI_HOST, build_parser, dagster_dev_command

STARTUP_TIMEOUT_S = 120
REPOSITORIES = """
{ repositoriesOrError { __typename
    ... on RepositoryConnection { nodes { name location { name } } }
    ... on PythonError { message } } }
"""
RESOURCES = """
query ($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) { __typename
    ... on ResourceDetailsList { results { name configuredValues { key value type } } } }
  utilizedEnvVarsOrError(repositorySelector: $selector) { __typename
    ... on EnvVarWithConsumersList { results { envVarName } } }
}
"""


def test_ui_binds_to_loopback_by_default() -> None:
    args = build_parser().parse_args(["ui"])
    command = dagster_dev_command(args.host, args.port)
    assert command[:2] == [str(Path(sys.executable).with_name("dg")), "dev"]
    assert command[command.index("-h") + 1] == DEFAULT_UI_HOST == "127.0.0.1"
    assert command[command.index("-p") + 1] == "3000"


def test_the_host_is_only_widened_on_request() -> None:
    args = build_parser().parse_args(["ui", "--host", "0.0.0.0", "--port", "3111"])
    command = dagster_dev_command(args.host, args.port)
    assert command[command.index("-h") + 1] == "0.0.0.0"
    assert command[command.index("-p") + 1] == "3111"


def test_dg_dev_takes_h_as_its_host_option() -> None:
    # The flags cli.py relies on, checked against the installed dg, not remembered (its --help
    # prints no options through a pipe, so its click parameters are read).
    from dagster_dg_cli.cli.dev import dev_command

    options = {opt for param in dev_command.params for opt in param.opts}
    assert {"-h", "--host", "-p", "--port", "-m"} <= options


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on ``port`` (from /proc/net, no probing)."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:
                    continue
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order.
                words = [raw[i : i + 4][::-1] for i in range(0, width, 4)]
                packed = b"".join(words)
                family = socket.AF_INET if width == 4 else socket.AF_INET6
                found.add(socket.inet_ntop(family, packed))
    return found


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """`dagster-webserver` on the real definitions, with secrets in its environment, no -h."""
    password = secrets.token_hex(20)
    secret_env = {
        "MOOVITAMIX_DATABASE_URL": f"postgresql://moovitamix:{password}@127.0.0.1:1/warehouse",
        "MOOVITAMIX_ALERT_WEBHOOK_URL": f"https://hooks.example/services/{password}",
        "MOOVITAMIX_API_URL": "http://127.0.0.1:8000",
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    port = free_port()
    env = {**os.environ, **secret_env, "DAGSTER_HOME": str(home)}
    log = (tmp_path / "webserver.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-m",
            "moovitamix_assets.definitions",
            "-p",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                answer = graphql(port, REPOSITORIES)["data"]["repositoriesOrError"]
                if answer["__typename"] == "RepositoryConnection" and answer["nodes"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the webserver did not load the definitions"
            time.sleep(0.5)
        yield port, {"password": password, **secret_env}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.e2e
def test_the_webserver_listens_on_loopback_and_shows_no_secret(webserver) -> None:
    port, secret = webserver
    assert listening_addresses(port) == {"127.0.0.1"}

    repositories = graphql(port, REPOSITORIES)["data"]["repositoriesOrError"]["nodes"]
    answers = [json.dumps(repositories)]
    configured: dict[tuple[str, str], dict] = {}
    for repository in repositories:
        selector = {
            "repositoryName": repository["name"],
            "repositoryLocationName": repository["location"]["name"],
        }
        answer = graphql(port, RESOURCES, {"selector": selector})
        answers.append(json.dumps(answer))
        details = answer["data"]["allTopLevelResourceDetailsOrError"]
        assert details["__typename"] == "ResourceDetailsList"
        for resource in details["results"]:
            for value in resource["configuredValues"]:
                configured[(resource["name"], value["key"])] = value
        env_vars = {e["envVarName"] for e in answer["data"]["utilizedEnvVarsOrError"]["results"]}
        assert {"MOOVITAMIX_DATABASE_URL", "MOOVITAMIX_ALERT_WEBHOOK_URL"} <= env_vars

    # What the UI's resource page renders: the variable's name, typed as an env var.
    assert configured[("postgres", "database_url")] == {
        "key": "database_url",
        "value": "MOOVITAMIX_DATABASE_URL",
        "type": "ENV_VAR",
    }
    assert configured[("alert_notifier", "webhook_url")]["type"] == "ENV_VAR"
    assert not any(secret["password"] in answer for answer in answers)
