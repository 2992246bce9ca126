"""``python -m moovitamix_api`` serves the contract from a subprocess."""

from __future__ import annotations

import os

import pytest
import requests

from moovitamix_api import DataConfig, Dataset
from moovitamix_api.__main__ import build_config, parse_args
from moovitamix_api.config import TASTE_ENV
from moovitamix_api.server import run_subprocess

pytestmark = pytest.mark.http


def test_cli_serves_the_configured_data_and_faults():
    args = ["--records", "120", "--tracks", "90", "--seed", "5", "--day", "2026-04-09"]
    args += ["--fault", "tracks:fail_first_n=1", "--fault", 'users:slow_pages={"9": 1}']
    with run_subprocess(args) as process:
        assert process.base_url.startswith("http://127.0.0.1:")
        users = requests.get(process.base_url + "/users", timeout=10).json()
        expected = Dataset(DataConfig(records=120, tracks=90, seed=5, day="2026-04-09"))
        assert users == {
            "items": expected.page("users", 1, 100)[0],
            "total": 120,
            "page": 1,
            "size": 100,
            "pages": 2,
        }
        assert requests.get(process.base_url + "/tracks", timeout=10).status_code == 500
        tracks = requests.get(process.base_url + "/tracks", timeout=10).json()
        assert tracks["total"] == 90
        assert process.admin("/_standin/day", {"day": "2026-04-10"})["data"]["day"] == "2026-04-10"
        assert process.admin("/_standin/stats")["tracks"]["statuses"] == {"200": 1, "500": 1}
    assert process.process.returncode is not None


NO_TASTE = {"favourite_share": 0.0, "zipf_exponent": 0.0}


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        ([], {}, {"favourite_share": 0.75, "zipf_exponent": 1.0}),
        (["--taste", "none"], {}, NO_TASTE),
        ([], {TASTE_ENV: "none"}, NO_TASTE),
        (["--taste", "structured"], {TASTE_ENV: "none"}, {"favourite_share": 0.75}),
        (["--taste", "none", "--zipf-exponent", "0"], {}, NO_TASTE),
        (
            ["--taste-scenes", "7", "--declared-genre-share", "0.25"],
            {},
            {"taste_scenes": 7, "declared_genre_share": 0.25},
        ),
    ],
)
def test_taste_flags_and_variable_set_the_generator(monkeypatch, argv, env, expected):
    monkeypatch.delenv(TASTE_ENV, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    data = build_config(parse_args(argv)).data
    assert {name: getattr(data, name) for name in expected} == expected


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--taste", "none", "--favourite-share", "0.5"], {}),
        (["--taste", "random"], {}),
        ([], {TASTE_ENV: "random"}),
        (["--declared-genre-share", "2"], {}),
    ],
)
def test_contradictory_or_invalid_taste_settings_are_refused(monkeypatch, argv, env):
    monkeypatch.delenv(TASTE_ENV, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises((SystemExit, ValueError)):
        build_config(parse_args(argv))


def test_the_taste_variable_reaches_a_stand_in_started_as_a_subprocess():
    # How `python -m moovitamix_assets.cli run` starts it: the environment is inherited.
    args = ["--records", "200", "--seed", "3", "--day", "2026-04-09"]
    env = {**os.environ, TASTE_ENV: "none"}
    with run_subprocess(args, env=env) as process:
        served = requests.get(process.base_url + "/listen_history?size=100", timeout=10).json()
    expected = Dataset(DataConfig(records=200, seed=3, day="2026-04-09", **NO_TASTE))
    assert served["items"] == expected.page("listen_history", 1, 100)[0]
    structured = Dataset(DataConfig(records=200, seed=3, day="2026-04-09"))
    assert served["items"] != structured.page("listen_history", 1, 100)[0]
