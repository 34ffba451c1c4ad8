"""Every option of the plugin, settable on the command line, as an ini key or as an environment variable.

Precedence: command line, then ``PYTEST_SERVING_*`` environment variable, then ini key, then default.
The option table is the single source for ``pytest --help``, the ini keys and the docs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pytest

from .model.card import CardError, ModelCard, load_card


@dataclass(frozen=True)
class Option:
    name: str  # command-line name without the leading dashes
    help: str
    default: str | None = None
    flag: bool = False
    multiple: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "PYTEST_" + self.dest.upper()


OPTIONS: tuple[Option, ...] = (
    Option("serving", "serving targets to test: NAME[,NAME...] or 'all'; without it no serving test is collected"),
    Option(
        "serving-samples",
        "directory of labelled images: ImageFolder '<label>/*.jpg' or flat '<label>_*.jpg' files; labels are "
        "the card's (ImageNet cards: wnids, with classes.tsv)",
    ),
    Option("serving-samples-csv", "CSV file of 'path,label' rows (paths relative to the file): the samples"),
    Option("serving-classes", "ImageNet cards: classes.tsv (index, wnid, name); default: classes.tsv beside the samples"),
    Option("serving-samples-limit", "use at most N samples (evenly spread over the sorted list)"),
    Option("serving-image", "NAME=IMAGE: run target NAME from IMAGE instead of its default", multiple=True),
    Option("serving-url", "NAME=URL: test an already running server instead of booting a container", multiple=True),
    Option("serving-report", "directory for results.json and the report"),
    Option("serving-gpus", "'all' or a count: give the containers GPUs (Docker device request); default CPU"),
    Option("serving-startup-timeout", "seconds to wait for a server's model to be ready", default="600"),
    Option(
        "serving-model",
        "model card to deploy: a card.toml path, or a built-in card: efficientnet_lite0 (default), resnet50",
        default="efficientnet_lite0",
    ),
    Option("serving-model-repo", "your own model repository root (one folder per target, as in model_repo/)"),
    Option(
        "serving-torchserve-auth", "TorchServe token authorization: on (send the server's keys) or off", default="on"
    ),
    Option("serving-load", "built-in load tests: smoke (default), sweep or off", default="smoke"),
    Option("serving-load-workers", "Locust worker processes per phase (0: one local process)", default="0"),
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
    Option("serving-sweep-duration", "measured seconds per sweep level", default="60"),
    Option("serving-sweep-warmup", "warm-up seconds before each sweep level", default="10"),
    Option("serving-sweep-scenario", "fresh (new container per level), warm, or both", default="both"),
    Option("serving-sweep-repeats", "repeats per sweep level (the median is reported)", default="1"),
    Option(
        "serving-soak",
        "seconds of one steady closed-loop soak phase per target, gated on memory growth per 1000 requests "
        "(budget max_memory_growth_mb_per_1k, default 50); default: no soak",
    ),
    Option("serving-budgets-file", "TOML/JSON file of load budgets per target (overrides ini serving_budgets)"),
    Option("serving-baseline", "results.json of a previous run: fail on p95/throughput regressions against it"),
    Option(
        "serving-max-regression", "percent of p95 or throughput regression tolerated against the baseline", default="10"
    ),
    Option("serving-allow-remote-load", "allow load on servers that are not loopback and not started here", flag=True),
    Option(
        "serving-strict",
        "turn 'Docker or image missing' skips into failures (CI sets this so it always proves the real path)",
        flag=True,
    ),
)


def register(parser: pytest.Parser) -> None:
    group = parser.getgroup("serving", "model serving (pytest-serving)")
    parser.addini(
        "serving_budgets",
        "load budgets, one '[target.]field = value' per line (e.g. 'triton.p95_ms = 800')",
        type="linelist",
        default=[],
    )
    for option in OPTIONS:
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
    """The option's value by precedence: command line, environment, ini, default."""
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
    return ini if ini not in ("", None, []) else (None if not option.multiple else [])


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


LOAD_MODES = ("smoke", "sweep", "off")
SWEEP_ARRIVALS = ("users", "poisson", "constant")
SCENARIOS = {"fresh": ("fresh",), "warm": ("warm",), "both": ("fresh", "warm")}


@dataclass(frozen=True)
class LoadSettings:
    """How the load tests run: mode, Locust workers, sweep shape, budgets and the regression gate."""

    mode: str = "smoke"
    workers: int = 0
    sweep_levels: tuple[float, ...] = tuple(range(10, 101, 10))
    sweep_arrival: str = "users"
    sweep_duration: float = 60.0
    sweep_warmup: float = 10.0
    sweep_scenarios: tuple[str, ...] = ("fresh", "warm")
    sweep_repeats: int = 1
    budgets_file: Path | None = None
    baseline: Path | None = None
    max_regression_pct: float = 10.0
    allow_remote: bool = False
    #: Measured seconds of the soak phase (--serving-soak); None: no soak.
    soak: float | None = None


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
    load: LoadSettings = LoadSettings()
    #: Values of the options named ``serving-<target>-...``, handed to targets as TargetOptions.extra.
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
        values = {option.dest: raw_value(config, option) for option in OPTIONS}

        def path(key: str) -> Path | None:
            return Path(str(values[key])).expanduser() if values[key] else None

        def number(key: str, kind: type) -> int | float | None:
            if values[key] in (None, ""):
                return None
            try:
                return kind(values[key])
            except ValueError:
                raise pytest.UsageError(f"--{key.replace('_', '-')}: not a number: {values[key]!r}") from None

        limit = number("serving_samples_limit", int)
        if limit is not None and limit <= 0:
            raise pytest.UsageError("--serving-samples-limit must be positive")
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
            startup_timeout=float(number("serving_startup_timeout", float) or 600.0),
            model=str(values["serving_model"] or "efficientnet_lite0"),
            model_repo=path("serving_model_repo"),
            strict=bool(values["serving_strict"]),
            target_extra={
                option.dest: str(values[option.dest])
                for option in OPTIONS
                if option.name.startswith(tuple(f"serving-{name}-" for name in known_targets))
                and values[option.dest] is not None
            },
            load=_load_settings(values, path, number),
        )


def selected_targets(settings: Settings) -> list[str]:
    """The targets this session tests: ``--serving`` names, then those given only by ``--serving-url``."""
    return list(dict.fromkeys([*settings.targets, *settings.urls]))


def _load_settings(
    values: dict[str, object],
    path: Callable[[str], Path | None],
    number: Callable[[str, type], int | float | None],
) -> LoadSettings:
    mode = str(values["serving_load"] or "smoke")
    if mode not in LOAD_MODES:
        raise pytest.UsageError(f"--serving-load: expected one of {', '.join(LOAD_MODES)}, got {mode!r}")
    scenario = str(values["serving_sweep_scenario"] or "both")
    if scenario not in SCENARIOS:
        raise pytest.UsageError(f"--serving-sweep-scenario: expected fresh, warm or both, got {scenario!r}")
    arrival = str(values["serving_sweep_arrival"] or "users")
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
    workers = int(number("serving_load_workers", int) or 0)
    repeats = int(number("serving_sweep_repeats", int) or 1)
    if workers < 0 or repeats < 1:
        raise pytest.UsageError("--serving-load-workers must be >= 0 and --serving-sweep-repeats >= 1")
    soak = number("serving_soak", float)
    if soak is not None and soak <= 0:
        raise pytest.UsageError(f"--serving-soak: expected seconds > 0, got {values['serving_soak']!r}")
    return LoadSettings(
        mode=mode,
        workers=workers,
        sweep_levels=levels,
        sweep_arrival=arrival,
        sweep_duration=float(number("serving_sweep_duration", float) or 60.0),
        sweep_warmup=float(number("serving_sweep_warmup", float) or 0.0),
        sweep_scenarios=SCENARIOS[scenario],
        sweep_repeats=repeats,
        budgets_file=path("serving_budgets_file"),
        baseline=path("serving_baseline"),
        max_regression_pct=float(number("serving_max_regression", float) or 10.0),
        allow_remote=bool(values["serving_allow_remote_load"]),
        soak=soak,
    )
