from pathlib import Path

from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.runner import locust_commands


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_a_master_for_remote_workers_binds_the_address_asked_and_expects_every_worker():
    phase = LoadPhase(users=4, workers=1, remote_workers=2, master_bind="0.0.0.0:6000", worker_timeout=30)
    (role, master), *workers = locust_commands("http://127.0.0.1:8000", phase, Path("/work/plan.json"))
    assert role == "master"
    assert (flag(master, "--master-bind-host"), flag(master, "--master-bind-port")) == ("0.0.0.0", "6000")
    assert flag(master, "--expect-workers") == "3"
    assert int(flag(master, "--expect-workers-max-wait")) > 30  # the master names the missing ones first
    assert [role for role, _ in workers] == ["worker-0"]  # only the local one is started here
    worker = workers[0][1]
    assert (flag(worker, "--master-host"), flag(worker, "--master-port")) == ("127.0.0.1", "6000")
    assert "--serving-plan" not in worker  # the plan goes over Locust's channel


def test_local_workers_refuse_remote_targets_unless_the_runner_allowed_them():
    phase = LoadPhase(users=2, workers=2)
    commands = locust_commands("http://127.0.0.1:8000", phase, Path("plan.json"))
    assert all("--serving-allow-remote-load" not in argv for _, argv in commands)
    commands = locust_commands("http://127.0.0.1:8000", phase, Path("plan.json"), allow_target=True)
    assert all("--serving-allow-remote-load" in argv for role, argv in commands if role != "master")
