"""Release checks this team adds to pytest-serving's contract, robustness and load suites."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.serving


def test_every_label_can_be_answered(serving_client, serving_samples, release_labels):
    """Each class of the release has at least one sample the server puts first: no dead class."""
    answered = {serving_client.classify(sample.data).top1 for sample in serving_samples}
    missing = [label for index, label in enumerate(release_labels) if index not in answered]
    assert not missing, f"no sample is classified as: {', '.join(missing)}"


@pytest.mark.serving_load(users=4, duration=10, warmup=3, p95_ms=2000, max_failure_rate=0.0)
def test_release_latency(serving_load):
    serving_load()
