"""The smoke phase of every target in a results.json as a Markdown table: requests, rate, how long the
measured window grew, the stability verdict and the memory growth with its interval.

    pytest --serving=all --serving-only --serving-report=out
    python benchmarks/smoke_table.py out/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(results: dict) -> list[str]:
    lines = [
        "| target | n | rps | measured s | warm-up s | stability | MB per 1000 (99 % interval) | verdict |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for target, data in sorted(results.get("targets", {}).items()):
        for entry in data.get("load", []):
            if entry.get("kind") != "phase" or "test_smoke" not in str(entry.get("test", "")):
                continue
            resources = entry.get("resources") or {}
            growth, interval = resources.get("memory_growth_mb_per_1k"), resources.get("memory_growth_interval")
            shown = "-" if growth is None else f"{growth:.1f}"
            if interval:
                shown += f" ({interval[0]:.1f} to {interval[1]:.1f})"
            lines.append(
                f"| {target} | {entry['n']} | {entry['rps']:.1f} | {entry['duration']:.1f} | "
                f"{entry.get('warmup_s') or 0:.1f} | {entry['stability']} | {shown} | {entry.get('verdict', '')} |"
            )
    return lines


if __name__ == "__main__":
    print("\n".join(rows(json.loads(Path(sys.argv[1]).read_text()))))
