"""Answer checks of a load phase: keeping answers by request in a Locust process, judging them after."""

from __future__ import annotations

import json

from pytest_serving.load.answers import (
    MIN_CHECKED,
    AnswerKeeper,
    KeptAnswers,
    check_answers,
    required_checks,
)
from pytest_serving.protocols.base import Prediction, ProtocolError

CAT = Prediction((281, 282, 285, 287, 728), (0.6, 0.2, 0.1, 0.05, 0.01))
DOG = Prediction((207, 208, 209, 210, 211), (0.9, 0.05, 0.02, 0.01, 0.005))
EXPECTED = [("n02123045_cat", CAT), ("n02099601_dog", DOG)]


def body(prediction: Prediction) -> bytes:
    return json.dumps({"classes": prediction.classes, "probabilities": prediction.probabilities}).encode()


def decode(status: int, data: bytes) -> Prediction:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ProtocolError(str(error)) from None
    return Prediction(tuple(document["classes"]), tuple(document["probabilities"]))


def test_keeper_counts_identical_answers_once_and_ignores_failures():
    cat, dog = b"POST cat", b"POST dog"
    keeper = AnswerKeeper([cat, dog])
    for _ in range(3):
        keeper.keep(cat, 200, body(CAT))
    keeper.keep(dog, 200, body(DOG))
    keeper.keep(dog, 503, b"busy")
    assert keeper.answered == 4
    assert keeper.counts == {(0, body(CAT)): 3, (1, body(DOG)): 1}


def test_keeper_stops_keeping_new_bodies_at_its_bound_but_still_counts_known_ones():
    cat = b"POST cat"
    keeper = AnswerKeeper([cat], max_bytes=len(body(CAT)))
    keeper.keep(cat, 200, body(CAT))
    keeper.keep(cat, 200, body(DOG))  # a new body: over the bound
    keeper.keep(cat, 200, body(CAT))
    assert (keeper.answered, keeper.unkept, keeper.counts) == (3, 1, {(0, body(CAT)): 2})


def test_kept_answers_of_several_processes_merge(tmp_path):
    cat, dog = b"POST cat", b"POST dog"
    paths = []
    for index, wire in enumerate([cat, cat]):
        keeper = AnswerKeeper([cat, dog])
        keeper.keep(wire, 200, body(CAT))
        paths.append(tmp_path / f"answers-{index}.json")
        keeper.save(paths[-1])
    merged = KeptAnswers.merge([KeptAnswers.load(path) for path in paths])
    assert (merged.counts, merged.answered, merged.unkept) == ({(0, body(CAT)): 2}, 2, 0)


def test_right_answers_pass():
    kept = KeptAnswers({(0, body(CAT)): 5, (1, body(DOG)): 5}, answered=10, unkept=0)
    check = check_answers(kept, decode, EXPECTED, tolerance=1e-3)
    assert (check.checked, check.mismatches, check.distinct, check.violations()) == (10, 0, 2, [])


def test_a_swapped_answer_fails_with_its_count_and_an_example():
    kept = KeptAnswers({(0, body(CAT)): 7, (0, body(DOG)): 2, (1, body(DOG)): 9}, answered=18, unkept=0)
    check = check_answers(kept, decode, EXPECTED, tolerance=1e-3)
    assert check.mismatches == 2
    (line,) = check.violations()
    assert line.startswith("2 of 18 checked answers differ")
    assert "sample n02123045_cat (2x): expected top-5 [281, 282, 285, 287, 728]" in line
    assert "got top-5 [207, 208, 209, 210, 211]" in line


def test_halved_probabilities_fail_and_noise_within_tolerance_passes():
    halved = Prediction(CAT.classes, tuple(p / 2 for p in CAT.probabilities))
    noisy = Prediction(CAT.classes, tuple(p + 1e-5 for p in CAT.probabilities))
    kept = KeptAnswers({(0, body(halved)): 1, (0, body(noisy)): 1}, answered=2, unkept=0)
    check = check_answers(kept, decode, EXPECTED, tolerance=1e-3)
    assert check.mismatches == 1
    assert "probabilities off by up to 0.3" in check.examples[0]


def test_an_undecodable_answer_is_a_mismatch():
    check = check_answers(KeptAnswers({(1, b"<html>"): 1}, 1, 0), decode, EXPECTED, tolerance=1e-3)
    assert check.mismatches == 1 and "undecodable answer (ProtocolError" in check.examples[0]


def test_too_few_checked_answers_fail():
    kept = KeptAnswers({(0, body(CAT)): 150}, answered=300, unkept=150)
    (line,) = check_answers(kept, decode, EXPECTED, tolerance=1e-3).violations()
    assert line.startswith(f"only 150 of 300 answers checked, {MIN_CHECKED} needed")


def test_required_checks_are_all_of_few_at_least_200_and_at_least_one_percent():
    assert [required_checks(n) for n in (0, 50, 200, 5000, 100_000)] == [0, 50, 200, 200, 1000]
