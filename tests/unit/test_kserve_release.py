# ruff: noqa: F811 - the fixtures imported from test_card are parameters of the tests here
"""KServe's release deployment, as far as it is pure: the two model folders, the command that serves
both, the readiness paths and the protocol addressed to each (the real server: tests/integration/test_release.py)."""

from __future__ import annotations

import json

import pytest
from test_card import GOOD_CARD, cards, folder, write_card  # noqa: F401 - cards and folder are fixtures

from pytest_serving.deployment import EMBEDDED_MODEL_REPO
from pytest_serving.model.card import load_card
from pytest_serving.model.preprocess import CARD_FILE
from pytest_serving.targets.base import TargetOptions
from pytest_serving.targets.kserve import SERVER_SCRIPT, KServe, KServeV1


def release_target(cls, current, candidate):
    return cls(TargetOptions(model_name=current.name, card=current, candidate=candidate))


def test_release_deployment_holds_the_current_card_and_the_candidate_as_two_models(cards, tmp_path):
    current, candidate = cards
    target = release_target(KServe, current, candidate)
    dest = tmp_path / "repo"
    dest.mkdir()
    target.build_release_deployment(EMBEDDED_MODEL_REPO / "kserve", dest, candidate)
    assert {"user12", "cand12-candidate", SERVER_SCRIPT} <= {path.name for path in dest.iterdir()}
    for version, card in zip(target.release_versions, cards):
        spec = json.loads((dest / target.served_model(version) / CARD_FILE).read_text())
        assert spec == json.loads(json.dumps(card.serving_spec()))


def test_an_identical_candidate_is_served_under_a_second_name(cards, tmp_path):
    current, _ = cards
    target = release_target(KServe, current, current)
    assert target.served_models() == ["user12", "user12-candidate"]
    assert target.release_unsupported() is None


def test_the_release_server_serves_both_models_and_a_plain_one_only_the_current():
    card = load_card("efficientnet_lite0")
    release = release_target(KServe, card, card).command()
    models = release[release.index("--models") + 1 :][:2]
    assert models == [
        "efficientnet_lite0=/models/efficientnet_lite0",
        "efficientnet_lite0-candidate=/models/efficientnet_lite0-candidate",
    ]
    plain = KServe(TargetOptions(model_name=card.name, card=card)).command()
    assert plain[plain.index("--models") + 1] == "efficientnet_lite0=/models/efficientnet_lite0"
    assert not plain[plain.index("--models") + 2].startswith("efficientnet_lite0")


@pytest.mark.parametrize(
    ("cls", "paths"),
    [
        (KServe, ["/v2/models/user12/ready", "/v2/models/cand12-candidate/ready"]),
        (KServeV1, ["/v1/models/user12", "/v1/models/cand12-candidate"]),
    ],
)
def test_readiness_waits_for_both_models(cards, cls, paths):
    current, candidate = cards
    assert release_target(cls, current, candidate).ready_paths() == paths
    assert cls(TargetOptions(model_name=current.name, card=current)).ready_paths() == paths[:1]


def test_each_version_protocol_addresses_its_own_model(cards):
    current, candidate = cards
    v2 = release_target(KServe, current, candidate)
    assert v2.version_protocol("current").infer_path == "/v2/models/user12/infer"
    assert v2.version_protocol("candidate").infer_path == "/v2/models/cand12-candidate/infer"
    v1 = release_target(KServeV1, current, candidate)
    assert v1.version_protocol("candidate").predict_path == "/v1/models/cand12-candidate:predict"
    assert v1.version_protocol("candidate").spec == candidate.serving_spec()
    assert v1.version_protocol("current").spec == current.serving_spec()
    with pytest.raises(ValueError, match="no model of version '2'"):
        v2.version_protocol("2")


def test_a_plain_deployment_has_no_candidate_model(cards):
    current, _ = cards
    with pytest.raises(ValueError, match="no model of version 'candidate'"):
        KServe(TargetOptions(model_name=current.name, card=current)).served_model("candidate")


def test_names_that_would_collide_are_refused_before_any_container(cards, folder):
    current, _ = cards
    renamed = folder / "renamed"
    renamed.mkdir()
    for name in ("model.onnx", "labels.txt"):
        (renamed / name).write_bytes((folder / name).read_bytes())
    clash = load_card(write_card(renamed, GOOD_CARD, **{'name = "user12"': 'name = "user12-candidate"'}))
    reason = release_target(KServe, clash, current).release_unsupported()
    assert reason is not None and "'user12-candidate'" in reason and "rename one of the cards" in reason


def test_the_rollout_is_skipped_with_the_reason(cards):
    current, candidate = cards
    reason = release_target(KServe, current, candidate).rollout_unsupported()
    assert reason.startswith("kserve: KServe's model server cannot switch the model live: ")
