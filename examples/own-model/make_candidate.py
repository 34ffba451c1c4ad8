"""Make a release candidate of this example's model, to see the release gate decide.

A real candidate comes from your training pipeline; these two stand for the ones a gate exists
to stop, built from ``model.onnx`` (run make_model.py first) by ONNX graph surgery:

- ``worse``: the scores of three of the twelve classes rotated (koala's score is reported as
  black_swan's, and so on), so photos of those classes are always answered wrong: on balanced
  samples a quarter of them, 25 points of top-1.
- ``heavier``: the whole network twice, on the same input, its two scores averaged: the same
  answers for twice the compute.

Each writes ``model.onnx``, ``labels.txt`` and ``card.toml`` into its own folder, for
``--serving-candidate=<folder>/card.toml``.

    python make_candidate.py worse --out candidate-worse
    python make_candidate.py heavier --out candidate-heavier
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = Path(__file__).parent
#: The output positions whose scores ``worse`` rotates (black_swan, koala, fiddler_crab).
ROTATED = (7, 8, 9)


def worse(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """The same network, three classes' scores rotated among themselves."""
    width = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    order = list(range(width))
    for position, source in zip(ROTATED, ROTATED[1:] + ROTATED[:1]):
        order[position] = source
    _rename_output(model, output, "true_scores")
    model.graph.initializer.append(numpy_helper.from_array(np.array(order, dtype=np.int64), "rotation"))
    model.graph.node.append(helper.make_node("Gather", ["true_scores", "rotation"], [output], axis=1))
    return model


def heavier(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """The network and a renamed copy of it (its own weights, so no optimiser merges the two) on
    the same input; the output is their mean, equal to either."""
    inputs = {value.name for value in model.graph.input}
    twin = onnx.ModelProto()
    twin.CopyFrom(model)

    def renamed(name: str) -> str:
        return name if name in inputs or not name else f"twin_{name}"

    for node in twin.graph.node:
        node.name = renamed(node.name)
        node.input[:] = [renamed(name) for name in node.input]
        node.output[:] = [renamed(name) for name in node.output]
    for initializer in twin.graph.initializer:
        initializer.name = renamed(initializer.name)
    _rename_output(model, output, "first_scores")
    model.graph.node.extend(twin.graph.node)
    model.graph.initializer.extend(twin.graph.initializer)
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"))
    model.graph.node.extend(
        [
            helper.make_node("Add", ["first_scores", renamed(output)], ["summed_scores"]),
            helper.make_node("Mul", ["summed_scores", "half"], [output]),
        ]
    )
    return model


def _rename_output(model: onnx.ModelProto, output: str, name: str) -> None:
    """The node that wrote the graph's output now writes ``name``; the caller writes ``output`` again."""
    for node in model.graph.node:
        node.output[:] = [name if value == output else value for value in node.output]


KINDS = {"worse": worse, "heavier": heavier}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--model", type=Path, default=HERE / "model.onnx", help="the current model (make_model.py)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = onnx.load(str(args.model))
    output = model.graph.output[0].name
    candidate = KINDS[args.kind](model, output)
    onnx.checker.check_model(candidate)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(candidate, str(args.out / "model.onnx"))
    shutil.copyfile(args.model.with_name("labels.txt"), args.out / "labels.txt")
    card = (
        (HERE / "card.toml").read_text().replace('name = "birds_and_beasts"', f'name = "birds_and_beasts_{args.kind}"')
    )
    (args.out / "card.toml").write_text(card)
    print(f"wrote {args.kind} candidate {args.out / 'model.onnx'} and its card")


if __name__ == "__main__":
    main()
