"""Judging robustness: one case's outcome and its message, and the answers of a poisoned load.

Pure logic with no I/O, so that the suite's verdicts and failure messages are unit-tested
without a server. For each case the suite gathers an ``Answer`` (what the server sent back),
an ``Aftermath`` (its health and its next valid answer afterwards) and, for a 2xx to an image,
a ``Classification``; ``judge`` turns them into a ``CaseOutcome``. ``poisoned_plan`` and
``poisoned_problem`` plan and judge the concurrent load of valid and corrupted requests.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..correctness import same_top1
from ..protocols.base import Prediction, Protocol, ProtocolError
from ..samples import Sample
from .catalogue import Case

Outcome = Literal["pass", "deviation", "fail"]

#: How much of a response body a message or a record quotes.
BODY_EXCERPT_CHARS = 300

#: A target's known server deviations (``ServingTarget.known_deviations``): server version
#: prefix -> case name -> reason. Each is server behaviour no handler can change (a 5xx before any
#: model code runs); the reason names server and version. The suite marks these xfail(strict=True),
#: so an upgrade that fixes one fails until it is removed from the target class.
Deviations = Mapping[str, Mapping[str, str]]


class ServerDeviation(AssertionError):
    """The server answered a case listed in its known deviations the known wrong way, and otherwise behaved."""


@dataclass(frozen=True)
class Answer:
    """What the server did with one request: a status and body, or why nothing came back."""

    status: int | None
    body: bytes
    latency_ms: float
    #: Set when there was no HTTP answer (timeout, connection reset).
    transport_error: str = ""

    @property
    def text(self) -> str:
        """The start of the body as text, for messages and records."""
        return self.body[:BODY_EXCERPT_CHARS].decode("utf-8", "replace")

    @property
    def success(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def server_error(self) -> bool:
        return self.status is not None and self.status >= 500

    def describe(self) -> str:
        if self.status is None:
            return f"no answer after {self.latency_ms:.0f} ms: {self.transport_error}"
        return f"HTTP {self.status} in {self.latency_ms:.0f} ms, body {self.text!r}"


@dataclass(frozen=True)
class Classification:
    """A 2xx answer to an image next to the in-process model's answer on the same bytes.

    ``prediction`` is None when the body held no prediction, ``reference`` None when the
    in-process decoder refuses the bytes; ``detail`` then says why.
    """

    prediction: Prediction | None
    reference: Prediction | None
    #: Classes of which one must be in the top-5 (the sample's, for re-encodings of it); empty: no check.
    required_classes: frozenset[int] = frozenset()
    detail: str = ""

    def problems(self) -> list[str]:
        if self.prediction is None:
            return [f"a 2xx without a prediction: {self.detail}"]
        if self.reference is None:
            return [f"the server classified bytes that the shared decoder refuses ({self.detail})"]
        problems = []
        if not same_top1(self.prediction, self.reference):
            problems.append(
                f"top-1 {self.prediction.top1} differs from the in-process model's {self.reference.top1} on these "
                f"bytes (server top-5 {list(self.prediction.classes)}, in-process {list(self.reference.classes)})"
            )
        if self.required_classes and not self.required_classes & set(self.prediction.classes):
            problems.append(
                f"none of the sample's classes {sorted(self.required_classes)} in the top-5 "
                f"{list(self.prediction.classes)}: the image is the sample re-encoded"
            )
        return problems


@dataclass(frozen=True)
class Aftermath:
    """The server right after a case: what changed in its health, and its answer to the next valid sample.

    Alive means answering: health endpoints can stay green over a dead backend (a Triton python stub
    that died keeps its model READY), so the server survived only if the next valid sample, too, is
    answered as the in-process model answers it.
    """

    health_changes: tuple[str, ...]
    next_answer_correct: bool
    next_answer: str
    #: The container's log tail, quoted when the server did not survive.
    log_tail: str = ""
    #: False when the next valid sample got no prediction at all (a 5xx, no answer, not a prediction).
    next_answered: bool = True

    @property
    def died(self) -> bool:
        """No prediction for a valid sample: the model behind the server is gone, whatever its health says."""
        return not self.next_answered

    @property
    def survived(self) -> bool:
        return not self.health_changes and self.next_answer_correct

    @property
    def ok(self) -> bool:
        return self.survived

    def describe(self) -> str:
        if self.survived:
            health = "yes (health unchanged, next valid sample answered right)"
        elif self.died:
            endpoints = "; ".join(self.health_changes) or "its health endpoints still say ready"
            health = f"NO, it died: a valid sample gets no prediction ({endpoints})"
        else:
            wrong = () if self.next_answer_correct else ("it answers a valid sample wrong",)
            health = "NO: " + "; ".join((*self.health_changes, *wrong))
        next_answer = "correct" if self.next_answer_correct else "WRONG"
        return f"server survived: {health}\nnext valid sample: {next_answer}: {self.next_answer}"


def health_changes(before: Mapping[str, object], after: Mapping[str, object]) -> tuple[str, ...]:
    """What differs between two ``ServingTarget.health`` snapshots; ``ready`` must stay True."""
    changes = []
    if after.get("ready") is not True:
        changes.append(f"not ready (ready={after.get('ready')!r})")
    for key in sorted((set(before) | set(after)) - {"ready"}):
        if before.get(key) != after.get(key):
            changes.append(f"{key} changed from {before.get(key)!r} to {after.get(key)!r}")
    return tuple(changes)


def readable_text(body: bytes) -> bool:
    """True for a non-empty UTF-8 body without control characters: an error message a person can read."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text.strip()) and all(character.isprintable() or character in "\t\r\n" for character in text)


def expectation(case: Case) -> str:
    """What a well-behaved server answers to ``case``, in words."""
    statuses = "/".join(str(status) for status in sorted(case.statuses))
    classify = "a 2xx with the in-process model's top-1"
    if case.same_label_as_sample:
        classify += " and the sample's class in the top-5"
    if case.expect == "classify":
        return classify
    reject = f"{statuses} with a readable error (rejected by the {case.rejected_by} layer)"
    return reject if case.expect == "reject" else f"{classify}, or {reject}"


def answer_problems(case: Case, answer: Answer, classification: Classification | None) -> list[str]:
    """Everything wrong with the server's answer to ``case`` (empty: a correct answer)."""
    if answer.status is None:
        return [f"no HTTP answer: {answer.transport_error}"]
    if answer.server_error:
        return [f"HTTP {answer.status}: a server error is never a correct answer to a client's mistake"]
    if not case.accepts(answer.status):
        return [f"HTTP {answer.status} is not an accepted answer"]
    if not answer.success:
        return [] if readable_text(answer.body) else ["the error body is empty or not readable text"]
    if classification is None:
        raise ValueError(f"case {case.name!r}: a 2xx answer needs a Classification to be judged")
    return classification.problems()


def verdict(problems: Sequence[str], aftermath: Aftermath, deviation: str | None) -> Outcome:
    """Pass without problems; a known deviation excuses the answer, never a server that did not survive."""
    if not problems and aftermath.ok:
        return "pass"
    if deviation and aftermath.ok:
        return "deviation"
    return "fail"


def valid_answer_problem(answer: Answer, protocol: Protocol, expected: Prediction) -> str:
    """What is wrong with the answer to a valid sample ("" when nothing is): it must be the in-process top-1."""
    if not answer.success:
        return answer.describe()
    try:
        prediction = protocol.decode(answer.status, answer.body)
    except ProtocolError as error:
        return str(error)
    return "" if same_top1(prediction, expected) else f"top-1 {prediction.top1}, in-process {expected.top1}"


@dataclass(frozen=True)
class CaseOutcome:
    """The verdict on one case against one target, its failure message and its results.json record."""

    target: str
    server_version: str
    case: Case
    answer: Answer
    aftermath: Aftermath
    problems: tuple[str, ...]
    #: The reason when this case is a known server deviation, else None.
    deviation: str | None = None

    @property
    def outcome(self) -> Outcome:
        return verdict(self.problems, self.aftermath, self.deviation)

    def message(self) -> str:
        lines = [
            f"robustness case {self.case.name!r} on {self.target} ({self.server_version}): {self.case.description}",
            f"expected: {expectation(self.case)}",
            f"got: {self.answer.describe()}",
        ]
        return "\n".join(lines + message_tail(self.problems, self.aftermath, self.deviation))

    def record(self) -> dict[str, object]:
        """The results.json entry for this case."""
        return case_record(self.case.expect, self.answer, self.aftermath, self.outcome, self.problems, self.deviation)


def message_tail(problems: Sequence[str], aftermath: Aftermath, deviation: str | None) -> list[str]:
    """The lines a robustness failure ends with: its problems, the server's aftermath, a known deviation
    and, when the server did not come through, the container's log tail."""
    lines = [*(f"problem: {problem}" for problem in problems), aftermath.describe()]
    if deviation:
        lines.append(f"known server deviation: {deviation}")
    if not aftermath.ok:
        lines.append(f"container log tail:\n{aftermath.log_tail}")
    return lines


def case_record(
    expect: str,
    answer: Answer,
    aftermath: Aftermath,
    outcome: Outcome,
    problems: Sequence[str],
    deviation: str | None,
    **extra: object,
) -> dict[str, object]:
    """A robustness case's results.json entry (``extra`` adds a kind's own fields)."""
    record: dict[str, object] = {
        **extra,
        "expect": expect,
        "status": answer.status,
        "error": "" if answer.success else answer.text or answer.transport_error,
        "survived": aftermath.survived,
        "died": aftermath.died,
        "next_answer_correct": aftermath.next_answer_correct,
        "latency_ms": round(answer.latency_ms, 1),
        "outcome": outcome,
        "problems": list(problems),
    }
    if deviation:
        record["deviation"] = deviation
    return record


def judge(
    target: str,
    server_version: str,
    case: Case,
    answer: Answer,
    aftermath: Aftermath,
    classification: Classification | None = None,
    deviations: Deviations | None = None,
) -> CaseOutcome:
    """The outcome of ``case``: its answer's problems, the server's aftermath and any known deviation
    among ``deviations`` (the target's ``known_deviations``)."""
    problems = tuple(answer_problems(case, answer, classification))
    deviation = known_deviation(deviations or {}, server_version, case.name)
    return CaseOutcome(target, server_version, case, answer, aftermath, problems, deviation)


def known_deviation(deviations: Deviations, server_version: str, case_name: str) -> str | None:
    """The reason ``deviations`` give for this server version and case, or None.

    ``server_version`` is the target's report, e.g. "triton 2.51.0"; a table prefix "2.51"
    matches versions 2.51, 2.51.0, 2.51.1 but not 2.510.
    """
    version = server_version.split()[-1] if server_version.split() else ""
    for prefix, cases in deviations.items():
        if case_name in cases and _version_matches(prefix, version):
            return cases[case_name]
    return None


def _version_matches(prefix: str, version: str) -> bool:
    wanted = prefix.split(".")
    return version.split(".")[: len(wanted)] == wanted


#: The poisoned load: this many requests, one in POISON_EVERY of them corrupted (5 %).
POISONED_REQUESTS = 200
POISON_EVERY = 20


@dataclass(frozen=True)
class PlannedRequest:
    """One request of the poisoned load: a valid sample, or the corrupted image of ``case``."""

    data: bytes
    sample: Sample | None = None
    case: Case | None = None

    @property
    def label(self) -> str:
        return f"sample {self.sample.id}" if self.sample else f"corrupted ({self.case.name})"


def poisoned_plan(
    samples: Sequence[Sample], poisons: Sequence[Case], count: int = POISONED_REQUESTS, every: int = POISON_EVERY
) -> list[PlannedRequest]:
    """``count`` requests cycling through the samples, every ``every``-th one replaced by the next poison's image."""
    if not samples or not poisons:
        raise ValueError("a poisoned load needs samples and corrupted images")
    poison_images = itertools.cycle([(case, case.image_bytes()) for case in poisons])
    valid = itertools.cycle(samples)
    plan = []
    for index in range(count):
        if index % every == every // 2:
            case, data = next(poison_images)
            plan.append(PlannedRequest(data, case=case))
        else:
            sample = next(valid)
            plan.append(PlannedRequest(sample.data, sample=sample))
    return plan


def poisoned_problem(
    planned: PlannedRequest, answer: Answer, reference: Mapping[str, Prediction], protocol: Protocol
) -> str:
    """What is wrong with one answer of the poisoned load ("" when nothing is): a corrupted image must get
    one of its case's 4xx, a valid sample the in-process model's top-1."""
    if planned.case is not None:
        rejected = answer.status is not None and not answer.success and planned.case.accepts(answer.status)
        return "" if rejected else f"{planned.label}: {answer.describe()}"
    problem = valid_answer_problem(answer, protocol, reference[planned.sample.id])
    return f"{planned.label}: {problem}" if problem else ""
