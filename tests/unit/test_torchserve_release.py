# ruff: noqa: F811 - the fixtures imported from test_card are parameters of the tests here
"""TorchServe's release deployment and rollout, as far as they are pure: the archives, the command,
the management requests and the parsing of the answers (the real server: tests/integration/test_release.py)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from test_card import cards, folder  # noqa: F401 - fixtures

from pytest_serving.deployment import EMBEDDED_MODEL_REPO
from pytest_serving.load.multiplexer import TAG_SEARCH_BYTES
from pytest_serving.model.card import load_card
from pytest_serving.model.preprocess import CARD_FILE
from pytest_serving.protocols.torchserve import ModelManagement, registered_versions, versions_ready
from pytest_serving.targets.base import TargetOptions
from pytest_serving.targets.torchserve import SERVER_CONFIG, TorchServe, release_archive


def describe_all(**versions: list[str]) -> bytes:
    """A describe-all answer: version -> its workers' statuses (minWorkers 1)."""
    return json.dumps(
        [
            {
                "modelName": "m",
                "modelVersion": version,
                "minWorkers": 1,
                "maxWorkers": 1,
                "workers": [
                    {"id": str(9000 + i), "status": status, "pid": 100 + i} for i, status in enumerate(statuses)
                ],
            }
            for version, statuses in versions.items()
        ]
    ).encode()


def manifest_and_spec(archive: Path) -> tuple[dict, dict]:
    with zipfile.ZipFile(archive) as mar:
        return json.loads(mar.read("MAR-INF/MANIFEST.json")), json.loads(mar.read(CARD_FILE))


def test_release_deployment_holds_both_cards_as_versions_of_the_current_model(cards, tmp_path):
    current, candidate = cards
    target = TorchServe(TargetOptions(model_name=current.name, card=current, candidate=candidate))
    dest = tmp_path / "repo"
    dest.mkdir()
    target.build_release_deployment(EMBEDDED_MODEL_REPO / "torchserve", dest, candidate)
    assert sorted(path.name for path in dest.iterdir()) == sorted(
        [SERVER_CONFIG, release_archive("user12", "1"), release_archive("user12", "2")]
    )
    for version, card in zip(target.release_versions, cards):
        manifest, spec = manifest_and_spec(dest / release_archive("user12", version))
        assert (manifest["model"]["modelName"], manifest["model"]["modelVersion"]) == ("user12", version)
        assert spec == json.loads(json.dumps(card.serving_spec()))


def test_release_archives_have_distinct_names_per_version():
    assert release_archive("m", "1") != release_archive("m", "2")
    assert release_archive("m", "1").endswith(".mar")


def test_a_release_server_starts_with_both_versions_and_the_model_api():
    card = load_card("efficientnet_lite0")
    release = TorchServe(TargetOptions(model_name="m", card=card, candidate=card)).command()
    models = release[release.index("--models") + 1 :]
    assert models == [f"m={release_archive('m', '1')}", f"m={release_archive('m', '2')}"]
    assert "--enable-model-api" in release
    plain = TorchServe(TargetOptions(model_name="m", card=card)).command()
    assert plain[plain.index("--models") + 1 :] == ["m=m.mar"]
    assert "--enable-model-api" not in plain


def test_auth_off_flag_follows_the_release_models():
    card = load_card("efficientnet_lite0")
    command = TorchServe(
        TargetOptions(model_name="m", card=card, candidate=card, extra={"serving_torchserve_auth": "off"})
    ).command()
    assert command[-3:] == [f"m={release_archive('m', '1')}", f"m={release_archive('m', '2')}", "--disable-token-auth"]


def test_version_protocol_addresses_one_version():
    request = TorchServe(TargetOptions(model_name="m")).version_protocol("2").encode(b"jpeg")
    assert (request.method, request.path) == ("POST", "/predictions/m/2")


def test_management_requests():
    management = ModelManagement("m")
    register = management.register("m-v2.mar")
    parts = urlsplit(register.path)
    assert (register.method, parts.path) == ("POST", "/models")
    assert parse_qs(parts.query) == {
        "url": ["m-v2.mar"],
        "model_name": ["m"],
        "initial_workers": ["1"],
        "synchronous": ["true"],
    }
    assert (management.set_default("2").method, management.set_default("2").path) == ("PUT", "/models/m/2/set-default")
    assert (management.unregister("1").method, management.unregister("1").path) == ("DELETE", "/models/m/1")
    assert (management.describe_all().method, management.describe_all().path) == ("GET", "/models/m/all")
    assert ModelManagement("a b/c").unregister("1").path == "/models/a%20b%2Fc/1"


def test_release_readiness_waits_for_every_version_workers():
    assert versions_ready(describe_all(**{"1": ["READY"], "2": ["READY"]}), ["1", "2"])
    assert not versions_ready(describe_all(**{"1": ["READY"], "2": ["UNLOADING"]}), ["1", "2"])
    assert not versions_ready(describe_all(**{"1": ["READY"]}), ["1", "2"])
    assert not versions_ready(describe_all(**{"1": ["READY"], "2": []}), ["1", "2"])
    assert not versions_ready(b"<html>starting</html>", ["1"])


def test_registered_versions():
    assert registered_versions(describe_all(**{"1": ["READY"], "2": []})) == ["1", "2"]
    with pytest.raises(ValueError, match="describe-model"):
        registered_versions(b'{"code": 404}')


def test_answer_version_pattern_finds_the_version_within_the_load_engine_search_window():
    """The handler appends model_version after the top-5; even with the longest classes and floats
    json.dumps writes, the version lies within the bytes the load engine searches."""
    longest = {"classes": [999] * 5, "probabilities": [2.2250738585072014e-308] * 5}
    body = json.dumps({**longest, "model_version": "2"}).encode()
    found = re.compile(TorchServe.answer_version_pattern.encode()).search(body, 0, TAG_SEARCH_BYTES)
    assert found is not None and found.group(1) == b"2"
