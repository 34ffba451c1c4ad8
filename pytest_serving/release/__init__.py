"""The release decision: a candidate model against the current one on the same server.

The statistics and verdicts live in ``pytest_serving.verdicts`` (shared with the baseline gate);
here: the options, the side-by-side run (``side_by_side``) and the rollout (``rollout``, ``switch``).
"""
