"""Judging a server's answers against labels and against the in-process model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from .protocols.base import Prediction
from .samples import Sample

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
    return SampleVerdict(agrees, prediction.top1 in sample.accepted, top5, reference_top5, message)


@dataclass(frozen=True)
class CorrectnessSummary:
    n: int
    top1: float
    top5: float
    reference_top1: float
    reference_top5: float
    agreement: float
    max_probability_difference: float

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
    return CorrectnessSummary(
        n=n,
        top1=rate([p.top1 in s.accepted for s, p in zip(samples, ours)]),
        top5=rate([bool(s.accepted & set(p.classes)) for s, p in zip(samples, ours)]),
        reference_top1=rate([r.top1 in s.accepted for s, r in zip(samples, theirs)]),
        reference_top5=rate([bool(s.accepted & set(r.classes)) for s, r in zip(samples, theirs)]),
        agreement=rate([same_top1(p, r) for p, r in zip(ours, theirs)]),
        max_probability_difference=max(max_probability_difference(p, r) for p, r in zip(ours, theirs)),
    )
