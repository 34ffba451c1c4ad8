"""README's two commands are the ones this repository runs: `.ci/run` is command 2, nothing cleverer."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The two commands") : text.index("## Three examples")]
    return re.findall(r"```bash\n(.+?)\n```", section, re.S)


def test_ci_runs_readme_command_2():
    first, second = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == second


def test_command_1_runs_the_serving_suites_only_with_a_report():
    first, _ = readme_commands()
    assert "--serving=all" in first and "--serving-only" in first and "--serving-report=" in first


def test_readme_stays_short_and_holds_no_estimate():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "TIMING_" not in text and "estimate" not in text.lower()
