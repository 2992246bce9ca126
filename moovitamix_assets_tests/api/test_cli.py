"""``python -m moovitamix_api`` serves the contract from a subprocess."""

from __future__ import annotations

import pytest
import requests

from moovitamix_api import DataConfig, Dataset
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
