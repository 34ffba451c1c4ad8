"""The release gate's options, parsed once per session (usage errors before any container starts)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from ..load.budgets import Budget
from ..model.card import CardError, ModelCard, load_card
from ..settings import OPTIONS, Option, Settings, raw_value
from ..verdicts.verdict import ReleaseLimits

#: Fewer interleaved windows than this per version cannot give a bootstrap interval worth the name.
MIN_WINDOWS = 5
ROLLOUT_MODES = ("on", "off")


@dataclass(frozen=True)
class ReleaseSettings:
    """``--serving-candidate`` and how the candidate is judged against the current model."""

    #: The candidate's card, loaded and checked against the current card's labels.
    candidate: ModelCard | None
    limits: ReleaseLimits
    windows: int
    #: The windows per version a comparison may grow to while inconclusive (``windows``: never grows).
    max_windows: int
    window_s: float
    users: int
    rollout: bool
    rollout_grace_s: float
    #: The rollout's rate when set (requests/s); else half the current version's side by side.
    rollout_rate: float | None = None
    #: The switch's p99 budgets: absolute (ms), and as a multiple of the steady p99 before it.
    rollout_max_p99_ms: float | None = None
    rollout_max_p99_ratio: float | None = None

    @classmethod
    def from_config(cls, config: pytest.Config, settings: Settings) -> ReleaseSettings:
        def value(name: str, kind: type = str, low: float | None = None, high: float | None = None):
            option = _option(name)
            raw = raw_value(config, option)
            if option.flag:
                return bool(raw)
            if raw in (None, ""):
                raw = option.default
            if raw is None:
                return None
            try:
                parsed = kind(raw)
            except ValueError:
                raise pytest.UsageError(f"--{name}: expected a {kind.__name__}, got {raw!r}") from None
            if (low is not None and parsed < low) or (high is not None and parsed > high):
                bounds = f">= {low:g}" + (f" and <= {high:g}" if high is not None else "")
                raise pytest.UsageError(f"--{name}: expected a number {bounds}, got {raw!r}")
            return parsed

        rollout = value("serving-rollout")
        if rollout not in ROLLOUT_MODES:
            raise pytest.UsageError(f"--serving-rollout: expected on or off, got {rollout!r}")
        candidate = value("serving-candidate")
        windows = value("serving-release-windows", int, MIN_WINDOWS)
        max_windows = value("serving-release-max-windows", int, MIN_WINDOWS)
        if raw_value(config, _option("serving-release-max-windows")) not in (None, "") and max_windows < windows:
            raise pytest.UsageError(
                f"--serving-release-max-windows: expected at least --serving-release-windows ({windows}), got {max_windows}"
            )
        return cls(
            candidate=candidate_card(candidate, settings.card) if candidate is not None else None,
            limits=ReleaseLimits(
                max_accuracy_drop_points=value("serving-max-accuracy-drop", float, 0, 100),
                min_agreement=value("serving-min-agreement", float, 0, 1),
                max_latency_regression_pct=value("serving-max-latency-regression", float, 0),
                strict=value("serving-release-strict"),
            ),
            windows=windows,
            max_windows=max(windows, max_windows),
            window_s=value("serving-release-window", float, 0.5),
            users=value("serving-release-users", int, 1),
            rollout=rollout == "on",
            rollout_grace_s=value("serving-rollout-grace", float, 0),
            rollout_rate=positive(value("serving-rollout-rate", float, 0), "serving-rollout-rate"),
            rollout_max_p99_ms=positive(value("serving-rollout-max-p99-ms", float, 0), "serving-rollout-max-p99-ms"),
            rollout_max_p99_ratio=value("serving-rollout-max-p99-ratio", float, 1),
        )


def with_rollout_budget(release: ReleaseSettings, budget: Budget) -> ReleaseSettings:
    """The release settings with a target's rollout budgets (``serving_budgets``, --serving-budgets-file)
    over the options': one budget rarely fits a CPU and a GPU server."""
    return replace(
        release,
        rollout_max_p99_ms=(
            budget.rollout_max_p99_ms if budget.rollout_max_p99_ms is not None else release.rollout_max_p99_ms
        ),
        rollout_max_p99_ratio=(
            budget.rollout_max_p99_ratio if budget.rollout_max_p99_ratio is not None else release.rollout_max_p99_ratio
        ),
    )


def positive(parsed: float | None, name: str) -> float | None:
    """A number that must be above 0 when given."""
    if parsed is not None and parsed <= 0:
        raise pytest.UsageError(f"--{name}: expected a number > 0, got {parsed:g}")
    return parsed


def candidate_card(value: str, current: ModelCard) -> ModelCard:
    """The candidate's card; a usage error naming the field unless it loads and answers with the
    current card's labels (same names in the same order, or both ImageNet)."""
    try:
        card = load_card(value)
    except CardError as error:
        raise pytest.UsageError(f"--serving-candidate: {str(error).removeprefix('--serving-model: ')}") from None
    if card.labels != current.labels or card.num_classes != current.num_classes:
        raise pytest.UsageError(
            f"--serving-candidate {card.source}: labels: {_labels(card)} differ from the current model "
            f"{current.source}'s {_labels(current)}: a candidate must answer with the same labels in the same order"
        )
    return card


def _labels(card: ModelCard) -> str:
    return (
        "ImageNet's 1000 classes"
        if card.labels is None
        else f"{len(card.labels)} labels ({', '.join(card.labels[:3])}, ...)"
    )


def _option(name: str) -> Option:
    return next(option for option in OPTIONS if option.name == name)
