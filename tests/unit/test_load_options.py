import pytest

from pytest_serving.load.options import DistributedLoad
from pytest_serving.load.phase import LoadPhase


def test_unset_options_leave_the_phase_defaults():
    defaults = DistributedLoad.from_values({"serving-load-remote-workers": "0"}).phase_defaults()
    assert defaults == {"remote_workers": 0}
    phase = LoadPhase(users=1, **defaults)
    assert not phase.distributed and phase.master_bind == LoadPhase.master_bind


def test_remote_workers_their_address_and_timeout_reach_the_phase():
    options = {
        "serving-load-remote-workers": "2",
        "serving-load-master-bind": "0.0.0.0:6000",
        "serving-load-worker-timeout": "30",
    }
    phase = LoadPhase(users=2, **DistributedLoad.from_values(options).phase_defaults())
    assert (phase.remote_workers, phase.master_bind, phase.worker_timeout) == (2, "0.0.0.0:6000", 30.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("serving-load-remote-workers", "-1"),
        ("serving-load-remote-workers", "two"),
        ("serving-load-master-bind", "6000"),
        ("serving-load-worker-timeout", "0"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_option(name, value):
    with pytest.raises(pytest.UsageError, match=f"--{name}"):
        DistributedLoad.from_values({name: value})


def test_a_bad_master_address_is_a_usage_error_before_anything_runs(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--serving-load-remote-workers=2", "--serving-load-master-bind=ci-runner")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--serving-load-master-bind: expected HOST:PORT*'ci-runner'*"])
