"""YuNet and SFace on OpenVINO's CPU plugin: the fastest CPU engine measured here.

`bench/pipeline.py --steps`, one thread, 1 December 2026 on this project's Xeon (AMX): SFace 13.4
ms per face on OpenCV 5 (int8 or fp32) against 7.1 in OpenVINO fp32 and 2.1 in OpenVINO bf16;
YuNet on a 1600 px photo 88 ms on OpenCV against 39 ms in OpenVINO fp32.

The int8 files are dequantised to fp32 once at load (models/onnx_fold.py) and compiled for one
thread (models/openvino_cpu.py).
- YuNet runs in fp32: reduced precision moved small-face boxes (fp16 on CUDA: IoU down to 0.88).
  A model compiled for one padded input size runs 20% faster than the any-size one but costs 80
  ms to compile: an event's photos come in two to four sizes, so a size seen `COMPILE_AFTER`
  times gets its own model (models/openvino_cpu.py: ByShape; a few are kept); photos of other
  sizes (phones, crops, selfies) use the any-size model.
- SFace runs in bf16 where the CPU computes in it (AMX or AVX-512 BF16; embeddings cosine >= 0.999
  to fp32, tests/models/test_openvino_engine.py), else fp32.
Outputs are the same arrays OpenCV gives (FaceDetectorYN rows, SFace raw features).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.face_align import CROP_SIZE
from models.onnx_fold import dequantised_model
from models.openvino_cpu import ByShape, infer_request, new_core
from models.yunet_sface import STRIDES, pad_to

COMPILE_AFTER = 3  # photos of one padded size before it gets a model of its own


def _read(core: Any, path: Path) -> Any:
    import io

    return core.read_model(io.BytesIO(dequantised_model(path)))


def sface_precision(core: Any) -> str:
    """"bf16" where OpenVINO computes in bf16 on this CPU, else "f32"."""
    return "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"


class OpenvinoYunet:
    """YuNet; `detect` returns an (n, 15) array like FaceDetectorYN.detect: x, y, w, h, five (x, y)
    landmarks, score; best first."""

    def __init__(self, path: Path, *, score_floor: float, nms_iou: float, top_k: int, shapes_kept: int = 3) -> None:
        core = new_core()
        model = _read(core, path)
        self._output_names = [out.get_any_name() for out in model.outputs]  # cls_8 ... kps_32
        self.score_floor, self.nms_iou, self.top_k = score_floor, nms_iou, top_k
        model.reshape([1, 3, -1, -1])
        self.by_shape = ByShape(core, model, "f32", compile_after=COMPILE_AFTER, kept=shapes_kept)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """An RGB uint8 image, padded bottom/right with zeros to a multiple of 32, as OpenCV pads."""
        height, width = image.shape[:2]
        padded = (pad_to(height), pad_to(width))
        blob = np.zeros((1, 3, *padded), np.float32)
        blob[0, :, :height, :width] = image[:, :, ::-1].transpose(2, 0, 1)  # YuNet wants BGR, 0..255
        request = self.by_shape.request(blob.shape)
        request.infer({0: blob})
        outputs = {name: request.get_output_tensor(i).data for i, name in enumerate(self._output_names)}
        return decode(outputs, padded, score_floor=self.score_floor, nms_iou=self.nms_iou, top_k=self.top_k)


def decode(outputs: dict[str, np.ndarray], padded: tuple[int, int], *, score_floor: float, nms_iou: float,
           top_k: int) -> np.ndarray:
    """YuNet's twelve output heads of one image (batch 1) as FaceDetectorYN rows after NMS."""
    height, width = padded
    rows = []
    for stride in STRIDES:
        cls, obj = outputs[f"cls_{stride}"][0, :, 0], outputs[f"obj_{stride}"][0, :, 0]
        bbox, kps = outputs[f"bbox_{stride}"][0], outputs[f"kps_{stride}"][0]
        cols = width // stride
        idx = np.arange(cls.shape[0])
        grid = np.stack([idx % cols, idx // cols], axis=1).astype(np.float32)  # (c, r) per prior
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = score >= score_floor  # most priors are background: decode only the candidates
        grid, bbox, kps, score = grid[keep], bbox[keep], kps[keep], score[keep]
        centre = (grid + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:4]) * stride
        points = (kps.reshape(-1, 5, 2) + grid[:, None, :]) * stride
        rows.append(np.concatenate([centre - size / 2, size, points.reshape(-1, 10), score[:, None]], axis=1))
    faces = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 15), np.float32)
    if not len(faces):
        return np.zeros((0, 15), np.float32)
    kept = cv2.dnn.NMSBoxes(faces[:, :4].tolist(), faces[:, 14].tolist(), score_floor, nms_iou, top_k=top_k)
    return faces[np.asarray(kept, dtype=np.int64).reshape(-1)]


class OpenvinoSface:
    """SFace on aligned 112x112 RGB crops; returns raw (unnormalised) 128-d features."""

    def __init__(self, path: Path, precision: str | None = None) -> None:
        core = new_core()
        model = _read(core, path)
        model.reshape([-1, 3, CROP_SIZE, CROP_SIZE])  # any batch: one compiled model for every count
        self.precision = precision or sface_precision(core)
        self._request = infer_request(core, model, self.precision)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        blob = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)  # the graph scales itself
        self._request.infer({0: blob})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)
