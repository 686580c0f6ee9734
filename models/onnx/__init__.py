"""ONNX uploads, run by C3's own small interpreter so that gradients reach the input.

Why not a library: inversion backpropagates from the logits to the input image, so the graph
must run as differentiable torch ops. onnxruntime runs ONNX exactly but gives no gradients
with respect to the input (it is the test oracle here, never a runtime dependency).
onnx2torch, the converter this design follows, has no converters for what torch 2.13's
exporters emit by default (opset 20: Shape, Reshape and Identity version 19, Gelu version
20; checked with onnx2torch 1.5.15), and it needs torchvision. Writing the operators
ourselves also keeps the attack surface to an allowlist that this project tests.

- `graph`: parsing (`parse_model`, bytes only, never `onnx.load` with a path), validation
  (`validate_model`: sizes, external data, domains, functions, subgraphs, the allowlist) and
  `OnnxGraphModule`, which runs the graph node by node and names the node that fails.
- `registry`: operators keyed by (op, since_version), looked up at the model's opset.
- `ops`: the operators, one small function each, by family.
- `batch`: graphs exported with the batch fixed at 1 (rewritten and verified, or run per image).
"""

from models.onnx.batch import build_module, fixed_batch_size
from models.onnx.graph import (
    MAX_NODES,
    MAX_PARAMETERS,
    OnnxGraphModule,
    OnnxNodeFailed,
    default_opset,
    graph_input,
    input_dims,
    parse_model,
    validate_model,
)
from models.onnx.registry import (
    MAX_OPSET,
    MIN_OPSET,
    UnsupportedOperatorForm,
    lookup,
    operator_version,
    registered_versions,
)
from models.onnx.tensors import MAX_CREATED_VALUES

__all__ = [
    "MAX_CREATED_VALUES",
    "MAX_NODES",
    "MAX_OPSET",
    "MAX_PARAMETERS",
    "MIN_OPSET",
    "OnnxGraphModule",
    "OnnxNodeFailed",
    "UnsupportedOperatorForm",
    "build_module",
    "default_opset",
    "fixed_batch_size",
    "graph_input",
    "input_dims",
    "lookup",
    "operator_version",
    "parse_model",
    "registered_versions",
    "validate_model",
]
