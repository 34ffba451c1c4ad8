"""Run a load phase in Locust processes and turn their raw samples into statistics.

Locust runs headless in child processes (``python -m locust -f users.py``), so
its gevent monkey-patching never touches the pytest process. ``workers=0``
starts one process; ``workers=N`` starts Locust's own distributed mode: one
``--master --expect-workers N`` and N ``--worker`` processes on 127.0.0.1; with
``remote_workers=M`` the master binds ``master_bind`` and also expects M workers
started elsewhere (``pytest-serving load-worker``). Workers send their raw samples
to the master over Locust's channel; the master writes them here for the runner
to merge, or a ``fault`` file naming what went wrong, which the runner raises.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import pytest_serving
from pytest_serving import progress
from pytest_serving.load.answers import AnswerCheck, KeptAnswers
from pytest_serving.load.interleave import WindowSchedule
from pytest_serving.load.phase import FAULT_FILE, WINDOW_OPEN_FILE, LoadPhase, RunPlan, split_address
from pytest_serving.load.safety import check_load_target
from pytest_serving.load.stats import PhaseStats, RawSamples, summarize
from pytest_serving.types import HttpRequest

LOCUSTFILE = Path(__file__).with_name("users.py")
LOG_EXCERPT_CHARS = 2000
POLL_INTERVAL_S = 0.05
TERMINATE_GRACE_S = 3.0
# Start every process's open-loop user at once (Locust warns above 100 users/s).
OPEN_LOOP_SPAWN_RATE = 100
#: Bind addresses that mean "every interface": local workers reach such a master on loopback.
ANY_ADDRESS = frozenset({"0.0.0.0", "::", "*", ""})


class LoadError(RuntimeError):
    """A Locust process failed or ran past its time limit; the message quotes its log."""


@dataclass
class LocustProcess:
    """One started Locust process and the file its stdout and stderr go to."""

    role: str
    popen: subprocess.Popen
    log_path: Path

    def log_excerpt(self) -> str:
        """The log's first error (often the cause) and its last lines."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if len(text) <= 2 * LOG_EXCERPT_CHARS:
            return text
        errors = [at for at in (text.find("/ERROR/"), text.find("/CRITICAL/")) if at >= 0]
        if not errors:
            return text[-2 * LOG_EXCERPT_CHARS :]
        line_start = text.rfind("\n", 0, min(errors)) + 1
        return f"{text[line_start : line_start + LOG_EXCERPT_CHARS]}\n[...]\n{text[-LOG_EXCERPT_CHARS:]}"

    def stop(self) -> None:
        """Terminate the process (and anything it started), killing it if it lingers."""
        if self.popen.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)


def run_phase(
    base_url: str,
    requests: Sequence[HttpRequest],
    phase: LoadPhase,
    *,
    started_by_plugin: bool = False,
    allow_remote: bool = False,
    raw_dir: str | os.PathLike | None = None,
    on_window_open: Callable[[], None] | None = None,
    check_answers: Callable[[KeptAnswers], AnswerCheck] | None = None,
    schedule: WindowSchedule | None = None,
) -> PhaseStats:
    """Load ``base_url`` with ``requests`` (cycled) as ``phase`` says, and measure it.

    Raw samples (``raw-<i>.npz``) and process logs go to ``raw_dir`` when given,
    else to a temporary directory that is removed afterwards. ``on_window_open`` is
    called (within about ``POLL_INTERVAL_S``) when the warm-up ends. With
    ``check_answers`` the processes keep the 2xx answers (warm-up included) by the
    request they answer, and its verdict becomes the statistics' ``answers``. With ``schedule``
    the measured phase's windows send the request sets it names (``load.interleave``).
    """
    check_load_target(base_url, started_by_plugin=started_by_plugin, allow_remote=allow_remote)
    base_url = base_url.rstrip("/")
    if not requests:
        raise ValueError("a load phase needs at least one request to send")
    with ExitStack() as stack:
        if raw_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pytest-serving-load-")))
        else:
            work_dir = Path(raw_dir).resolve()
            work_dir.mkdir(parents=True, exist_ok=True)
            stale = [*work_dir.glob("raw-*.npz"), *work_dir.glob("answers-*.json"), *work_dir.glob("locust-*.log")]
            for path in [*stale, work_dir / WINDOW_OPEN_FILE, work_dir / FAULT_FILE]:
                path.unlink(missing_ok=True)
        plan_path = work_dir / "plan.json"
        plan = RunPlan(
            phase,
            tuple(requests),
            str(work_dir),
            keep_answers=check_answers is not None,
            phase_id=uuid.uuid4().hex,
            schedule=schedule,
        )
        plan.write(plan_path)
        # Local workers may send wherever the check above let this phase send.
        commands = locust_commands(base_url, phase, plan_path, allow_target=True)
        run_processes(commands, work_dir, phase.deadline_s, on_window_open)
        raw_files = sorted(work_dir.glob("raw-*.npz"))
        if len(raw_files) != phase.process_count:
            raise LoadError(
                f"expected raw samples from {phase.process_count} Locust process(es) in {work_dir}, "
                f"found {len(raw_files)}"
            )
        samples = RawSamples.merge([RawSamples.load(path) for path in raw_files])
        stats = summarize(samples, phase, base_url=base_url, request_count=len(requests))
        if check_answers is None:
            return stats
        kept = KeptAnswers.merge([KeptAnswers.load(path) for path in sorted(work_dir.glob("answers-*.json"))])
        return replace(stats, answers=check_answers(kept))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def locust_commands(
    base_url: str, phase: LoadPhase, plan_path: Path, allow_target: bool = False
) -> list[tuple[str, list[str]]]:
    """(role, argv) of every Locust process of the phase, master first; local workers refuse a
    non-loopback target unless ``allow_target``."""
    user_class = "OpenLoopUser" if phase.open_loop else "ClosedLoopUser"
    if phase.open_loop:
        # One user per process; it spawns its own greenlet per scheduled arrival.
        users, spawn_rate = phase.process_count, OPEN_LOOP_SPAWN_RATE
    else:
        users = phase.users
        spawn_rate = phase.users if phase.spawn_rate is None else phase.spawn_rate
    common = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--serving-plan", str(plan_path),
        "--loglevel", "WARNING",
    ]  # fmt: skip
    controller = [
        "--headless",
        "--only-summary",
        "--host", base_url,
        "--users", str(users),
        "--spawn-rate", f"{spawn_rate:g}",
        "--stop-timeout", str(math.ceil(phase.request_timeout)),
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    if not phase.distributed:
        return [("local", [*common, *controller, user_class])]
    host, port = split_address(phase.master_bind) if phase.remote_workers else ("127.0.0.1", free_port())
    master = [
        *common,
        *controller,
        "--master",
        "--master-bind-host", host,
        "--master-bind-port", str(port),
        "--expect-workers", str(phase.process_count),
        # The master names missing workers itself after worker_timeout (users.MasterSide); this is a backstop.
        "--expect-workers-max-wait", str(math.ceil(phase.worker_timeout) + 5),
        user_class,
    ]  # fmt: skip
    return [("master", master)] + [
        (f"worker-{index}", worker_command("127.0.0.1" if host in ANY_ADDRESS else host, port, allow_target))
        for index in range(phase.workers)
    ]


def worker_command(master_host: str, master_port: int, allow_target: bool = False, name: str = "") -> list[str]:
    """A Locust worker of this package's locustfile attached to a master; it gets everything else from the master."""
    argv = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--loglevel", "WARNING",
        "--worker",
        "--master-host", master_host,
        "--master-port", str(master_port),
    ]  # fmt: skip
    if name:
        argv += ["--serving-worker-name", name]
    return [*argv, "--serving-allow-remote-load"] if allow_target else argv


def child_environment() -> dict[str, str]:
    """The environment of a Locust process: ours, with this package importable even when not installed,
    and the running progress activity it reports its live figures into."""
    package_root = str(Path(pytest_serving.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.update(progress.child_environment())
    return env


def run_processes(
    commands: Sequence[tuple[str, list[str]]],
    work_dir: Path,
    deadline_s: float,
    on_window_open: Callable[[], None] | None = None,
) -> None:
    """Start all processes, wait until all exit; on a failure, timeout or interruption stop them all and raise."""
    processes: list[LocustProcess] = []
    try:
        env = child_environment()
        for role, argv in commands:
            log_path = work_dir / f"locust-{role}.log"
            with open(log_path, "wb") as log:
                popen = subprocess.Popen(
                    argv, cwd=work_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            processes.append(LocustProcess(role, popen, log_path))
        wait_for(
            processes, time.monotonic() + deadline_s, work_dir / WINDOW_OPEN_FILE, on_window_open, work_dir / FAULT_FILE
        )
    finally:
        for process in processes:
            process.stop()


def wait_for(
    processes: Sequence[LocustProcess],
    deadline: float,
    window_open_file: Path | None = None,
    on_window_open: Callable[[], None] | None = None,
    fault_file: Path | None = None,
) -> None:
    """Until every process exited cleanly; a ``fault_file`` (the master's named failure) or a failed process raises."""
    while True:
        if on_window_open is not None and window_open_file is not None and window_open_file.exists():
            on_window_open()
            on_window_open = None
        if fault_file is not None and fault_file.exists():
            raise LoadError(fault_file.read_text())
        for process in processes:
            code = process.popen.poll()
            if code not in (None, 0):
                raise LoadError(f"Locust {process.role} exited with code {code}; its log:\n{process.log_excerpt()}")
        if all(process.popen.poll() == 0 for process in processes):
            return
        if time.monotonic() > deadline:
            running = [process for process in processes if process.popen.poll() is None]
            raise LoadError(
                f"Locust {', '.join(process.role for process in running)} still running at its time limit; "
                f"log of {running[0].role}:\n{running[0].log_excerpt()}"
            )
        time.sleep(POLL_INTERVAL_S)
