"""The transport's choices that the HTTP tests do not reach: proxies from the environment."""

import pytest
import urllib3

from moovitamix_assets.resources.transport import Connections, pool_manager


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_without_a_proxy_requests_go_straight_to_the_hosts_pool() -> None:
    connections = Connections("http://api.example.test:8000/v1/", 4)
    assert not isinstance(connections.manager, urllib3.ProxyManager)
    assert connections.pool is not None and connections.pool.host == "api.example.test"
    assert connections.path == "/v1"  # requests go to /v1/<endpoint>?...


def test_the_environments_proxy_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    manager = pool_manager("https://api.example.test", 4)
    assert isinstance(manager, urllib3.ProxyManager)
    assert manager.proxy is not None and manager.proxy.host == "proxy.example.test"
    assert Connections("https://api.example.test", 4).pool is None  # the manager routes
    monkeypatch.setenv("NO_PROXY", "api.example.test")
    assert not isinstance(pool_manager("https://api.example.test", 4), urllib3.ProxyManager)
    # An http base URL is not sent through an https-only proxy.
    assert not isinstance(pool_manager("http://other.example.test", 4), urllib3.ProxyManager)
