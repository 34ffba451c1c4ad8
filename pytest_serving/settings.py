"""Every option of the plugin, settable on the command line, as an ini key or as an environment variable.

Precedence: command line, then ``PYTEST_SERVING_*`` environment variable, then ini key, then default.
The option table, with the options each target class declares (``ServingTarget.extra_options``),
is the single source for ``pytest --help``, the ini keys, the docs and every default.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pytest

from .model.card import CardError, ModelCard, load_card
from .targets import TARGETS
from .types import Option

__all__ = ["OPTIONS", "LoadSettings", "Option", "Settings", "all_options", "register", "selected_targets"]


OPTIONS: tuple[Option, ...] = (
    Option("serving", "serving targets to test: NAME[,NAME...] or 'all'; without it no serving test is collected"),
    Option(
        "serving-samples",
        "directory of labelled images: ImageFolder '<label>/*.jpg' or flat '<label>_*.jpg' files; labels are "
        "the card's (ImageNet cards: wnids, with classes.tsv)",
    ),
    Option("serving-samples-csv", "CSV file of 'path,label' rows (paths relative to the file): the samples"),
    Option(
        "serving-classes", "ImageNet cards: classes.tsv (index, wnid, name); default: classes.tsv beside the samples"
    ),
    Option("serving-samples-limit", "use at most N samples (evenly spread over the sorted list)"),
    Option("serving-image", "NAME=IMAGE: run target NAME from IMAGE instead of its default", multiple=True),
    Option("serving-url", "NAME=URL: test an already running server instead of booting a container", multiple=True),
    Option("serving-report", "directory for results.json and the report"),
    Option("serving-gpus", "'all' or a count: give the containers GPUs (Docker device request); default CPU"),
    Option("serving-startup-timeout", "seconds to wait for a server's model to be ready (> 0)", default="600"),
    Option(
        "serving-model",
        "model card to deploy: a card.toml path, or a built-in card: efficientnet_lite0 (default), resnet50",
        default="efficientnet_lite0",
    ),
    Option("serving-model-repo", "your own model repository root (one folder per target, as in model_repo/)"),
    Option(
        "serving-max-probability-difference",
        "largest difference tolerated between a server's top-5 probabilities and the in-process model's, "
        "per sample (0 to 1)",
        default="1e-3",
    ),
    Option("serving-load", "built-in load tests: smoke (default), sweep or off", default="smoke"),
    Option("serving-load-workers", "Locust worker processes per phase (0: one local process; >= 0)", default="0"),
    Option(
        "serving-load-remote-workers",
        "Locust workers per phase started elsewhere by `pytest-serving load-worker --master HOST:PORT` (>= 0); "
        "they attach to the master at --serving-load-master-bind and get plan and results over Locust's channel",
        default="0",
    ),
    Option(
        "serving-load-master-bind",
        "HOST:PORT the phase's Locust master listens on for remote workers (default 127.0.0.1:5557, loopback "
        "only: give an address the workers reach, e.g. 0.0.0.0:5557)",
    ),
    Option(
        "serving-load-worker-timeout",
        "seconds a phase waits for its remote workers before failing with the address it waited on (> 0; default 60)",
    ),
    Option(
        "serving-sweep-levels",
        "load levels of a sweep: user counts, or requests/s with an open-loop --serving-sweep-arrival",
        default="10,20,30,40,50,60,70,80,90,100",
    ),
    Option(
        "serving-sweep-arrival",
        "users (closed loop, as the study) or poisson / constant (open loop: levels are requests/s)",
        default="users",
    ),
    Option(
        "serving-sweep-duration",
        "measured seconds per sweep level (> 0: 0 is a usage error, a zero-length measurement measures nothing)",
        default="60",
    ),
    Option("serving-sweep-warmup", "warm-up seconds before each sweep level (0: no warm-up)", default="10"),
    Option("serving-sweep-scenario", "fresh (new container per level), warm, or both", default="both"),
    Option("serving-sweep-repeats", "repeats per sweep level (the median is reported; >= 1)", default="1"),
    Option(
        "serving-soak",
        "seconds of one steady closed-loop soak phase per target, gated on memory growth per 1000 requests "
        "(budget max_memory_growth_mb_per_1k, default 50); default: no soak (> 0 when given)",
    ),
    Option("serving-budgets-file", "TOML/JSON file of load budgets per target (overrides ini serving_budgets)"),
    Option("serving-baseline", "results.json of a previous run: fail on p95/throughput regressions against it"),
    Option(
        "serving-max-regression",
        "percent of p95 or throughput regression tolerated against the baseline (0: none at all)",
        default="10",
    ),
    Option(
        "serving-candidate",
        "model card of a candidate version (TOML path or built-in name, same labels as the current model): "
        "deploy both in one server and decide the release side by side",
    ),
    Option(
        "serving-max-accuracy-drop",
        "percentage points of top-1 the candidate may lose against the current model on the same samples",
        default="1",
    ),
    Option("serving-min-agreement", "fraction of samples on which both versions must give the same top-1 (0-1)"),
    Option(
        "serving-max-latency-regression",
        "percent the candidate's p95 may rise (or throughput fall) before the release fails",
        default="10",
    ),
    Option(
        "serving-release-strict",
        "fail inconclusive comparisons too (release side by side, and --serving-baseline)",
        flag=True,
    ),
    Option("serving-release-windows", "interleaved latency windows per version (at least 5)", default="10"),
    Option(
        "serving-release-max-windows",
        "windows per version the comparison may grow to while a speed verdict is inconclusive "
        "(equal to --serving-release-windows: a fixed number)",
        default="40",
    ),
    Option("serving-release-window", "measured seconds per latency window", default="3"),
    Option("serving-release-users", "closed-loop users of the latency windows", default="4"),
    Option("serving-rollout", "switch from current to candidate under load: on or off", default="on"),
    Option(
        "serving-rollout-grace",
        "seconds after the switch completes from which a request answered by the old version is stale",
        default="2",
    ),
    Option(
        "serving-only",
        "collect only the built-in serving suites (and paths given on the command line), not the tests that "
        "testpaths or the current folder would bring: the serving job alone, in a project with tests of its own",
        flag=True,
    ),
    Option(
        "serving-rollout-rate",
        "requests/s of the rollout's open-loop load (default: half the rate the current version sustained "
        "side by side, halved once more when the server does not sustain it)",
    ),
    Option(
        "serving-rollout-max-p99-ms",
        "fail the rollout when p99 during the switch exceeds this many ms (per target in the budgets: "
        "[target.]rollout_max_p99_ms)",
    ),
    Option(
        "serving-rollout-max-p99-ratio",
        "fail the rollout when p99 during the switch exceeds this multiple of the steady p99 before it "
        "(per target in the budgets: [target.]rollout_max_p99_ratio)",
    ),
    Option("serving-allow-remote-load", "allow load on servers that are not loopback and not started here", flag=True),
    Option(
        "serving-strict",
        "turn 'Docker or image missing' skips into failures (CI sets this so it always proves the real path)",
        flag=True,
    ),
)


def all_options() -> tuple[Option, ...]:
    """The plugin's own options, then those the target classes declare (each once, in target order).

    A target's options are named ``serving-<target>-...`` or shared by the classes of one system
    (KServe's two targets); one that reuses a plugin option's name is a programming error.
    """
    options = {option.name: option for option in OPTIONS}
    for target in TARGETS.values():
        for option in target.extra_options:
            if options.setdefault(option.name, option) != option:
                raise ValueError(f"{target.__name__} declares option --{option.name}, already declared differently")
    return tuple(options.values())


def target_option_names() -> tuple[str, ...]:
    """``dest`` names of the options the target classes declare, handed to targets as ``TargetOptions.extra``."""
    own = {option.name for option in OPTIONS}
    return tuple(option.dest for option in all_options() if option.name not in own)


def register(parser: pytest.Parser) -> None:
    """Declare every option (the plugin's and the targets') on the command line and as an ini key."""
    group = parser.getgroup("serving", "model serving (pytest-serving)")
    parser.addini(
        "serving_budgets",
        "load budgets, one '[target.]field = value' per line (e.g. 'triton.p95_ms = 800')",
        type="linelist",
        default=[],
    )
    for option in all_options():
        help_text = f"{option.help} [env {option.env}, ini {option.dest}]"
        if option.flag:
            group.addoption(f"--{option.name}", action="store_true", default=None, dest=option.dest, help=help_text)
            parser.addini(option.dest, option.help, type="bool", default=False)
        elif option.multiple:
            group.addoption(f"--{option.name}", action="append", default=None, dest=option.dest, help=help_text)
            parser.addini(option.dest, option.help, type="linelist", default=[])
        else:
            group.addoption(f"--{option.name}", default=None, dest=option.dest, help=help_text)
            parser.addini(option.dest, option.help, default=option.default)


def raw_value(config: pytest.Config, option: Option) -> object:
    """The option's value by precedence: command line, environment, ini, then ``option.default``: the one
    place a default is applied."""
    value = config.getoption(option.dest)
    if value is not None:
        return value
    env = os.environ.get(option.env)
    if env is not None:
        if option.flag:
            return env.strip().lower() in ("1", "true", "yes", "on")
        if option.multiple:
            return [item for item in env.replace(";", ",").split(",") if item.strip()]
        return env
    ini = config.getini(option.dest)
    if option.flag:
        return bool(ini)
    if ini not in ("", None, []):
        return ini
    return [] if option.multiple else option.default


def parse_assignments(values: list[str], what: str) -> dict[str, str]:
    """``NAME=VALUE`` pairs (from repeated options, comma lists or ini lines) to a dict."""
    pairs: dict[str, str] = {}
    for item in values:
        for part in filter(str.strip, item.split(",")):
            name, sep, value = part.strip().partition("=")
            if not sep or not name or not value:
                raise pytest.UsageError(f"{what}: expected NAME=VALUE, got {part!r}")
            pairs[name.strip()] = value.strip()
    return pairs


def parse_targets(value: str | None, known: list[str]) -> list[str]:
    """``all`` or a comma list of known target names; unknown names are a usage error."""
    if not value:
        return []
    names = [name.strip() for name in value.split(",") if name.strip()]
    if "all" in names:
        return list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise pytest.UsageError(f"--serving: unknown target(s) {', '.join(unknown)}; known: {', '.join(known)}, all")
    return list(dict.fromkeys(names))


def parse_gpus(value: str | None) -> str | None:
    if value in (None, "", "0", "none"):
        return None
    if value == "all" or (value.isdigit() and int(value) > 0):
        return value
    raise pytest.UsageError(f"--serving-gpus: expected 'all' or a positive count, got {value!r}")


def parse_probability_difference(values: Mapping[str, object]) -> float:
    """``--serving-max-probability-difference``: a number in [0, 1] (top-5 probabilities are in [0, 1])."""
    return float(_number(values, "serving_max_probability_difference", float, minimum=0, maximum=1))


LOAD_MODES = ("smoke", "sweep", "off")
SWEEP_ARRIVALS = ("users", "poisson", "constant")
SCENARIOS = {"fresh": ("fresh",), "warm": ("warm",), "both": ("fresh", "warm")}


@dataclass(frozen=True)
class LoadSettings:
    """How the load tests run: mode, Locust workers, sweep shape, budgets and the regression gate."""

    mode: str
    workers: int
    sweep_levels: tuple[float, ...]
    sweep_arrival: str
    sweep_duration: float
    sweep_warmup: float
    sweep_scenarios: tuple[str, ...]
    sweep_repeats: int
    budgets_file: Path | None
    baseline: Path | None
    max_regression_pct: float
    allow_remote: bool
    #: Measured seconds of the soak phase (--serving-soak); None: no soak.
    soak: float | None


@dataclass(frozen=True)
class Settings:
    """The parsed options, one object for fixtures and hooks."""

    targets: list[str]
    samples: Path | None
    samples_csv: Path | None
    classes: Path | None
    samples_limit: int | None
    images: dict[str, str]
    urls: dict[str, str]
    report_dir: Path | None
    gpus: str | None
    startup_timeout: float
    #: ``--serving-model`` as given: a card path or a built-in card's name (``card`` loads it).
    model: str
    model_repo: Path | None
    strict: bool
    #: ``--serving-only``: the built-in suites without the project's own tests.
    suites_only: bool = False
    #: ``--serving-max-probability-difference``; built in code, the option's default.
    max_probability_difference: float = field(default_factory=lambda: parse_probability_difference(default_values()))
    load: LoadSettings = field(default_factory=lambda: default_load_settings())
    #: Values of the options the target classes declare (``extra_options``), handed to targets as TargetOptions.extra.
    target_extra: dict[str, str] = field(default_factory=dict)

    @cached_property
    def card(self) -> ModelCard:
        """The model card, validated against its ONNX; a usage error names the field that is wrong."""
        try:
            return load_card(self.model)
        except CardError as error:
            raise pytest.UsageError(str(error)) from None

    @classmethod
    def from_config(cls, config: pytest.Config, known_targets: list[str]) -> Settings:
        values = {option.dest: raw_value(config, option) for option in all_options()}

        path = functools.partial(_path, values)
        number = functools.partial(_number, values)
        limit = number("serving_samples_limit", int, above=0)
        images = parse_assignments(values["serving_image"] or [], "--serving-image")
        urls = parse_assignments(values["serving_url"] or [], "--serving-url")
        for name in [*images, *urls]:
            if name not in known_targets:
                raise pytest.UsageError(f"unknown target {name!r}; known: {', '.join(known_targets)}")
        return cls(
            targets=parse_targets(values["serving"], known_targets),
            samples=path("serving_samples"),
            samples_csv=path("serving_samples_csv"),
            classes=path("serving_classes"),
            samples_limit=limit,
            images=images,
            urls=urls,
            report_dir=path("serving_report"),
            gpus=parse_gpus(values["serving_gpus"]),
            startup_timeout=float(number("serving_startup_timeout", float, above=0)),
            model=str(values["serving_model"]),
            model_repo=path("serving_model_repo"),
            strict=bool(values["serving_strict"]),
            suites_only=bool(values["serving_only"]),
            max_probability_difference=parse_probability_difference(values),
            target_extra={dest: str(values[dest]) for dest in target_option_names() if values[dest] is not None},
            load=_load_settings(values, path, number),
        )


def selected_targets(settings: Settings) -> list[str]:
    """The targets this session tests: ``--serving`` names, then those given only by ``--serving-url``."""
    return list(dict.fromkeys([*settings.targets, *settings.urls]))


def _path(values: Mapping[str, object], key: str) -> Path | None:
    return Path(str(values[key])).expanduser() if values[key] else None


def _number(
    values: Mapping[str, object],
    key: str,
    kind: type,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> int | float | None:
    """The option's number (None when unset and without a default), refused when not a number, below
    ``minimum``, at or below ``above`` or over ``maximum`` with a usage error naming the option."""
    if values[key] in (None, ""):
        return None
    flag = f"--{key.replace('_', '-')}"
    try:
        value = kind(values[key])
    except ValueError:
        raise pytest.UsageError(f"{flag}: not a number: {values[key]!r}") from None
    if isinstance(value, float) and math.isnan(value):
        raise pytest.UsageError(f"{flag}: not a number: {values[key]!r}")
    if minimum is not None and value < minimum:
        raise pytest.UsageError(f"{flag}: expected a number >= {minimum:g}, got {values[key]!r}")
    if above is not None and value <= above:
        raise pytest.UsageError(f"{flag}: expected a number > {above:g}, got {values[key]!r}")
    if maximum is not None and value > maximum:
        raise pytest.UsageError(f"{flag}: expected a number <= {maximum:g}, got {values[key]!r}")
    return value


def default_values() -> dict[str, object]:
    """Every plugin option's default, as the command line would give it: for settings built in code
    (benchmarks) without a second copy of any default."""
    return {option.dest: [] if option.multiple else False if option.flag else option.default for option in OPTIONS}


def default_load_settings() -> LoadSettings:
    """The load settings the options' defaults give, parsed as from the command line."""
    values = default_values()
    return _load_settings(values, functools.partial(_path, values), functools.partial(_number, values))


def _load_settings(
    values: Mapping[str, object],
    path: Callable[[str], Path | None],
    number: Callable[..., int | float | None],
) -> LoadSettings:
    mode = str(values["serving_load"])
    if mode not in LOAD_MODES:
        raise pytest.UsageError(f"--serving-load: expected one of {', '.join(LOAD_MODES)}, got {mode!r}")
    scenario = str(values["serving_sweep_scenario"])
    if scenario not in SCENARIOS:
        raise pytest.UsageError(f"--serving-sweep-scenario: expected fresh, warm or both, got {scenario!r}")
    arrival = str(values["serving_sweep_arrival"])
    if arrival not in SWEEP_ARRIVALS:
        raise pytest.UsageError(
            f"--serving-sweep-arrival: expected one of {', '.join(SWEEP_ARRIVALS)}, got {arrival!r}"
        )
    unit, parse = ("user counts", int) if arrival == "users" else ("requests/s", float)
    try:
        levels = tuple(parse(level) for level in str(values["serving_sweep_levels"]).split(",") if level.strip())
    except ValueError:
        raise pytest.UsageError(
            f"--serving-sweep-levels: not a list of {unit}: {values['serving_sweep_levels']!r}"
        ) from None
    if not levels or min(levels) <= 0 or (arrival == "users" and min(levels) < 1):
        raise pytest.UsageError(f"--serving-sweep-levels: need positive {unit}")
    return LoadSettings(
        mode=mode,
        workers=int(number("serving_load_workers", int, minimum=0)),
        sweep_levels=levels,
        sweep_arrival=arrival,
        # A zero-length measurement has no requests to take percentiles or a rate of.
        sweep_duration=float(number("serving_sweep_duration", float, above=0)),
        sweep_warmup=float(number("serving_sweep_warmup", float, minimum=0)),
        sweep_scenarios=SCENARIOS[scenario],
        sweep_repeats=int(number("serving_sweep_repeats", int, minimum=1)),
        budgets_file=path("serving_budgets_file"),
        baseline=path("serving_baseline"),
        max_regression_pct=float(number("serving_max_regression", float, minimum=0)),
        allow_remote=bool(values["serving_allow_remote_load"]),
        soak=number("serving_soak", float, above=0),
    )
