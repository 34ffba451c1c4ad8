#!/usr/bin/env python3
"""Write docs/options.md from ``pytest_serving.settings``, so the options reference never drifts from the code.

    python scripts/options_reference.py          # rewrite docs/options.md
    python scripts/options_reference.py --check  # exit 1 when docs/options.md is out of date

Options come from ``settings.all_options()`` (the plugin's table and the target classes' own);
ini-only keys from what ``settings.register`` declares; environment variables read outside the
option table from ``EXTRA_ENVIRONMENT`` below and the target classes' ``reads_environment`` (the
unit test checks that every ``PYTEST_SERVING_*`` name in the package is documented).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_serving import settings
from pytest_serving.settings import Option
from pytest_serving.targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "options.md"
COMMAND = "python scripts/options_reference.py"

#: Environment variables the plugin reads outside the option table: name -> (default, what it does).
#: Targets list their own (``ServingTarget.reads_environment``); ``environment()`` adds them.
EXTRA_ENVIRONMENT: dict[str, tuple[str, str]] = {
    "PYTEST_SERVING_SESSION_ID": (
        "a random id per pytest process tree",
        (
            "labels every container of the run (`io.pytest-serving.session`); xdist workers inherit it, so "
            "one run's cleanup removes only its own containers"
        ),
    ),
    "PYTEST_SERVING_SESSION_CONTROLLER": (
        "set by the first pytest process of a session",
        (
            "`<session id>/<pid>` of the pytest process whose end removes all of the session's containers; "
            "a pytest that a test starts in a subprocess inherits it and removes only its own containers"
        ),
    ),
    "PYTEST_SERVING_PROGRESS": (
        "set by the first pytest process of a session",
        (
            "the events file that every process of the session (xdist workers, Locust processes, a pytest a "
            "test starts) appends its progress to; the first process prints it as `[serving HH:MM:SS]` lines"
        ),
    ),
    "PYTEST_SERVING_ACTIVITY": (
        "set for each Locust process",
        "the progress activity (a load phase) whose running rate and p95 that process reports",
    ),
    "PYTEST_SERVING_CACHE": (
        "`~/.cache/pytest-serving`",
        (
            "where `pytest-serving build-images` keeps its build contexts and the lock files that let one "
            "process per host build an image, and where built-in models' ONNX exports and every target's "
            "deployment of a model card are cached (`exports/`, `deployments/`)"
        ),
    ),
    "PYTEST_SERVING_INTRA_OP_THREADS": (
        "the CPUs the process may use, at most 4",
        (
            "onnxruntime's thread count in every server handler and the in-process reference (set it in a "
            "container's environment through your own image or model repository)"
        ),
    ),
    "TESTCONTAINERS_RYUK_DISABLED": (
        "`true` (set by the plugin if unset)",
        (
            "testcontainers' Ryuk reaper is an image from a registry; the plugin removes its containers "
            "itself. Set `false` to run Ryuk as well"
        ),
    ),
}


def environment() -> dict[str, tuple[str, str]]:
    """The plugin's environment variables, then those each target class reads."""
    variables = dict(EXTRA_ENVIRONMENT)
    for target in TARGETS.values():
        variables.update(target.reads_environment)
    return variables


INI_EXAMPLE = """\
```ini
# pytest.ini (or [tool.pytest.ini_options] in pyproject.toml, or [tool:pytest] in setup.cfg)
[pytest]
serving = triton,torchserve
serving_report = out
serving_samples = data/imagenet-val
serving_samples_limit = 50
serving_strict = true
serving_budgets =
    p95_ms = 1000
    triton.p95_ms = 800
    max_failure_rate = 0
```"""


class _IniRecorder:
    """Stands in for pytest's parser to record the ini keys ``settings.register`` declares."""

    def __init__(self) -> None:
        self.ini: dict[str, tuple[str, str | None]] = {}

    def getgroup(self, name: str, description: str = "") -> _IniRecorder:
        return self

    def addoption(self, *names: str, **attributes: object) -> None:
        """Command-line options are documented from ``settings.all_options()`` directly."""

    def addini(self, name: str, help: str, type: str | None = None, default: object = None) -> None:
        self.ini[name] = (help, type)


def ini_only_keys() -> dict[str, tuple[str, str | None]]:
    """Ini keys that have no command-line option: name -> (help, ini type)."""
    recorder = _IniRecorder()
    settings.register(recorder)
    option_keys = {option.dest for option in settings.all_options()}
    return {name: value for name, value in recorder.ini.items() if name not in option_keys}


def _cell(text: str) -> str:
    """Help text as a table cell: pipes would split it, '<wnid>' would read as HTML, '*' as emphasis."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def _kind(option: Option) -> str:
    if option.flag:
        return "flag"
    return "repeatable" if option.multiple else "value"


def _default(option: Option) -> str:
    if option.flag:
        return "off"
    return f"`{option.default}`" if option.default is not None else "—"


def render() -> str:
    """The whole of docs/options.md."""
    lines = [
        "# Options reference",
        "",
        f"<!-- Generated by {COMMAND} from pytest_serving/settings.py: do not edit by hand. -->",
        "",
        (
            "Every option is a command-line flag, an environment variable and an ini key. Precedence: "
            "command line, then environment variable, then ini key, then default."
        ),
        "",
        "- **value** options take one value everywhere.",
        (
            "- **flag** options take no value on the command line; as environment variables `1`, `true`, "
            "`yes` or `on` (any case) switch them on; as ini keys `true`/`false`."
        ),
        (
            "- **repeatable** options (`NAME=VALUE`) are given once per pair on the command line or as a "
            "comma list; as environment variables a list separated by `,` or `;`; as ini keys one pair per "
            "line (or a comma list)."
        ),
        "",
        "| command line | environment variable | ini key | kind | default | meaning |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `--{option.name}` | `{option.env}` | `{option.dest}` | {_kind(option)} | {_default(option)} "
        f"| {_cell(option.help)} |"
        for option in settings.all_options()
    ]
    lines += [
        "",
        "## Ini-only keys",
        "",
        "| ini key | type | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {kind or 'string'} | {_cell(help)} |" for name, (help, kind) in ini_only_keys().items()]
    lines += [
        "",
        (
            "`--serving-budgets-file` (TOML or JSON: top-level fields for every target, one table per target) "
            "overrides `serving_budgets`; a target's own line beats a general one, and both override the "
            "budgets a test sets on `@pytest.mark.serving_load(...)`."
        ),
        "",
        "## Other environment variables",
        "",
        "| environment variable | default | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {default} | {_cell(meaning)} |" for name, (default, meaning) in environment().items()]
    lines += ["", "## Example", "", INI_EXAMPLE, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/options.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
