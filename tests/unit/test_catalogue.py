import importlib.util
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pytest_serving.model import preprocess as preprocess_module
from pytest_serving.model.preprocess import MAX_PIXELS, InvalidImage, decode, preprocess
from pytest_serving.protocols.base import HttpRequest, Protocol
from pytest_serving.protocols.kserve_v2 import KServeV2Protocol
from pytest_serving.protocols.tfserving import V1ImageProtocol, V1TensorProtocol
from pytest_serving.protocols.torchserve import TorchServeProtocol
from pytest_serving.protocols.v2 import HEADER_LENGTH, V2JsonProtocol, V2Protocol, V2TensorProtocol
from pytest_serving.robustness import Case, catalogue
from pytest_serving.robustness.catalogue import PIXEL_FLOOD_SIDE, MiB

REPO = Path(__file__).resolve().parents[2]
MODEL = "efficientnet_lite0"
SMALL_OVERSIZE = 2 * MiB
#: The protocols whose requests carry the image file, by a key for test ids, with their API's path prefix.
PROTOCOLS: dict[str, Protocol] = {
    "v2": V2Protocol(MODEL),
    "v2-json": V2JsonProtocol(MODEL),
    "kserve-v2": KServeV2Protocol(MODEL),
    "torchserve-rest": TorchServeProtocol(MODEL),
    "tfserving-rest": V1ImageProtocol(MODEL),
}
API_PREFIX = {"torchserve-rest": "/predictions/", "tfserving-rest": "/v1/models/"}
API_PREFIX |= {key: "/v2/models/" for key in ("v2", "v2-json", "kserve-v2")}
#: Protocols that send a tensor the client made: no case applies.
TENSOR_PROTOCOLS = [V2TensorProtocol(MODEL), V1TensorProtocol(MODEL)]


def chelsea_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


SAMPLE = chelsea_jpeg()
CASES = catalogue(SAMPLE, oversize_bytes=SMALL_OVERSIZE)
IMAGE_CASES = [case for case in CASES if case.image is not None]
PROTOCOL_CASES = [case for case in CASES if case.build is not None]


def applying(case: Case) -> list[str]:
    """Keys of the PROTOCOLS ``case`` applies to."""
    return [key for key, protocol in PROTOCOLS.items() if case.applies_to(protocol)]


def named(name: str, cases: list[Case] = CASES) -> Case:
    return next(case for case in cases if case.name == name)


def oversize(cases: list[Case]) -> Case:
    return next(case for case in cases if case.name.startswith("oversize-"))


def names(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


def name_of(case: Case) -> str:
    return case.name


def only(cases: list[Case], **fields) -> list[Case]:
    return [case for case in cases if all(getattr(case, key) == value for key, value in fields.items())]


def test_catalogue_has_many_kinds_with_unique_test_id_names():
    case_names = names(CASES)
    assert len(case_names) >= 25
    assert len(set(case_names)) == len(case_names)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in case_names)
    for key, protocol in PROTOCOLS.items():
        applicable = [case for case in CASES if case.applies_to(protocol)]
        assert {case.expect for case in applicable} == {"reject", "classify", "survive"}, key


@pytest.mark.parametrize(
    "case, key",
    [(case, key) for case in CASES for key in applying(case)],
    ids=[f"{case.name}-{key}" for case in CASES for key in applying(case)],
)
def test_case_builds_for_every_protocol_it_applies_to(case, key):
    protocol = PROTOCOLS[key]
    request = case.request(protocol, SAMPLE)
    assert request.method == "POST"
    assert request.path.startswith("/")
    if case.image is not None:
        expected = protocol.encode(case.image_bytes())
        assert (request.path, request.body) == (expected.path, expected.body)
        assert request.headers["Content-Type"] == (case.content_type or expected.headers["Content-Type"])
    else:
        assert request.path.startswith(API_PREFIX[key])


@pytest.mark.parametrize("case", [case for case in CASES if len(applying(case)) < len(PROTOCOLS)], ids=name_of)
def test_case_refuses_protocols_it_does_not_apply_to(case):
    key = min(set(PROTOCOLS) - set(applying(case)))
    with pytest.raises(ValueError, match="does not apply"):
        case.request(PROTOCOLS[key], SAMPLE)


@pytest.mark.parametrize("protocol", TENSOR_PROTOCOLS, ids=lambda protocol: protocol.name)
def test_no_case_applies_to_a_protocol_that_sends_a_tensor(protocol):
    assert [case.name for case in CASES if case.applies_to(protocol)] == []


def test_a_case_applies_by_what_the_protocol_has_not_by_its_name():
    json_cases = {case.name for case in CASES if case.applies_to(PROTOCOLS["tfserving-rest"])} - set(names(IMAGE_CASES))
    assert "json-unknown-input-name" not in json_cases and "tfserving-b64-invalid" in json_cases
    v2_cases = {case.name for case in CASES if case.applies_to(PROTOCOLS["v2"])}
    assert "v2-header-not-json" in v2_cases and "tfserving-b64-invalid" not in v2_cases
    assert {case.name for case in CASES if case.applies_to(PROTOCOLS["kserve-v2"])} == v2_cases


def built(cases: list[Case], with_protocol_cases: bool = True) -> dict[str, object]:
    requests = {}
    for case in cases:
        if case.image is not None:
            requests[case.name] = (case.image_bytes(), case.content_type)
        elif with_protocol_cases:
            for key in applying(case):
                requests[f"{case.name}-{key}"] = case.request(PROTOCOLS[key], SAMPLE)
    return requests


def test_same_seed_gives_the_same_bytes():
    assert built(catalogue(SAMPLE, oversize_bytes=SMALL_OVERSIZE)) == built(CASES)


def test_another_seed_changes_only_the_random_images():
    reseeded = built(catalogue(SAMPLE, seed=1, oversize_bytes=SMALL_OVERSIZE), with_protocol_cases=False)
    original = built(IMAGE_CASES)
    changed = {name for name in original if original[name] != reseeded[name]}
    assert changed == {
        "random-bytes",
        "bitflip-header-markers",
        "bitflip-header-random",
        "bitflip-body",
        "trailing-garbage",
    }


@pytest.mark.parametrize("case", only(IMAGE_CASES, expect="classify"), ids=name_of)
def test_classify_cases_become_a_model_input(case):
    tensor = preprocess(case.image_bytes())
    assert tensor.shape == (3, 224, 224)
    assert np.isfinite(tensor).all()


@pytest.mark.parametrize("case", only(IMAGE_CASES, expect="classify", same_label_as_sample=True), ids=name_of)
def test_same_label_cases_give_the_model_the_sample_input(case):
    difference = np.abs(preprocess(case.image_bytes()) - preprocess(SAMPLE))
    assert difference.mean() < 0.01  # under 1.3 grey levels: re-encoding noise, not a different picture


def test_exif_rotated_case_decodes_upright():
    data = named("jpeg-exif-rotated").image_bytes()
    upright = decode(SAMPLE)
    assert Image.open(io.BytesIO(data)).size == upright.size[::-1]  # stored on its side
    decoded = decode(data)
    assert decoded.size == upright.size
    assert np.abs(np.asarray(decoded, float) - np.asarray(upright, float)).mean() < 3


@pytest.mark.parametrize("case", only(IMAGE_CASES, expect="reject", rejected_by="decoder"), ids=name_of)
def test_decoder_reject_cases_raise_invalid_image(case, monkeypatch):
    # The catalogue under test is built with a small oversize case; the decoder's limit scales with it.
    monkeypatch.setattr(preprocess_module, "MAX_FILE_BYTES", 1024 * 1024)
    with pytest.raises(InvalidImage):
        decode(case.image_bytes())


@pytest.mark.parametrize("case", only(IMAGE_CASES, rejected_by="http"), ids=name_of)
def test_http_layer_cases_would_pass_the_decoder(case):
    assert decode(case.image_bytes()).size == decode(SAMPLE).size


@pytest.mark.parametrize("case", only(IMAGE_CASES, expect="survive"), ids=name_of)
def test_survive_cases_classify_or_raise_invalid_image(case):
    try:
        assert preprocess(case.image_bytes()).shape == (3, 224, 224)
    except InvalidImage:
        pass


@pytest.mark.parametrize(
    "case", [case for case in IMAGE_CASES if "bomb" in case.name or "flood" in case.name], ids=name_of
)
def test_pixel_bombs_are_refused_from_their_header(case, monkeypatch):
    data = case.image_bytes()
    with pytest.raises(InvalidImage, match="too large"):
        decode(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # read the declared size without Pillow's own guard
    width, height = Image.open(io.BytesIO(data)).size
    assert width * height > MAX_PIXELS
    assert len(data) < width * height / 100


def test_pixel_flood_is_only_stopped_by_our_limit():
    assert MAX_PIXELS < PIXEL_FLOOD_SIDE**2 < Image.MAX_IMAGE_PIXELS
    with pytest.raises(InvalidImage, match=f"exceeds {MAX_PIXELS} pixels"):
        decode(named(f"pixel-flood-{PIXEL_FLOOD_SIDE}x{PIXEL_FLOOD_SIDE}").image_bytes())


def test_oversize_case_is_a_valid_jpeg_of_the_requested_size():
    default = oversize(catalogue(SAMPLE))
    assert default.name == "oversize-80mib"
    data = default.image_bytes()
    assert 80 * MiB <= len(data) < 80 * MiB + 2**16
    assert data.endswith(SAMPLE[2:])
    assert len(oversize(CASES).image_bytes()) >= SMALL_OVERSIZE


def test_accepts_only_the_declared_outcomes():
    for case in CASES:
        assert not any(case.accepts(status) for status in (301, 401, 500, 502, 503, 504)), case.name
        assert case.accepts(200) == (case.expect != "reject"), case.name
        assert all(case.accepts(status) == (case.expect != "classify") for status in case.statuses), case.name


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"name": "Bad Name"}, "name must be"),
        ({"statuses": frozenset({500})}, "statuses within"),
        ({"rejected_by": None}, "rejecting layer"),
        ({"expect": "classify"}, "classify cases have no"),
        ({"build": lambda protocol, image: HttpRequest("POST", "/")}, "exactly one of"),
        ({"same_label_as_sample": True}, "only classify"),
    ],
)
def test_inconsistent_cases_are_refused(fields, problem):
    valid = {"name": "x", "description": "", "expect": "reject", "rejected_by": "decoder"}
    valid |= {"statuses": frozenset({400}), "image": lambda: b""}
    with pytest.raises(ValueError, match=problem):
        Case(**(valid | fields))


def test_non_jpeg_sample_is_refused():
    png = io.BytesIO()
    Image.open(io.BytesIO(SAMPLE)).save(png, "PNG")
    with pytest.raises(ValueError, match="must be a decodable JPEG"):
        catalogue(png.getvalue())


def test_a_protocol_addresses_another_model_or_version_without_changing_itself():
    protocol = V2Protocol(MODEL)
    assert protocol.for_model(version="3").encode(SAMPLE) == V2Protocol(MODEL, version="3").encode(SAMPLE)
    assert protocol.for_model("other").infer_path == "/v2/models/other/infer"
    assert protocol.infer_path == f"/v2/models/{MODEL}/infer"
    assert TorchServeProtocol(MODEL).for_model(version="2").infer_path == f"/predictions/{MODEL}/2"
    assert V1ImageProtocol(MODEL).for_model(version="2").infer_path == f"/v1/models/{MODEL}/versions/2:predict"


def split_v2(request: HttpRequest) -> tuple[bytes, bytes]:
    length = int(request.headers[HEADER_LENGTH])
    return request.body[:length], request.body[length:]


def declared_size(request: HttpRequest) -> int:
    header, _ = split_v2(request)
    return json.loads(header)["inputs"][0]["parameters"]["binary_data_size"]


def is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


V2_TAMPERING = {
    "v2-header-length-beyond-body": lambda request: int(request.headers[HEADER_LENGTH]) > len(request.body),
    "v2-header-length-not-a-number": lambda request: not request.headers[HEADER_LENGTH].isdigit(),
    "v2-header-not-json": lambda request: not is_json(split_v2(request)[0]),
    "v2-binary-size-beyond-body": lambda request: declared_size(request) > len(split_v2(request)[1]),
    "v2-element-length-beyond-tensor": lambda request: (
        struct.unpack("<I", split_v2(request)[1][:4])[0] > declared_size(request) == len(split_v2(request)[1])
    ),
}


@pytest.mark.parametrize("key", ["v2", "kserve-v2"])
@pytest.mark.parametrize("name", sorted(V2_TAMPERING))
def test_v2_binary_cases_falsify_their_field_and_keep_the_image(name, key):
    request = named(name).request(PROTOCOLS[key], SAMPLE)
    assert request.body.endswith(SAMPLE)
    assert V2_TAMPERING[name](request)


def test_v2_binary_cases_are_all_checked():
    assert set(V2Protocol(MODEL).framing_mistakes()) == set(V2_TAMPERING)
    framing = {case.name for case in PROTOCOL_CASES if applying(case) == ["v2", "kserve-v2"]}
    assert framing - {"json-unknown-input-name"} == set(V2_TAMPERING)


@pytest.mark.parametrize(
    "case, key",
    [(case, key) for case in PROTOCOL_CASES if case.name.startswith("json-") for key in applying(case)],
    ids=lambda value: value if isinstance(value, str) else value.name,
)
def test_json_cases_are_plain_json_requests(case, key):
    request = case.request(PROTOCOLS[key], SAMPLE)
    assert request.headers == {"Content-Type": "application/json"}
    if case.name == "json-malformed":
        with pytest.raises(ValueError):
            json.loads(request.body)
    elif case.name == "json-deep-nesting":
        with pytest.raises(RecursionError):  # what a recursive parser does with it
            json.loads(request.body)
    else:
        json.loads(request.body)


@pytest.mark.parametrize("key", ["v2", "tfserving-rest"])
def test_nan_case_sends_non_finite_tokens(key):
    body = named("json-nan-inf").request(PROTOCOLS[key], SAMPLE).body
    assert b"NaN" in body and b"Infinity" in body


@pytest.mark.parametrize("key", sorted(PROTOCOLS))
def test_unknown_model_and_version_change_only_the_path(key):
    protocol = PROTOCOLS[key]
    valid = protocol.encode(SAMPLE)
    for name, marker in (("unknown-model", f"{MODEL}-does-not-exist"), ("unknown-version", "999999")):
        request = named(name).request(protocol, SAMPLE)
        assert marker in request.path and marker not in valid.path
        assert request.body == valid.body


def test_readme_lists_every_case():
    readme = (REPO / "fixtures" / "README.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", readme, flags=re.MULTILINE))
    assert listed == set(names(catalogue(SAMPLE)))


def test_write_corruptions_script_writes_every_case(tmp_path):
    spec = importlib.util.spec_from_file_location("write_corruptions", REPO / "fixtures" / "write_corruptions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sample = tmp_path / "sample.jpg"
    sample.write_bytes(SAMPLE)
    out = tmp_path / "out"
    script.main(["--sample", str(sample), "--out", str(out), "--oversize-mib", str(SMALL_OVERSIZE // MiB)])
    index = (out / "index.tsv").read_text().splitlines()[1:]
    assert {line.split("\t")[0] for line in index} == {path.name for path in out.iterdir()} - {"index.tsv"}
    assert {line.split("\t")[1] for line in index} == set(names(CASES))
    assert (out / "png.png").read_bytes() == named("png").image_bytes()
    assert (out / "empty.bin").read_bytes() == b""
