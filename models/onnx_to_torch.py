"""Run the two small ONNX face networks (YuNet, SFace) in torch, batched, on CPU or CUDA.

The shipped files are int8 block-quantised: every weight is a `DequantizeLinear` (+ `Reshape`) of
constants. Those are folded once into fp32 tensors here, and the remaining graph, a few plain
ops, runs node by node. Only the ops these two graphs use are supported; anything else raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from models.onnx_fold import fold_constants


class OnnxGraph(torch.nn.Module):
    """The folded graph as a module: forward(*inputs) -> list of outputs in graph order.

    `Reshape` keeps the batch dimension (these graphs were exported with batch 1), which is
    what lets one call run many images or crops.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        graph = onnx.load(str(path)).graph
        consts, nodes = fold_constants(graph)
        used = {name for node in nodes for name in node.input}
        self._const_names: dict[str, str] = {}
        for i, name in enumerate(sorted(n for n in used if n in consts)):
            key = f"c{i}"
            self._const_names[name] = key
            array = consts[name]
            tensor = torch.from_numpy(np.array(array, copy=True))  # writable, owned copy
            self.register_buffer(key, tensor.float() if array.dtype.kind == "f" else tensor)
        self.input_names = [i.name for i in graph.input if i.name not in consts]
        self.output_names = [o.name for o in graph.output]
        self._nodes = [(node.op_type, list(node.input), list(node.output), _attrs(node)) for node in nodes]
        for op_type, ins, _, attrs in self._nodes:
            # Shapes and scales as Python numbers now, so forward never syncs a GPU to read them.
            if op_type in ("Reshape", "Resize"):
                attrs["_const"] = [float(v) for v in consts[ins[1 if op_type == "Reshape" else 2]].ravel()]
        self._free_after = _release_plan([ins for _, ins, _, _ in self._nodes], set(consts) | set(self.output_names))
        for op_type, *_ in self._nodes:
            if op_type not in _OPS:
                raise NotImplementedError(f"ONNX op {op_type} is not supported by {__name__}")

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        env: dict[str, Any] = {name: getattr(self, key) for name, key in self._const_names.items()}
        env.update(zip(self.input_names, inputs))
        for (op_type, ins, outs, attrs), dead in zip(self._nodes, self._free_after):
            env[outs[0]] = _OPS[op_type](attrs, *[env[n] if n else None for n in ins])
            for name in dead:
                del env[name]
        return [env[name] for name in self.output_names]


def _release_plan(node_inputs: list[list[str]], keep: set[str]) -> list[list[str]]:
    """Per node, the activations it reads for the last time. Dropping them right after cuts peak
    memory from every intermediate of a 1600 px photo (gigabytes) to a few live ones."""
    last_use = {name: i for i, ins in enumerate(node_inputs) for name in ins if name}
    return [[n for n in dict.fromkeys(ins) if n and last_use[n] == i and n not in keep]
            for i, ins in enumerate(node_inputs)]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(a: dict[str, Any], x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    pads = a.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise NotImplementedError("asymmetric Conv padding")
    return F.conv2d(x, w, b, a.get("strides", 1), pads[:2], a.get("dilations", 1), a.get("group", 1))


def _maxpool(a: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    pads = a.get("pads", [0, 0, 0, 0])
    return F.max_pool2d(x, a["kernel_shape"], a.get("strides"), pads[:2], ceil_mode=bool(a.get("ceil_mode", 0)))


def _resize(a: dict[str, Any], x: torch.Tensor, *_: Any) -> torch.Tensor:
    # YuNet's FPN upsampling: nearest, asymmetric, floor, which is torch's "nearest".
    if a.get("mode", b"nearest") != b"nearest":
        raise NotImplementedError("only nearest Resize")
    scales = a["_const"]
    return F.interpolate(x, scale_factor=(scales[2], scales[3]), mode="nearest")


def _reshape(a: dict[str, Any], x: torch.Tensor, *_: Any) -> torch.Tensor:
    # Exported with batch 1: keep the real batch size in front.
    return x.reshape(x.shape[0], *[int(v) for v in a["_const"][1:]])


def _batchnorm(a: dict[str, Any], x: torch.Tensor, g: torch.Tensor, b: torch.Tensor,
               mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, mean, var, g, b, training=False, eps=a.get("epsilon", 1e-5))


def _gemm(a: dict[str, Any], x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise NotImplementedError("Gemm with transA/alpha/beta")
    return F.linear(x, w if a.get("transB", 0) else w.t(), b)


_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Conv": _conv,
    "Relu": lambda a, x: F.relu(x),
    "Sigmoid": lambda a, x: torch.sigmoid(x),
    "PRelu": lambda a, x, slope: torch.where(x >= 0, x, x * slope),
    "MaxPool": _maxpool,
    "Resize": _resize,
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Transpose": lambda a, x: x.permute(*a["perm"]),
    "Reshape": _reshape,
    "Flatten": lambda a, x: x.flatten(a.get("axis", 1)),
    "Dropout": lambda a, x, *_: x,
    "BatchNormalization": _batchnorm,
    "Gemm": _gemm,
}
