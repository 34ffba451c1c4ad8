"""The Prometheus text exposition format (version 0.0.4), read without prometheus_client.

Servers differ in the corners of the format they use: Triton writes plain ``name{a="b"} 1``
lines; TorchServe leaves a trailing comma inside the braces (``{model_name="m",} 1.0``).
Both are valid, and so are escaped label values, ``NaN``/``+Inf`` and timestamps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_SPECIAL_VALUES = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}


class MetricsFormatError(ValueError):
    """A line that is not in the Prometheus text format; the message quotes it with its number."""


@dataclass(frozen=True)
class MetricSample:
    """One line of an exposition: a series (name and labels) and its value."""

    name: str
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Exposition:
    """A parsed ``/metrics`` page: every sample, and the ``# TYPE`` and ``# HELP`` of each family."""

    samples: tuple[MetricSample, ...]
    types: Mapping[str, str] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)

    def total(self, name: str) -> float | None:
        """Sum of ``name`` over all its series (labels), or None when the page has no such series."""
        values = [sample.value for sample in self.samples if sample.name == name]
        return sum(values) if values else None


def parse_exposition(text: str) -> Exposition:
    """Every sample of a Prometheus text page; raises MetricsFormatError on a malformed line."""
    samples: list[MetricSample] = []
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            words = line[1:].split(None, 2)
            if len(words) >= 2 and words[0] in ("TYPE", "HELP"):
                target = types if words[0] == "TYPE" else helps
                target[words[1]] = words[2] if len(words) > 2 else ""
            continue
        try:
            samples.append(_parse_sample(line))
        except MetricsFormatError as error:
            raise MetricsFormatError(f"line {number}: {error}: {line!r}") from None
    return Exposition(tuple(samples), types, helps)


def _parse_sample(line: str) -> MetricSample:
    name_match = _NAME.match(line)
    if name_match is None:
        raise MetricsFormatError("no metric name")
    position = name_match.end()
    labels: dict[str, str] = {}
    if position < len(line) and line[position] == "{":
        labels, position = _parse_labels(line, position + 1)
    fields = line[position:].split()
    if not 1 <= len(fields) <= 2 or (position < len(line) and not line[position].isspace()):
        raise MetricsFormatError("expected a value and an optional timestamp after the series")
    value = _parse_value(fields[0])
    timestamp = int(fields[1]) if len(fields) == 2 and re.fullmatch(r"-?\d+", fields[1]) else None
    if len(fields) == 2 and timestamp is None:
        raise MetricsFormatError(f"timestamp {fields[1]!r} is not an integer")
    return MetricSample(name_match.group(), labels, value, timestamp)


def _parse_labels(line: str, position: int) -> tuple[dict[str, str], int]:
    """Labels from just after ``{``; returns them and the position just after ``}``."""
    labels: dict[str, str] = {}
    while True:
        position = _skip_spaces(line, position)
        if position < len(line) and line[position] == "}":
            return labels, position + 1
        name_match = _LABEL_NAME.match(line, position)
        if name_match is None:
            raise MetricsFormatError("bad label name")
        position = _skip_spaces(line, name_match.end())
        if line[position : position + 2] != '="':
            raise MetricsFormatError(f'label {name_match.group()!r} lacks ="value"')
        value, position = _parse_label_value(line, position + 2)
        labels[name_match.group()] = value
        position = _skip_spaces(line, position)
        if position < len(line) and line[position] == ",":
            position += 1
        elif position >= len(line) or line[position] != "}":
            raise MetricsFormatError("expected , or } after a label")


def _parse_label_value(line: str, position: int) -> tuple[str, int]:
    """A quoted value from just after its opening quote; returns it and the position after the closing one."""
    characters: list[str] = []
    while position < len(line):
        character = line[position]
        if character == '"':
            return "".join(characters), position + 1
        if character == "\\" and position + 1 < len(line):
            escaped = line[position + 1]
            characters.append(_ESCAPES.get(escaped, "\\" + escaped))
            position += 2
            continue
        characters.append(character)
        position += 1
    raise MetricsFormatError("unterminated label value")


def _parse_value(text: str) -> float:
    special = _SPECIAL_VALUES.get(text.lower())
    if special is not None:
        return special
    try:
        return float(text)
    except ValueError:
        raise MetricsFormatError(f"value {text!r} is not a number") from None


def _skip_spaces(line: str, position: int) -> int:
    while position < len(line) and line[position] in " \t":
        position += 1
    return position
