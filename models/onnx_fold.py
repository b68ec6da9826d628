"""Fold the int8 block-quantised ONNX face networks into plain fp32 ones (no torch needed).

The shipped files store every weight as a `DequantizeLinear` (+ `Reshape`) of int8 constants.
`fold_constants` turns those into fp32 arrays once; the torch port (onnx_to_torch.py) runs the
remaining nodes itself, and `dequantised_model` writes them back as a small fp32 ONNX graph with
a free batch dimension that OpenCV runs directly, without re-dequantising on every forward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear, per-tensor, per-axis or blocked (opset 21)."""
    q = q.astype(np.float32)
    scale = scale.astype(np.float32)
    zero = zero.astype(np.float32)
    if scale.size == 1:
        return (q - zero.reshape(())) * scale.reshape(())
    axis = axis % q.ndim
    if block:
        scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis)
    else:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q - zero) * scale


def fold_constants(graph: onnx.GraphProto) -> tuple[dict[str, np.ndarray], list[onnx.NodeProto]]:
    """fp32 constants (weights dequantised, reshaped) and the nodes left to run."""
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    remaining = []
    for node in graph.node:
        attrs = _attrs(node)
        inputs_const = all(name in consts for name in node.input if name)
        if node.op_type == "DequantizeLinear" and inputs_const:
            q, scale, zero = (consts[n] for n in node.input)
            consts[node.output[0]] = dequantize(q, scale, zero, attrs.get("axis", 1), attrs.get("block_size", 0))
        elif node.op_type == "Reshape" and inputs_const:
            consts[node.output[0]] = consts[node.input[0]].reshape(consts[node.input[1]])
        elif node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"])
        else:
            remaining.append(node)
    return consts, remaining


def dequantised_model(path: Path) -> bytes:
    """The ONNX file at `path` (already sha256-checked by the caller) as fp32 ONNX bytes."""
    model = onnx.load(str(path))
    graph = model.graph
    consts, nodes = fold_constants(graph)
    used = {name for node in nodes for name in node.input if name}
    initialisers = [numpy_helper.from_array(np.ascontiguousarray(consts[name]), name)
                    for name in sorted(used) if name in consts]
    # The files list their initialisers as graph inputs too; only real inputs stay inputs.
    inputs = [i for i in graph.input if i.name in used and i.name not in consts]
    for value in (*inputs, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    folded = helper.make_graph(nodes, f"{graph.name}_fp32", inputs, list(graph.output), initialisers)
    return helper.make_model(folded, opset_imports=model.opset_import, ir_version=model.ir_version).SerializeToString()


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
