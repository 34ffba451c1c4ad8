"""The model card: which ONNX classifier to deploy, how to feed it and what its outputs mean.

A card is a small TOML file (``--serving-model=card.toml``); the built-in models are cards
shipped in ``cards/``. Everything a server handler and the in-process reference need is in
the card, so neither knows any model: ``serving_spec`` is what deployments carry as
``serving_card.json`` beside ``serving_preprocess.py``. ``load_card`` validates the card
against the ONNX file itself before any container starts; each problem is one ``CardError``
naming the field, the value and what was expected.

Importing this module and loading a user card need no torch: only a built-in card whose
artifact is exported from the package's PyTorch model (``export = NAME``) imports it, once.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .registry import file_sha256

BUILTIN_CARDS = Path(__file__).with_name("cards")
IMAGENET = "imagenet"
IMAGENET_CLASSES = 1000
LAYOUTS = ("NCHW", "NHWC")
DTYPES = {"float32": 1, "uint8": 2}  # ONNX TensorProto element types
KINDS = ("logits", "probabilities")
CHANNELS = ("RGB", "BGR")
CROPS = ("center", "none")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Keys each table may hold; anything else is a typo the user should hear about.
FIELDS: Mapping[str, tuple[str, ...]] = {
    "": ("name", "artifact", "export", "labels", "artifact_savedmodel", "input", "preprocess", "output"),
    "input": ("name", "layout", "size", "dtype"),
    "preprocess": ("resize_shorter", "crop", "scale", "mean", "std", "channels"),
    "output": ("name", "kind"),
}


class CardError(ValueError):
    """The card cannot be used; the message names the card, the field, the value and what was expected."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    layout: str
    size: int
    dtype: str


@dataclass(frozen=True)
class PreprocessSpec:
    resize_shorter: int
    crop: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channels: str


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str


@dataclass(frozen=True)
class ModelCard:
    """A validated card. ``labels`` are the class names in output order (ImageNet cards: none, the
    samples' classes.tsv maps wnids to indices); ``card_id`` identifies artifact and card together."""

    name: str
    artifact: Path
    labels: tuple[str, ...] | None
    num_classes: int
    input: InputSpec
    preprocess: PreprocessSpec
    output: OutputSpec
    source: str
    card_id: str
    artifact_savedmodel: Path | None = None
    #: The built-in registry model the artifact was exported from, if any (TF Serving exports it too).
    export: str | None = None

    @property
    def imagenet(self) -> bool:
        return self.labels is None

    def serving_spec(self) -> dict:
        """What a deployment's ``serving_card.json`` holds: all a handler needs to run the model."""
        return {
            "name": self.name,
            "input": vars(self.input).copy(),
            "preprocess": {
                **vars(self.preprocess),
                "mean": list(self.preprocess.mean),
                "std": list(self.preprocess.std),
            },
            "output": vars(self.output).copy(),
            "labels": list(self.labels) if self.labels else None,
            "num_classes": self.num_classes,
        }

    def label_of(self, index: int) -> str:
        """The name of class ``index`` (its number for ImageNet cards, whose names the samples' classes hold)."""
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else str(index)

    def index_of(self, label: str) -> int | None:
        return self.labels.index(label) if self.labels and label in self.labels else None


def load_card(value: str | Path) -> ModelCard:
    """A built-in card by name (``efficientnet_lite0``) or a TOML card by path, validated against its ONNX."""
    path = Path(value).expanduser()
    if not path.suffix and not path.exists():
        builtin = BUILTIN_CARDS / f"{value}.toml"
        if not builtin.is_file():
            known = ", ".join(sorted(card.stem for card in BUILTIN_CARDS.glob("*.toml")))
            raise CardError(f"--serving-model: {value!r} is neither a card file nor a built-in model ({known})")
        path = builtin
    if not path.is_file():
        raise CardError(f"--serving-model: card file {path} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CardError(f"model card {path}: not valid TOML: {error}") from None
    return _Validator(path, raw).card()


class _Validator:
    """Checks one card's fields, then the ONNX file against them; the first problem raises."""

    def __init__(self, path: Path, raw: dict) -> None:
        self.path = path
        self.raw = raw

    def fail(self, field: str, value: object, expected: str) -> CardError:
        return CardError(f"model card {self.path}: {field} = {value!r}: expected {expected}")

    def get(self, table: str, key: str, kind: type | tuple[type, ...], expected: str, default: object = None) -> object:
        section = self.raw if not table else self.raw.get(table, {})
        field = f"{table}.{key}" if table else key
        if key not in section:
            if default is not None:
                return default
            raise CardError(f"model card {self.path}: missing {field} ({expected})")
        value = section[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.fail(field, value, expected)
        return value

    def choice(self, table: str, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.get(table, key, str, " or ".join(repr(c) for c in choices), default)
        if value not in choices:
            raise self.fail(f"{table}.{key}", value, "one of " + ", ".join(repr(c) for c in choices))
        return str(value)

    def triple(self, key: str, default: list[float]) -> tuple[float, float, float]:
        value = self.get("preprocess", key, list, "a list of 3 numbers (R, G, B)", default)
        if len(value) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise self.fail(f"preprocess.{key}", value, "a list of 3 numbers (R, G, B)")
        return (float(value[0]), float(value[1]), float(value[2]))

    def card(self) -> ModelCard:
        for table, allowed in FIELDS.items():
            section = self.raw if not table else self.raw.get(table, {})
            if not isinstance(section, dict):
                raise self.fail(table, section, "a table")
            unknown = sorted(set(section) - set(allowed) - ({"input", "preprocess", "output"} if not table else set()))
            if unknown:
                where = f"[{table}] " if table else ""
                raise CardError(
                    f"model card {self.path}: unknown field(s) {where}{', '.join(unknown)}; known: {', '.join(allowed)}"
                )
        name = str(self.get("", "name", str, "a model name"))
        if not NAME.match(name):
            raise self.fail(
                "name", name, "letters, digits, '_', '.', '-' (at most 64), starting with a letter or digit"
            )
        input_spec = InputSpec(
            name=str(self.get("input", "name", str, "the ONNX input's name")),
            layout=self.choice("input", "layout", LAYOUTS),
            size=int(self.get("input", "size", int, "the square side in pixels, a positive integer")),
            dtype=self.choice("input", "dtype", tuple(DTYPES), "float32"),
        )
        if input_spec.size < 1:
            raise self.fail("input.size", input_spec.size, "a positive integer")
        preprocess = self.preprocess_spec(input_spec)
        output = OutputSpec(
            name=str(self.get("output", "name", str, "the ONNX output's name")),
            kind=self.choice("output", "kind", KINDS),
        )
        artifact, export = self.artifact(name)
        labels = self.labels()
        num_classes = self.check_onnx(artifact, input_spec, output, labels)
        savedmodel = self.raw.get("artifact_savedmodel")
        savedmodel_path = self.relative(str(savedmodel)) if savedmodel else None
        if savedmodel_path is not None and not savedmodel_path.is_dir():
            raise self.fail("artifact_savedmodel", savedmodel, "a SavedModel folder (relative to the card)")
        card = ModelCard(
            name=name,
            artifact=artifact,
            labels=labels,
            num_classes=num_classes,
            input=input_spec,
            preprocess=preprocess,
            output=output,
            source=str(self.path),
            card_id="",
            artifact_savedmodel=savedmodel_path,
            export=export,
        )
        digest = hashlib.sha256(json.dumps(card.serving_spec(), sort_keys=True).encode())
        digest.update(file_sha256(artifact).encode())
        return replace(card, card_id="sha256:" + digest.hexdigest())

    def preprocess_spec(self, input_spec: InputSpec) -> PreprocessSpec:
        raw = input_spec.dtype == "uint8"
        spec = PreprocessSpec(
            resize_shorter=int(self.get("preprocess", "resize_shorter", int, "a positive integer", input_spec.size)),
            crop=self.choice("preprocess", "crop", CROPS, "center"),
            scale=float(self.get("preprocess", "scale", (int, float), "a positive number", 1.0)),
            mean=self.triple("mean", [0.0, 0.0, 0.0]),
            std=self.triple("std", [1.0, 1.0, 1.0]),
            channels=self.choice("preprocess", "channels", CHANNELS, "RGB"),
        )
        if spec.resize_shorter < input_spec.size:
            raise self.fail("preprocess.resize_shorter", spec.resize_shorter, f">= input.size ({input_spec.size})")
        if spec.scale <= 0:
            raise self.fail("preprocess.scale", spec.scale, "a positive number")
        if 0 in spec.std:
            raise self.fail("preprocess.std", list(spec.std), "3 non-zero numbers")
        if raw and (spec.scale != 1.0 or spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0)):
            raise self.fail(
                "input.dtype", "uint8", "float32 when preprocess has scale/mean/std (uint8 models take raw pixels)"
            )
        return spec

    def relative(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.path.parent / path).resolve()

    def artifact(self, name: str) -> tuple[Path, str | None]:
        if "export" in self.raw:
            export = str(self.get("", "export", str, "a built-in model name"))
            from .export import export_builtin_onnx

            try:
                return export_builtin_onnx(export), export
            except ValueError as error:
                raise self.fail("export", export, str(error)) from None
        value = str(self.get("", "artifact", str, "the ONNX file, relative to the card"))
        path = self.relative(value)
        if not path.is_file():
            raise self.fail("artifact", value, f"an ONNX file; {path} does not exist")
        return path, None

    def labels(self) -> tuple[str, ...] | None:
        value = str(self.get("", "labels", str, f"a labels file (one per line, in output order) or {IMAGENET!r}"))
        if value == IMAGENET:
            return None
        path = self.relative(value)
        if not path.is_file():
            raise self.fail("labels", value, f"a labels file or {IMAGENET!r}; {path} does not exist")
        labels = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if not labels or duplicates:
            raise self.fail("labels", value, f"one distinct label per line (duplicates: {', '.join(duplicates)})")
        return labels

    def check_onnx(
        self, artifact: Path, input_spec: InputSpec, output: OutputSpec, labels: tuple[str, ...] | None
    ) -> int:
        """The ONNX graph against the card: names, rank, layout, size, dtype and the output's width."""
        import onnx

        try:
            graph = onnx.load(str(artifact), load_external_data=False).graph
        except Exception as error:  # noqa: BLE001 - protobuf raises several types for a file that is not ONNX
            raise self.fail("artifact", str(artifact), f"an ONNX model ({type(error).__name__}: {error})") from None
        initializers = {tensor.name for tensor in graph.initializer}
        inputs = {value.name: value for value in graph.input if value.name not in initializers}
        outputs = {value.name: value for value in graph.output}
        if input_spec.name not in inputs:
            raise self.fail("input.name", input_spec.name, f"one of the model's inputs: {', '.join(inputs)}")
        if output.name not in outputs:
            raise self.fail("output.name", output.name, f"one of the model's outputs: {', '.join(outputs)}")
        tensor = inputs[input_spec.name].type.tensor_type
        dims = _dims(tensor)
        if len(dims) != 4:
            raise self.fail("input.name", input_spec.name, f"a 4-d image input; the model's has shape {_shape(dims)}")
        if tensor.elem_type != DTYPES[input_spec.dtype]:
            actual = next(
                (name for name, code in DTYPES.items() if code == tensor.elem_type), f"type {tensor.elem_type}"
            )
            raise self.fail(
                "input.dtype", input_spec.dtype, f"{actual}, the type of the model's input {input_spec.name}"
            )
        layout = _layout(dims)
        if layout and layout != input_spec.layout:
            raise self.fail(
                "input.layout",
                input_spec.layout,
                f"{layout}: the model's input {input_spec.name} has shape {_shape(dims)}",
            )
        side = dims[2:] if input_spec.layout == "NCHW" else dims[1:3]
        if any(isinstance(d, int) and d != input_spec.size for d in side):
            raise self.fail("input.size", input_spec.size, f"the model's input side: shape {_shape(dims)}")
        out_dims = _dims(outputs[output.name].type.tensor_type)
        if len(out_dims) != 2:
            raise self.fail("output.name", output.name, f"a [batch, classes] output; it has shape {_shape(out_dims)}")
        width = out_dims[1]
        expected = IMAGENET_CLASSES if labels is None else len(labels)
        if isinstance(width, int) and width != expected:
            what = f"{IMAGENET!r} ({IMAGENET_CLASSES} classes)" if labels is None else f"{len(labels)} labels"
            raise self.fail(
                "labels",
                IMAGENET if labels is None else f"{len(labels)} labels",
                f"as many labels as output {output.name} has columns ({width}); the card gives {what}",
            )
        return expected


def _dims(tensor) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]


def _shape(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _layout(dims: list[int | str]) -> str | None:
    """NCHW or NHWC when the fixed dimensions say so (3 channels on one side only)."""
    first, last = dims[1] == 3, dims[3] == 3
    return "NCHW" if first and not last else "NHWC" if last and not first else None
