"""Remove every container the plugin started: at session end, after failures and on signals.

Ryuk (testcontainers' reaper) cannot be pulled on air-gapped machines, so the plugin
keeps its own registry and also sweeps by label, which catches containers whose
Python object was lost (a crashed fixture, a second signal during teardown).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import docker

from .. import PROJECT_LABEL
from .labels import CONTROLLER_VARIABLE, INSTANCE_LABEL, PID_LABEL, PROJECT, SESSION_ID, SESSION_LABEL

_lock = threading.Lock()
_installed = False


def remove_labelled(session_id: str | None = SESSION_ID, pid: int | None = None) -> list[str]:
    """Force-remove containers of one session (every session with ``None``), only those started by
    process ``pid`` if given (an xdist worker must not remove its siblings' servers); names removed."""
    labels = [f"{SESSION_LABEL}={session_id}" if session_id else f"{PROJECT_LABEL}={PROJECT}"]
    if pid is not None:
        labels.append(f"{PID_LABEL}={pid}")
    return _remove_matching(labels)


def _remove_matching(labels: list[str]) -> list[str]:
    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return []
    removed = []
    with _lock:
        for container in client.containers.list(all=True, filters={"label": labels}):
            try:
                container.remove(force=True, v=True)
                removed.append(container.name)
            except docker.errors.NotFound:
                pass
    client.close()
    return removed


def remove_instance(instance: str, wait_s: float = 0.0, poll_s: float = 0.5) -> list[str]:
    """Remove the container labelled ``instance``, waiting up to ``wait_s`` for the daemon to create it."""
    deadline = time.monotonic() + wait_s
    while True:
        removed = _remove_matching([f"{INSTANCE_LABEL}={instance}"])
        if removed or time.monotonic() >= deadline:
            return removed
        time.sleep(poll_s)


def remove_own() -> list[str]:
    """Remove the containers this process started in this session."""
    return remove_labelled(SESSION_ID, pid=os.getpid())


def claim_session() -> None:
    """Make this pytest process the session's controller, unless a process above it already is."""
    if os.environ.get(CONTROLLER_VARIABLE, "").partition("/")[0] != SESSION_ID:
        os.environ[CONTROLLER_VARIABLE] = f"{SESSION_ID}/{os.getpid()}"


def remove_at_session_end() -> list[str]:
    """The session's controller removes every container of the session (its xdist workers' too); a
    pytest that a test started in a subprocess shares the session id but removes only its own, so
    that it never takes away the servers the tests around it are still using."""
    if os.environ.get(CONTROLLER_VARIABLE) == f"{SESSION_ID}/{os.getpid()}":
        return remove_labelled(SESSION_ID)
    return remove_own()


def install_handlers() -> None:
    """Sweep this process's containers at exit and on SIGTERM/SIGHUP (SIGINT unwinds through pytest)."""
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(remove_own)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(signum)
        signal.signal(signum, _chain(signum, previous))


def _chain(signum: int, previous: object) -> Callable[[int, FrameType | None], None]:
    def handler(received: int, frame: FrameType | None) -> None:
        remove_own()
        if callable(previous):
            previous(received, frame)
        else:
            # Like Ctrl-C: pytest stops the session and runs every teardown (SystemExit would only
            # fail the current test and carry on).
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    return handler
