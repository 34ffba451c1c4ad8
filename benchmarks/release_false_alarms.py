"""How often the release gate cries wolf: the identical candidate, compared again and again.

One server of ``--target`` (default triton) hosts the same card twice (Triton: versions 1 and 2 of
one model; KServe: two models); the release
comparison (every sample on both, then interleaved closed-loop windows) runs ``--runs`` times in a
row on it, and the verdicts are counted. The goal is no ``fail``: an identical candidate may be
inconclusive on a noisy machine, never worse.

    PYTHONPATH=.:benchmarks python3 benchmarks/release_false_alarms.py --runs 10 \\
        --samples ../shared/imagenet-samples --samples-limit 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from loopback import command_line, load_average, machine_line
from suite_time import benchmark_settings

from pytest_serving.deployment import deploy
from pytest_serving.model.card import load_card
from pytest_serving.model.reference import ReferenceClassifier
from pytest_serving.release.options import ReleaseSettings
from pytest_serving.release.side_by_side import CANDIDATE, CURRENT, Version, compare
from pytest_serving.samples import discover
from pytest_serving.settings import OPTIONS
from pytest_serving.verdicts.verdict import ReleaseLimits

#: The plugin's own defaults, so a run of this script measures the gate as users get it.
DEFAULTS = {option.name: option.default for option in OPTIONS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--target", default="triton", help="a target that hosts a candidate (triton, kserve, ...)")
    parser.add_argument("--card", default="efficientnet_lite0")
    parser.add_argument("--samples", type=Path, default=Path("../shared/imagenet-samples"))
    parser.add_argument("--samples-limit", type=int, default=20)
    parser.add_argument("--windows", type=int, default=int(DEFAULTS["serving-release-windows"]))
    parser.add_argument("--max-windows", type=int, default=int(DEFAULTS["serving-release-max-windows"]))
    parser.add_argument("--window", type=float, default=float(DEFAULTS["serving-release-window"]))
    parser.add_argument("--users", type=int, default=int(DEFAULTS["serving-release-users"]))
    parser.add_argument("--out", type=Path, default=Path("release-false-alarms.json"))
    args = parser.parse_args(argv)
    card = load_card(args.card)
    settings = replace(benchmark_settings(args.target, 600.0), model=args.card)
    release = ReleaseSettings(
        candidate=card,
        limits=ReleaseLimits(),
        windows=args.windows,
        max_windows=args.max_windows,
        window_s=args.window,
        users=args.users,
        rollout=False,
        rollout_grace_s=0.0,
    )
    samples = discover(args.samples, None, args.samples_limit)
    predictions = ReferenceClassifier(card, threads=1).predict_many([sample.data for sample in samples])
    reference = {sample.id: prediction for sample, prediction in zip(samples, predictions)}
    print(f"{machine_line()}\nReproduce: {command_line('benchmarks/release_false_alarms.py', args)}", flush=True)
    verdicts: Counter[str] = Counter()
    runs = []
    with deploy(args.target, settings, candidate=card) as deployment:
        target, endpoint = deployment.target, deployment.endpoint
        versions = tuple(
            Version(role, card.name, version, target.version_protocol(version), reference)
            for role, version in zip((CURRENT, CANDIDATE), target.release_versions)
        )
        for run in range(args.runs):
            started = time.monotonic()
            record = compare(endpoint, versions, samples, release)
            verdicts[record.verdict] += 1
            line = {
                "run": run,
                "verdict": record.verdict,
                "seconds": round(time.monotonic() - started),
                "load_average": load_average(),
                **{
                    key: {
                        "ratio": round(record.latency[key]["ratio"], 3),
                        "ci": [round(record.latency[key]["low"], 3), round(record.latency[key]["high"], 3)],
                        "verdict": record.latency[key]["verdict"],
                        "windows_needed": record.latency[key]["windows_needed"],
                    }
                    for key in ("p95", "throughput")
                },
                "accuracy": record.accuracy["verdict"],
                "looks": record.latency["looks"],
                "pairs": len(record.latency["windows"]) // 2,
                "windows": record.latency["windows"],
            }
            runs.append(line)
            print(json.dumps({key: value for key, value in line.items() if key != "windows"}), flush=True)
            args.out.write_text(json.dumps({"verdicts": dict(verdicts), "runs": runs}, indent=1))
    print(f"verdicts over {args.runs} runs: {dict(verdicts)}; load average at the end {load_average()}")
    return 1 if verdicts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
