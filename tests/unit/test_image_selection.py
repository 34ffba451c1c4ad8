"""The skip reason of a target without an image speaks the user's terms, not Docker's daemon's."""

from pytest_serving.image_selection import pull_problem

#: What Docker 20.10's daemon answered on the development machine, which has no registry.
DAEMON_ERROR = (
    "500 Server Error for http+docker://localhost/v1.41/images/create?tag=2.18.0&fromImage=tensorflow%2Fserving: "
    'Internal Server Error ("Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on '
    '10.255.255.53:53: no such host")'
)


def test_an_unreachable_registry_is_said_plainly_without_the_resolver_address():
    problem = pull_problem("tensorflow/serving:2.18.0", DAEMON_ERROR)
    assert problem == "image tensorflow/serving:2.18.0 is not present locally and no registry is reachable"


def test_other_pull_errors_are_quoted():
    error = "404 Client Error: manifest for tensorflow/serving:9.9 not found: manifest unknown"
    assert pull_problem("tensorflow/serving:9.9", error).endswith(f"could not be pulled ({error})")
