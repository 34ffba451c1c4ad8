"""Correctness under load (MLPerf's TEST01 idea): the answers of a load phase, checked against the reference.

Latency figures say nothing about whether the answers were right: a server that swaps the
answers of a dynamic batch, or breaks only when a batch holds three requests, passes every
latency budget. So in each Locust process an ``AnswerKeeper`` notes which request (sample)
each 2xx answer carried and keeps its body, deduplicated: a server answering an image the same
way every time costs one entry per image, so normally every answer of the phase is checked.
Memory is bounded by ``MAX_KEPT_BYTES`` of distinct bodies per process; past it a new distinct
body is only counted. After the phase, ``check_answers`` (in the pytest process) decodes each
distinct body once with the endpoint's protocol and compares it with the in-process reference
for the image that was sent: the same top-1 as the contract suite judges it, and top-5
probabilities within a tolerance. ``AnswerCheck.violations`` fails the phase on any mismatch
and when fewer answers were checked than ``required_checks`` asks for.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pytest_serving.correctness import max_probability_difference, same_top1
from pytest_serving.protocols.base import Prediction, ProtocolError

#: Distinct answer bodies one Locust process keeps (a top-5 answer is a few hundred bytes).
MAX_KEPT_BYTES = 32 * 2**20
#: A phase checks at least this share of its answers, and at least MIN_CHECKED (all when it has fewer).
MIN_CHECKED_SHARE = 0.01
MIN_CHECKED = 200
#: Mismatches quoted in a failure message.
EXAMPLES = 3


def answers_file(out_dir: str | Path, process_index: int) -> Path:
    return Path(out_dir) / f"answers-{process_index}.json"


def required_checks(answered: int) -> int:
    """How many of ``answered`` answers a phase must check: >= 1 % and >= ``MIN_CHECKED``, all when fewer."""
    return min(answered, max(MIN_CHECKED, math.ceil(MIN_CHECKED_SHARE * answered)))


class AnswerKeeper:
    """Keeps the 2xx answers of one Locust process by the request they answer (runs in the Locust process).

    ``wires`` are the encoded requests the process sends, in the run plan's order (request ``i``
    is sample ``i``); every request sent must be one of these very objects.
    """

    def __init__(self, wires: Sequence[bytes], max_bytes: int = MAX_KEPT_BYTES) -> None:
        self._wires = list(wires)  # holds the objects, so their ids stay theirs
        self._index_of = {id(wire): index for index, wire in enumerate(self._wires)}
        self.max_bytes = max_bytes
        self.counts: dict[tuple[int, bytes], int] = {}
        self.kept_bytes = 0
        self.answered = 0
        self.unkept = 0

    def keep(self, wire: bytes, status: int, body: bytes) -> None:
        """One answer to ``wire``; only successful (2xx) answers are judged."""
        if not 200 <= status < 300:
            return
        self.answered += 1
        key = (self._index_of[id(wire)], body)
        count = self.counts.get(key)
        if count is not None:
            self.counts[key] = count + 1
        elif self.kept_bytes + len(body) <= self.max_bytes:
            self.counts[key] = 1
            self.kept_bytes += len(body)
        else:
            self.unkept += 1

    def save(self, path: Path) -> None:
        document = {
            "answered": self.answered,
            "unkept": self.unkept,
            "answers": [
                [index, base64.b64encode(body).decode("ascii"), count] for (index, body), count in self.counts.items()
            ],
        }
        path.write_text(json.dumps(document))


@dataclass(frozen=True)
class KeptAnswers:
    """The answers all processes of a phase kept: (request index, body) -> how many times it came."""

    counts: dict[tuple[int, bytes], int]
    answered: int
    unkept: int

    @classmethod
    def load(cls, path: Path) -> KeptAnswers:
        document = json.loads(path.read_text())
        counts = {(index, base64.b64decode(body)): count for index, body, count in document["answers"]}
        return cls(counts, document["answered"], document["unkept"])

    @classmethod
    def merge(cls, parts: Sequence[KeptAnswers]) -> KeptAnswers:
        counts: dict[tuple[int, bytes], int] = {}
        for part in parts:
            for key, count in part.counts.items():
                counts[key] = counts.get(key, 0) + count
        return cls(counts, sum(part.answered for part in parts), sum(part.unkept for part in parts))


@dataclass(frozen=True)
class AnswerCheck:
    """How a phase's answers compare with the in-process reference; ``to_dict`` goes into results.json."""

    answered: int
    checked: int
    required: int
    distinct: int
    mismatches: int
    tolerance: float
    examples: tuple[str, ...] = ()

    @property
    def share_checked(self) -> float:
        return self.checked / self.answered if self.answered else 1.0

    def violations(self) -> list[str]:
        """One line per failed check: wrong answers (count and examples), or too few answers checked."""
        lines = []
        if self.mismatches:
            lines.append(
                f"{self.mismatches} of {self.checked} checked answers differ from the in-process reference "
                f"(top-1, or top-5 probabilities beyond {self.tolerance:g}); e.g. " + "; ".join(self.examples)
            )
        if self.checked < self.required:
            lines.append(
                f"only {self.checked} of {self.answered} answers checked, {self.required} needed "
                f"(distinct answers beyond the {MAX_KEPT_BYTES // 2**20} MiB kept per process)"
            )
        return lines

    def to_dict(self) -> dict:
        return {**asdict(self), "examples": list(self.examples), "share_checked": self.share_checked}


def check_answers(
    kept: KeptAnswers,
    decode: Callable[[int, bytes], Prediction],
    expected: Sequence[tuple[str, Prediction]],
    tolerance: float,
) -> AnswerCheck:
    """Decode every distinct kept body once and compare it with ``expected[request index]`` (sample id,
    reference prediction)."""
    checked = mismatches = 0
    examples: dict[str, str] = {}
    for (index, body), count in sorted(kept.counts.items(), key=lambda item: item[0][0]):
        checked += count
        sample_id, reference = expected[index]
        try:
            prediction = decode(200, body)
        except (ProtocolError, ValueError, KeyError, TypeError, IndexError) as error:
            problem = f"undecodable answer ({type(error).__name__}: {error}): {body[:120]!r}"
        else:
            difference = max_probability_difference(prediction, reference)
            if same_top1(prediction, reference) and difference <= tolerance:
                continue
            common = set(prediction.classes) & set(reference.classes)
            off = f"probabilities off by up to {difference:.3g}" if common else "no class in common"
            problem = f"got top-5 {list(prediction.classes)} p={_rounded(prediction.probabilities)} ({off})"
        mismatches += count
        if sample_id not in examples:  # one example per sample, the first few samples
            examples[sample_id] = (
                f"sample {sample_id} ({count}x): expected top-5 {list(reference.classes)} "
                f"p={_rounded(reference.probabilities)}, {problem}"
            )
    return AnswerCheck(
        answered=kept.answered,
        checked=checked,
        required=required_checks(kept.answered),
        distinct=len(kept.counts),
        mismatches=mismatches,
        tolerance=tolerance,
        examples=tuple(examples.values())[:EXAMPLES],
    )


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(value, 4) for value in values]
