"""Record the interleaved windows of an identical candidate on a real server, request by request.

One server of ``--target`` hosts the same card twice; one look of ``--pairs`` interleaved pairs runs
in one load process (the gate's own ``measure_look``), and every window's successful latencies and
answer rate go to ``--out`` (.npz): the data from which ``release_statistic.py`` compares window
statistics and the unit tests simulate the gate's false alarms and power
(tests/unit/data/release_windows_<target>.npz).

    PYTHONPATH=.:benchmarks python3 benchmarks/release_windows.py --target triton --pairs 60 \\
        --samples ../shared/imagenet-samples --samples-limit 20 --out tests/unit/data/release_windows_triton.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from loopback import command_line, load_average, machine_line
from suite_time import benchmark_settings

from pytest_serving.deployment import deploy
from pytest_serving.model.card import load_card
from pytest_serving.model.reference import ReferenceClassifier
from pytest_serving.release.options import ReleaseSettings
from pytest_serving.release.side_by_side import CANDIDATE, CURRENT, Version, measure_look
from pytest_serving.samples import discover
from pytest_serving.settings import OPTIONS
from pytest_serving.verdicts.verdict import ReleaseLimits

DEFAULTS = {option.name: option.default for option in OPTIONS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="triton")
    parser.add_argument("--card", default="efficientnet_lite0")
    parser.add_argument("--samples", type=Path, default=Path("../shared/imagenet-samples"))
    parser.add_argument("--samples-limit", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--window", type=float, default=float(DEFAULTS["serving-release-window"]))
    parser.add_argument("--users", type=int, default=int(DEFAULTS["serving-release-users"]))
    parser.add_argument("--out", type=Path, default=Path("release-windows.npz"))
    args = parser.parse_args(argv)
    card = load_card(args.card)
    settings = replace(benchmark_settings(args.target, 600.0), model=args.card)
    release = ReleaseSettings(card, ReleaseLimits(), args.pairs, args.pairs, args.window, args.users, False, 0.0)
    samples = discover(args.samples, None, args.samples_limit)
    predictions = ReferenceClassifier(card, threads=1).predict_many([sample.data for sample in samples])
    reference = {sample.id: prediction for sample, prediction in zip(samples, predictions)}
    reproduce = command_line("benchmarks/release_windows.py", args)
    print(f"{machine_line()}\nReproduce: {reproduce}", flush=True)
    with deploy(args.target, settings, candidate=card) as deployment:
        target, endpoint = deployment.target, deployment.endpoint
        versions = tuple(
            Version(role, card.name, version, target.version_protocol(version), reference)
            for role, version in zip((CURRENT, CANDIDATE), target.release_versions)
        )
        started = time.monotonic()
        windows, warmup_s, warmup_note = measure_look(endpoint, versions, samples, release, range(args.pairs))
        seconds = time.monotonic() - started
    latencies = [np.round(window.latency_ms, 2).astype(np.float32) for window in windows]
    meta = {
        "target": args.target,
        "window_s": args.window,
        "users": args.users,
        "look_s": round(seconds, 1),
        "warmup_s": round(warmup_s, 1),
        "warmup_note": warmup_note,
        "machine": machine_line(),
        "reproduce": reproduce,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as file:
        np.savez_compressed(
            file,
            role=np.array([window.role for window in windows]),
            rps=np.array([window.rps for window in windows]),
            failures=np.array([window.failures for window in windows]),
            sizes=np.array([len(values) for values in latencies]),
            latency_ms=np.concatenate(latencies),
            meta=np.array(json.dumps(meta)),
        )
    print(json.dumps(meta), f"load average {load_average()}", sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
