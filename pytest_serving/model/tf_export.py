"""EfficientNet-Lite0 as a TensorFlow SavedModel, for TF Serving and the KServe image.

The TF graph is built from the loaded PyTorch module itself, layer by layer, in a
``tf.Module`` of plain ``tf.nn`` ops, so it carries the very weights the in-process
reference runs. Where the two frameworks differ by default, the port copies PyTorch:

* padding: the package's convolutions pad explicitly (``Conv2dStaticSamePadding`` holds a
  ``ZeroPad2d`` computed for 224x224 inputs, asymmetric where TF "SAME" would happen to
  agree); each TF convolution applies that same padding with ``tf.pad`` and convolves
  ``VALID``, so the equality holds by construction, not by coincidence;
* batch norm: inference statistics with the module's own ``eps`` (1e-3 here, where
  PyTorch's default would be 1e-5);
* activations: ReLU6 everywhere (the Lite variants have no swish and no squeeze-excite);
* layout: NHWC inside (TensorFlow's CPU convolutions support no other), NCHW at the
  signature, like the ONNX export, so one preprocessed tensor feeds every server.

The SavedModel has one signature, ``serving_default``: input ``input`` float32
[N, 3, 224, 224] (``preprocess.py``'s output) -> output ``logits`` float32 [N, 1000].
There is no bytes-input signature on purpose: decoding and resizing inside the graph
(``tf.image``) would not reproduce Pillow's bilinear resize, so servers preprocess with
``serving_preprocess.py`` and feed this signature.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import torch
from torch import nn

from pytest_serving.files import build_atomically
from pytest_serving.model.registry import DEFAULT_MODEL, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, get_model

#: Bump when this module changes what it writes, so existing SavedModels are rebuilt.
TF_EXPORT_VERSION = 1
SIGNATURE = "serving_default"
#: The stamp lives inside the SavedModel folder; servers ignore files they do not know.
STAMP_NAME = ".export-stamp"
PORTABLE_MODELS = ("efficientnet_lite0",)
_NCHW_TO_NHWC = (0, 2, 3, 1)


def _constant(tensor: torch.Tensor) -> tf.Variable:
    return tf.Variable(tensor.detach().cpu().numpy().astype(np.float32), trainable=False)


class Conv(tf.Module):
    """A PyTorch ``Conv2d`` (dense or depthwise) with the explicit padding of its module."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        weight = conv.weight.detach().cpu().numpy()
        self.depthwise = conv.groups > 1
        if self.depthwise and not conv.groups == conv.in_channels == conv.out_channels:
            raise ValueError(f"cannot port a grouped convolution with groups={conv.groups}")
        # torch [out, in/groups, kh, kw] -> TF [kh, kw, in, out], or [kh, kw, channels, 1] when depthwise.
        kernel = weight.transpose(2, 3, 0, 1) if self.depthwise else weight.transpose(2, 3, 1, 0)
        self.kernel = tf.Variable(kernel.astype(np.float32), trainable=False)
        self.bias = _constant(conv.bias) if conv.bias is not None else None
        self.strides = (1, *conv.stride, 1)
        self.paddings = _explicit_padding(conv)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        if self.paddings is not None:
            x = tf.pad(x, self.paddings)
        if self.depthwise:
            x = tf.nn.depthwise_conv2d(x, self.kernel, self.strides, "VALID")
        else:
            x = tf.nn.conv2d(x, self.kernel, self.strides, "VALID")
        return x if self.bias is None else tf.nn.bias_add(x, self.bias)


def _explicit_padding(conv: nn.Conv2d) -> list[list[int]] | None:
    """The module's own padding as ``tf.pad`` paddings for NHWC, or None when it pads nothing."""
    if any(conv.padding):
        raise ValueError(f"cannot port {type(conv).__name__} with implicit padding {conv.padding}")
    static = getattr(conv, "static_padding", None)
    if not isinstance(static, nn.ZeroPad2d):
        return None
    left, right, top, bottom = static.padding
    return [[0, 0], [top, bottom], [left, right], [0, 0]]


class BatchNorm(tf.Module):
    """Inference-mode ``BatchNorm2d``: running statistics and the module's ``eps``."""

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__()
        self.mean = _constant(norm.running_mean)
        self.variance = _constant(norm.running_var)
        self.scale = _constant(norm.weight)
        self.offset = _constant(norm.bias)
        self.epsilon = float(norm.eps)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.batch_normalization(x, self.mean, self.variance, self.offset, self.scale, self.epsilon)


class MBConv(tf.Module):
    """One inverted-residual block: optional 1x1 expansion, depthwise, 1x1 projection, skip."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if block.has_se:
            raise ValueError("cannot port squeeze-and-excitation blocks (EfficientNet-Lite has none)")
        args = block._block_args
        expands = args.expand_ratio != 1
        self.expand = (Conv(block._expand_conv), BatchNorm(block._bn0)) if expands else None
        self.depthwise = (Conv(block._depthwise_conv), BatchNorm(block._bn1))
        self.project = (Conv(block._project_conv), BatchNorm(block._bn2))
        self.skip = bool(block.id_skip and args.stride == 1 and args.input_filters == args.output_filters)

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        x = inputs
        if self.expand is not None:
            x = tf.nn.relu6(self.expand[1](self.expand[0](x)))
        x = tf.nn.relu6(self.depthwise[1](self.depthwise[0](x)))
        x = self.project[1](self.project[0](x))
        return x + inputs if self.skip else x


class EfficientNetLiteTF(tf.Module):
    """The TF twin of ``efficientnet_lite_pytorch.EfficientNet`` in eval mode (dropout is a no-op)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model._swish, nn.ReLU6):
            raise TypeError("cannot port an EfficientNet with swish activations: only the Lite variants")
        self.stem = (Conv(model._conv_stem), BatchNorm(model._bn0))
        self.blocks = [MBConv(block) for block in model._blocks]
        self.head = (Conv(model._conv_head), BatchNorm(model._bn1))
        self.classifier_weight = tf.Variable(model._fc.weight.detach().cpu().numpy().T.copy(), trainable=False)
        self.classifier_bias = _constant(model._fc.bias)

    def logits(self, images_nchw: tf.Tensor) -> tf.Tensor:
        x = tf.transpose(images_nchw, _NCHW_TO_NHWC)
        x = tf.nn.relu6(self.stem[1](self.stem[0](x)))
        for block in self.blocks:
            x = block(x)
        x = tf.nn.relu6(self.head[1](self.head[0](x)))
        x = tf.reduce_mean(x, axis=(1, 2))
        return tf.matmul(x, self.classifier_weight) + self.classifier_bias

    @tf.function(input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=INPUT_NAME)])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: self.logits(images)}


def port_efficientnet_lite(model: nn.Module) -> EfficientNetLiteTF:
    """The TF module with ``model``'s weights; ``model`` is an EfficientNet-Lite in eval mode."""
    with torch.no_grad():
        return EfficientNetLiteTF(model.eval())


def export_saved_model(dest: Path, model_name: str = DEFAULT_MODEL, weights: Path | None = None) -> Path:
    """Write the SavedModel folder ``dest`` (see the module docstring for its signature); cached.

    Skipped when ``dest`` holds a stamp naming the same model, weights hash and exporter; else
    written beside ``dest`` under a temporary name and renamed, so a server or a concurrent
    pytest-xdist worker never sees half a SavedModel.
    """
    if model_name not in PORTABLE_MODELS:
        raise ValueError(
            f"no TensorFlow port of model {model_name!r}: the SavedModel export supports {', '.join(PORTABLE_MODELS)}"
        )
    dest = Path(dest)
    stamp = _stamp(model_name, weights)
    if _has_stamp(dest, stamp):
        return dest
    module = port_efficientnet_lite(get_model(model_name).load(weights).module)

    def save(scratch: Path) -> Path:
        folder = scratch / "saved_model"
        folder.mkdir()
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE: module.serve})
        (folder / STAMP_NAME).write_text(stamp)
        _make_readable(folder)
        return folder

    return build_atomically(dest, save, done=lambda folder: _has_stamp(folder, stamp))


def _stamp(model_name: str, weights: Path | None) -> str:
    return json.dumps(
        {
            "model": model_name,
            "weights": get_model(model_name).weights_id(weights),
            "format": f"tf saved_model ({SIGNATURE}: {INPUT_NAME} NCHW float32 -> {OUTPUT_NAME})",
            "exporter": f"pytest-serving tf_export {TF_EXPORT_VERSION}, tensorflow {tf.__version__}",
        },
        sort_keys=True,
    )


def _has_stamp(folder: Path, stamp: str) -> bool:
    stamp_file = folder / STAMP_NAME
    return stamp_file.is_file() and stamp_file.read_text() == stamp


def _make_readable(folder: Path) -> None:
    """Servers in containers may run as another user than the one exporting."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
