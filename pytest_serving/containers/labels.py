"""Labels that mark every container this plugin starts, so cleanup can always find them."""

from __future__ import annotations

import os
import uuid

from .. import PROJECT_LABEL

PROJECT = "pytest-serving"
SESSION_LABEL = "io.pytest-serving.session"
TARGET_LABEL = "io.pytest-serving.target"
PID_LABEL = "io.pytest-serving.pid"
#: One id per container, known before Docker answers: finds a container whose creation was interrupted.
INSTANCE_LABEL = "io.pytest-serving.instance"

#: One id per pytest process tree; xdist workers inherit it through the environment.
SESSION_ID = os.environ.setdefault("PYTEST_SERVING_SESSION_ID", uuid.uuid4().hex[:12])
#: ``<session id>/<pid>`` of the pytest process that controls the session; set by that process, and
#: inherited by its xdist workers and by any pytest a test starts in a subprocess, who so know they
#: share the session without controlling it.
CONTROLLER_VARIABLE = "PYTEST_SERVING_SESSION_CONTROLLER"


def container_labels(target: str, instance: str) -> dict[str, str]:
    return {
        PROJECT_LABEL: PROJECT,
        SESSION_LABEL: SESSION_ID,
        TARGET_LABEL: target,
        PID_LABEL: str(os.getpid()),
        INSTANCE_LABEL: instance,
    }
