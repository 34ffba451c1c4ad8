"""Make this example's model: a 12-class ONNX classifier with its own input contract.

It stands for the model your training pipeline exports. It is built from pytest-serving's
embedded EfficientNet-Lite0 (so it needs ``pip install pytest-serving[model]`` once, for torch):
the ONNX graph gets a new input ``pixel_values`` — NHWC, 240 x 240, RGB normalised with the
ImageNet mean and std — and a new output ``scores``, the logits of 12 classes with their own
names. Nothing is downloaded and no weights are committed: run it to write ``model.onnx`` and
``labels.txt`` beside ``card.toml``.

    python make_model.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

#: (ImageNet class index, this model's label), in output order.
CLASSES = (
    (0, "tench"),
    (10, "brambling"),
    (15, "robin"),
    (30, "bullfrog"),
    (35, "mud_turtle"),
    (85, "quail"),
    (90, "lorikeet"),
    (100, "black_swan"),
    (105, "koala"),
    (120, "fiddler_crab"),
    (125, "hermit_crab"),
    (130, "flamingo"),
)
SIZE = 240
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: What the embedded model expects: [0, 1] pixels as (x - 0.5) / 0.5, NCHW, 224 x 224.
BASE_MEAN, BASE_STD, BASE_SIZE = 0.5, 0.5, 224


def adapter(opset: int, ir_version: int) -> onnx.ModelProto:
    """pixel_values (NHWC, ImageNet-normalised, 240 px) -> the embedded model's input."""
    scale = (IMAGENET_STD / BASE_STD).reshape(1, 3, 1, 1)
    shift = ((IMAGENET_MEAN - BASE_MEAN) / BASE_STD).reshape(1, 3, 1, 1)
    nodes = [
        helper.make_node("Transpose", ["pixel_values"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["normalised"]),
        helper.make_node("Resize", ["normalised", "", "resize_scales"], ["base_input"], mode="linear"),
    ]
    graph = helper.make_graph(
        nodes,
        "adapter",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("base_input", TensorProto.FLOAT, ["batch", 3, BASE_SIZE, BASE_SIZE])],
        initializer=[
            numpy_helper.from_array(scale.astype(np.float32), "scale"),
            numpy_helper.from_array(shift.astype(np.float32), "shift"),
            numpy_helper.from_array(np.array([1, 1, BASE_SIZE / SIZE, BASE_SIZE / SIZE], np.float32), "resize_scales"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def head(opset: int, ir_version: int) -> onnx.ModelProto:
    """The embedded model's 1000 logits -> this model's 12 ``scores``."""
    indices = np.array([index for index, _ in CLASSES], dtype=np.int64)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["base_logits", "classes"], ["scores"], axis=1)],
        "head",
        [helper.make_tensor_value_info("base_logits", TensorProto.FLOAT, ["batch", 1000])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(CLASSES)])],
        initializer=[numpy_helper.from_array(indices, "classes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    from pytest_serving.model.export import export_builtin_onnx

    base = onnx.load(str(export_builtin_onnx("efficientnet_lite0")))
    base = compose.add_prefix(base, "base_")
    opset = next(o.version for o in base.opset_import if o.domain in ("", "ai.onnx"))
    model = compose.merge_models(adapter(opset, base.ir_version), base, io_map=[("base_input", "base_input")])
    model = compose.merge_models(model, head(opset, base.ir_version), io_map=[("base_logits", "base_logits")])
    onnx.checker.check_model(model)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.out / "model.onnx"))
    (args.out / "labels.txt").write_text("".join(f"{label}\n" for _, label in CLASSES))
    print(f"wrote {args.out / 'model.onnx'} and {args.out / 'labels.txt'} ({len(CLASSES)} classes)")


if __name__ == "__main__":
    main()
