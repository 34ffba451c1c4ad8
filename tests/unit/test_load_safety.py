import pytest

from pytest_serving.load.safety import UnsafeTargetError, check_load_target


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.3.2.1/v2",
        "http://localhost:8080",
        "https://LOCALHOST",
        "http://[::1]:8000/",
        "http://[::ffff:127.0.0.1]:80",
    ],
)
def test_loopback_targets_are_allowed(url):
    check_load_target(url, started_by_plugin=False, allow_remote=False)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8000", "http://example.com", "http://localhost.example.com", "http://[::2]:80"]
)
def test_remote_targets_are_refused_with_the_reason(url):
    with pytest.raises(UnsafeTargetError, match="not a loopback address and pytest-serving did not start it"):
        check_load_target(url, started_by_plugin=False, allow_remote=False)


def test_remote_targets_pass_when_started_by_the_plugin_or_explicitly_allowed():
    check_load_target("http://172.17.0.3:8000", started_by_plugin=True, allow_remote=False)
    check_load_target("http://example.com", started_by_plugin=False, allow_remote=True)


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://127.0.0.1/", "http://"])
def test_urls_without_http_scheme_or_host_are_refused(url):
    with pytest.raises(UnsafeTargetError, match="not an http"):
        check_load_target(url, started_by_plugin=True, allow_remote=True)
