"""Judging a server's answers against labels and against the in-process model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from .report.results import ResultsStore
from .samples import Sample
from .types import Prediction

#: Two classes whose reference probabilities differ by less than this are a tie: numerics of
#: another runtime may legitimately order them the other way.
TIE_TOLERANCE = 1e-3


def same_top1(prediction: Prediction, reference: Prediction, tolerance: float = TIE_TOLERANCE) -> bool:
    """True when the server's top-1 is the reference's, or within ``tolerance`` of it (a near tie)."""
    if prediction.top1 == reference.top1:
        return True
    if prediction.top1 not in reference.classes:
        return False
    return reference.probabilities[0] - reference.probabilities[reference.classes.index(prediction.top1)] < tolerance


def max_probability_difference(prediction: Prediction, reference: Prediction) -> float:
    """Largest difference in probability over the classes both top-5 lists contain."""
    theirs = dict(zip(prediction.classes, prediction.probabilities))
    common = [(p, theirs[c]) for c, p in zip(reference.classes, reference.probabilities) if c in theirs]
    return max((abs(a - b) for a, b in common), default=1.0)


@dataclass(frozen=True)
class SampleVerdict:
    """How one answer compares with the label and the reference, with a message a person can act on."""

    agrees: bool
    top1_correct: bool
    top5_correct: bool
    reference_top5_correct: bool
    #: Largest difference between the server's and the in-process top-5 probabilities.
    probability_difference: float
    message: str


def judge(sample: Sample, prediction: Prediction, reference: Prediction) -> SampleVerdict:
    agrees = same_top1(prediction, reference)
    top5 = bool(sample.accepted & set(prediction.classes))
    reference_top5 = bool(sample.accepted & set(reference.classes))
    message = (
        f"sample {sample.id} (label {sample.label}, accepted {sorted(sample.accepted)}): "
        f"server top-5 {list(prediction.classes)} p={[round(p, 4) for p in prediction.probabilities]}; "
        f"in-process top-5 {list(reference.classes)} p={[round(p, 4) for p in reference.probabilities]}"
    )
    return SampleVerdict(
        agrees,
        prediction.top1 in sample.accepted,
        top5,
        reference_top5,
        max_probability_difference(prediction, reference),
        message,
    )


@dataclass(frozen=True)
class CorrectnessSummary:
    n: int
    top1: float
    top5: float
    reference_top1: float
    reference_top5: float
    agreement: float
    max_probability_difference: float
    #: label name -> {n, top1, reference_top1, agreement}: where a model is worse, not only how much.
    per_class: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(
    samples: Sequence[Sample], predictions: Mapping[str, Prediction], reference: Mapping[str, Prediction]
) -> CorrectnessSummary:
    """Accuracy of the server and of the reference on the same samples, and their agreement."""
    n = len(samples)
    if n == 0:
        raise ValueError("no samples to summarize")

    def rate(hits: Sequence[bool]) -> float:
        return sum(hits) / n

    ours = [predictions[s.id] for s in samples]
    theirs = [reference[s.id] for s in samples]
    per_class: dict[str, dict[str, float]] = {}
    for label in sorted({s.label_name or str(s.label) for s in samples}):
        rows = [(s, p, r) for s, p, r in zip(samples, ours, theirs) if (s.label_name or str(s.label)) == label]
        per_class[label] = {
            "n": len(rows),
            "top1": sum(p.top1 in s.accepted for s, p, _ in rows) / len(rows),
            "reference_top1": sum(r.top1 in s.accepted for s, _, r in rows) / len(rows),
            "agreement": sum(same_top1(p, r) for _, p, r in rows) / len(rows),
        }
    return CorrectnessSummary(
        n=n,
        top1=rate([p.top1 in s.accepted for s, p in zip(samples, ours)]),
        top5=rate([bool(s.accepted & set(p.classes)) for s, p in zip(samples, ours)]),
        reference_top1=rate([r.top1 in s.accepted for s, r in zip(samples, theirs)]),
        reference_top5=rate([bool(s.accepted & set(r.classes)) for s, r in zip(samples, theirs)]),
        agreement=rate([same_top1(p, r) for p, r in zip(ours, theirs)]),
        max_probability_difference=max(max_probability_difference(p, r) for p, r in zip(ours, theirs)),
        per_class=per_class,
    )


def unanswered_record(n: int, failures: Mapping[str, str]) -> dict:
    """The ``correctness`` record of a target that left samples unanswered: what is known, and the first error."""
    first = next(iter(failures.items()), None)
    return {
        "n": n,
        "answered": n - len(failures),
        "failures": len(failures),
        "first_error": f"sample {first[0]}: {first[1]}" if first else "",
    }


#: Every pair of targets must agree on top-1 for this share of the samples both answered.
MIN_CROSS_TARGET_AGREEMENT = 0.99
#: Same preprocessing code everywhere, so probabilities may differ only by runtime numerics.
MAX_CROSS_TARGET_PROBABILITY_DIFFERENCE = 1e-3


def cross_target_agreement(predictions: Mapping[str, Mapping[str, Prediction]]) -> dict[str, dict[str, dict]]:
    """For every pair of targets (both orders): samples both answered, how many share the top-1,
    the agreement rate and the largest probability difference."""
    names = sorted(predictions)
    record: dict[str, dict[str, dict]] = {name: {} for name in names}
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            common = sorted(predictions[first].keys() & predictions[second].keys())
            pairs = [(predictions[first][sample], predictions[second][sample]) for sample in common]
            same = sum(1 for a, b in pairs if a.top1 == b.top1)
            cell = {
                "n": len(common),
                "same": same,
                "top1_agreement": same / len(common) if common else None,
                "max_probability_difference": max((max_probability_difference(a, b) for a, b in pairs), default=None),
            }
            record[first][second] = record[second][first] = cell
    return record


def cross_target_violations(record: Mapping[str, Mapping[str, Mapping]]) -> list[str]:
    """One line per pair of targets whose agreement or probability difference is out of bounds."""
    lines = []
    for first, row in sorted(record.items()):
        for second, cell in sorted(row.items()):
            if first >= second or not cell["n"]:
                continue
            if cell["top1_agreement"] < MIN_CROSS_TARGET_AGREEMENT:
                lines.append(
                    f"{first} vs {second}: top-1 agreement {cell['top1_agreement']:.3f} "
                    f"< {MIN_CROSS_TARGET_AGREEMENT} over n={cell['n']}"
                )
            if cell["max_probability_difference"] > MAX_CROSS_TARGET_PROBABILITY_DIFFERENCE:
                lines.append(
                    f"{first} vs {second}: probabilities differ by up to {cell['max_probability_difference']:.2e} "
                    f"> {MAX_CROSS_TARGET_PROBABILITY_DIFFERENCE} over n={cell['n']}"
                )
    return lines


def gate_cross_target_agreement(results: ResultsStore) -> list[str]:
    """Compare the targets' recorded contract answers with each other, record the matrix under
    ``agreement`` in results.json and return the violations (empty with fewer than two targets)."""
    predictions = {
        name: {sample: Prediction(tuple(c), tuple(p)) for sample, (c, p) in target["predictions"].items()}
        for name, target in results.read().get("targets", {}).items()
        if target.get("predictions")
    }
    if len(predictions) < 2:
        return []
    record = cross_target_agreement(predictions)
    results.set(("agreement",), record)
    return cross_target_violations(record)
