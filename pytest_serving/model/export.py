"""Export a registry model to the files servers load: ONNX, TorchScript (built-in models' artifacts).

Exports are build output: each is skipped when the file exists and its stamp
(``<file>.export-stamp``) names the same model, weights hash and exporter version, and
every file is written under a temporary name and renamed, so concurrent pytest-xdist
workers and interrupted runs never leave a half-written model for a server to load.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch

from pytest_serving.cache import cache_root
from pytest_serving.files import write_atomically
from pytest_serving.model.registry import DEFAULT_MODEL, ModelSpec, get_model

ONNX_OPSET = 17
# Bump when this module changes what it writes, so existing exports are rebuilt.
EXPORT_VERSION = 1
STAMP_SUFFIX = ".export-stamp"
# Batch 2, not 1: tracing on batch 1 can let a size-1 dimension be specialised away.
EXAMPLE_BATCH = 2


def export_onnx(dest: Path, model_name: str = DEFAULT_MODEL, weights: Path | None = None) -> Path:
    """ONNX (opset 17) with input ``input`` [N,3,224,224] float32 and output ``logits`` [N,1000]."""
    return _export(dest, model_name, weights, f"onnx opset {ONNX_OPSET}", _write_onnx)


def export_builtin_onnx(model_name: str) -> Path:
    """The ONNX of a built-in registry model, exported once into the cache (a built-in card's artifact)."""
    get_model(model_name)  # unknown names raise ValueError listing the known ones
    return export_onnx(cache_root() / "exports" / model_name / "model.onnx", model_name)


def export_torchscript(dest: Path, model_name: str = DEFAULT_MODEL, weights: Path | None = None) -> Path:
    """Traced TorchScript taking [N,3,224,224] float32 and returning logits [N,1000]."""
    return _export(dest, model_name, weights, "torchscript trace", _write_torchscript)


def stamp_path(dest: Path) -> Path:
    """Where the stamp of an exported file lives."""
    return dest.with_name(dest.name + STAMP_SUFFIX)


def _export(
    dest: Path,
    model_name: str,
    weights: Path | None,
    kind: str,
    write: Callable[[ModelSpec, torch.nn.Module, Path], None],
) -> Path:
    spec = get_model(model_name)
    dest = Path(dest)
    stamp = json.dumps(
        {
            "model": model_name,
            "weights": spec.weights_id(weights),
            "format": kind,
            "exporter": f"pytest-serving export {EXPORT_VERSION}, torch {torch.__version__}",
        },
        sort_keys=True,
    )
    stamp_file = stamp_path(dest)
    if dest.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return dest
    module = spec.load(weights).module
    write_atomically(dest, lambda path: write(spec, module, path))
    write_atomically(stamp_file, lambda path: path.write_text(stamp))
    return dest


def _example_input(spec: ModelSpec) -> torch.Tensor:
    return torch.zeros((EXAMPLE_BATCH, *spec.input_shape), dtype=torch.float32)


def _write_onnx(spec: ModelSpec, module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated; the dynamo one would need onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            module,
            (_example_input(spec),),
            str(path),
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes={spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def _write_torchscript(spec: ModelSpec, module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # TorchServe still loads TorchScript; torch marks tracing deprecated in favour of torch.export.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, _example_input(spec))
        torch.jit.save(traced, str(path))
