import pytest

from pytest_serving.correctness import judge, max_probability_difference, same_top1, summarize
from pytest_serving.protocols.base import Prediction
from pytest_serving.samples import Sample


def pred(classes, probabilities=(0.5, 0.2, 0.1, 0.1, 0.1)):
    return Prediction(tuple(classes), tuple(probabilities))


def sample(sample_id, label, accepted=None):
    return Sample(sample_id, b"", label, frozenset(accepted or {label}), "test")


def test_same_top1_exact():
    assert same_top1(pred([1, 2, 3, 4, 5]), pred([1, 3, 2, 4, 5]))


def test_different_top1_disagrees():
    assert not same_top1(pred([2, 1, 3, 4, 5]), pred([1, 2, 3, 4, 5]))


def test_near_tie_in_the_reference_is_agreement():
    reference = pred([1, 2, 3, 4, 5], (0.4001, 0.4, 0.1, 0.05, 0.04))
    assert same_top1(pred([2, 1, 3, 4, 5]), reference)


def test_probability_difference_over_common_classes():
    assert max_probability_difference(
        pred([1, 2, 3, 4, 5], (0.5, 0.2, 0.1, 0.1, 0.1)), pred([1, 2, 3, 4, 6], (0.49, 0.2, 0.1, 0.1, 0.1))
    ) == pytest.approx(0.01)


def test_judge_reports_both_answers():
    verdict = judge(sample("a", 7), pred([3, 7, 1, 2, 4]), pred([3, 1, 2, 4, 5]))
    assert verdict.agrees and verdict.top5_correct and not verdict.top1_correct
    assert not verdict.reference_top5_correct
    assert "sample a" in verdict.message and "[3, 7, 1, 2, 4]" in verdict.message


def test_summary_counts_accuracy_and_agreement():
    samples = [sample("a", 1), sample("b", 2), sample("c", 3, {3, 9})]
    server = {"a": pred([1, 0, 4, 5, 6]), "b": pred([0, 2, 4, 5, 6]), "c": pred([9, 0, 4, 5, 6])}
    reference = {"a": pred([1, 0, 4, 5, 6]), "b": pred([2, 0, 4, 5, 6]), "c": pred([9, 0, 4, 5, 6])}
    summary = summarize(samples, server, reference)
    assert summary.n == 3
    assert summary.top1 == pytest.approx(2 / 3)
    assert summary.top5 == 1.0
    assert summary.reference_top1 == 1.0
    assert summary.agreement == pytest.approx(2 / 3)
