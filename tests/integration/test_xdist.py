"""Under pytest-xdist each target boots once, whatever the number of workers (Docker's own events prove it),
and the controller prints the workers' progress."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter

from pytest_serving.containers.labels import SESSION_LABEL, TARGET_LABEL


def test_three_workers_boot_each_target_once_and_clean_up(tmp_path, offline_image, docker_client):
    offline_image("triton")
    session_id = f"xdist-{uuid.uuid4().hex[:8]}"
    started = int(time.time()) - 1
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-n",
            "3",
            "--serving=all",
            "--serving-samples-limit=6",
            "--serving-load=off",
            "-m",
            "serving_contract",
            "-q",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        # An empty progress channel: the inner session owns and prints its own, as a user's would.
        env={**os.environ, "PYTEST_SERVING_SESSION_ID": session_id, "PYTEST_SERVING_PROGRESS": ""},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    events = docker_client.events(
        since=started,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"{SESSION_LABEL}={session_id}"},
    )
    creations = Counter(event["Actor"]["Attributes"][TARGET_LABEL] for event in events)
    assert creations and set(creations.values()) == {1}, creations
    for target in creations:  # -q: one line per target and phase, printed by the controller
        assert re.search(rf"^\[serving \d\d:\d\d:\d\d\] {target} boot .*: started$", result.stdout, re.M), target
        assert re.search(rf"^\[serving \d\d:\d\d:\d\d\] {target} contract tests: started$", result.stdout, re.M)
    assert docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session_id}"}) == []
