"""Where a session's load phases get their Locust workers: parsed once per session, so a mistake is a
usage error before any container starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from ..settings import OPTIONS, raw_value
from .phase import split_address


@dataclass(frozen=True)
class DistributedLoad:
    """``--serving-load-remote-workers``, ``--serving-load-master-bind`` and ``--serving-load-worker-timeout``:
    unset ones leave ``LoadPhase``'s defaults."""

    remote_workers: int = 0
    master_bind: str | None = None
    worker_timeout: float | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> DistributedLoad:
        return cls.from_values({option.name: raw_value(config, option) for option in OPTIONS})

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> DistributedLoad:
        """From the options' raw values by name; a usage error names the option that is wrong."""
        remote = _parsed(values, "serving-load-remote-workers", int)
        if remote is not None and remote < 0:
            raise pytest.UsageError(f"--serving-load-remote-workers: expected a number >= 0, got {remote}")
        bind = values.get("serving-load-master-bind") or None
        if bind is not None:
            try:
                split_address(str(bind))
            except ValueError as error:
                raise pytest.UsageError(f"--serving-load-master-bind: {error}") from None
        timeout = _parsed(values, "serving-load-worker-timeout", float)
        if timeout is not None and not timeout > 0:
            raise pytest.UsageError(f"--serving-load-worker-timeout: expected a number > 0, got {timeout:g}")
        return cls(remote or 0, None if bind is None else str(bind), timeout)

    def phase_defaults(self) -> dict[str, Any]:
        """The LoadPhase keywords these options set (a test's own marker or call overrides them)."""
        defaults: dict[str, Any] = {"remote_workers": self.remote_workers}
        if self.master_bind is not None:
            defaults["master_bind"] = self.master_bind
        if self.worker_timeout is not None:
            defaults["worker_timeout"] = self.worker_timeout
        return defaults


def _parsed(values: Mapping[str, object], name: str, kind: type) -> Any:
    raw = values.get(name)
    if raw in (None, ""):
        return None
    try:
        return kind(raw)
    except ValueError:
        raise pytest.UsageError(f"--{name}: expected a {kind.__name__}, got {raw!r}") from None
