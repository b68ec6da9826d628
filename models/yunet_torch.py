"""YuNet and SFace in torch: the GPU path, batched across photos and crops, fp16 where it holds.

Outputs match OpenCV's FaceDetectorYN / SFace forward (see tests/models/test_torch_port.py), so
both engines of `YunetSfaceBackend` give the same faces and vectors.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

from models.onnx_to_torch import OnnxGraph
from models.yunet_sface import STRIDES, pad_to

class TorchYunet:
    """Batched YuNet; `detect` returns per image an (n, 15) array like FaceDetectorYN.detect:
    x, y, w, h, five (x, y) landmarks, score."""

    def __init__(self, path: Path, device: str, half: bool, *, score_floor: float, nms_iou: float,
                 top_k: int) -> None:
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.net = OnnxGraph(path).eval().to(self.device, self.dtype)
        self.score_floor, self.nms_iou, self.top_k = score_floor, nms_iou, top_k

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 images, padded bottom/right with zeros onto one canvas, as OpenCV pads.

        Pass images of one padded size (see `padded_shape`): a larger canvas changes what the
        deep layers see and moved some boxes by up to 9% IoU in tests.
        """
        if not images:
            return []
        height = pad_to(max(img.shape[0] for img in images))
        width = pad_to(max(img.shape[1] for img in images))
        canvas = np.zeros((len(images), height, width, 3), np.uint8)
        for i, img in enumerate(images):
            canvas[i, : img.shape[0], : img.shape[1]] = img
        batch = torch.from_numpy(canvas).to(self.device)
        # YuNet was trained on BGR 0..255; flip channels on the device, not per image on the CPU.
        batch = batch.permute(0, 3, 1, 2).flip(1).to(self.dtype)
        with self._exact_fp32():
            outputs = [o.float() for o in self.net(batch)]
        return self._decode(outputs, [img.shape[:2] for img in images], height, width)

    @contextlib.contextmanager
    def _exact_fp32(self) -> Iterator[None]:
        # cuDNN convolutions default to TF32 (fp16-like mantissa); like fp16 that moved small-face
        # boxes (IoU 0.88 against OpenCV), so YuNet keeps full fp32. Callers hold the backend lock.
        if self.device.type != "cuda" or self.dtype != torch.float32:
            yield
            return
        cudnn = torch.backends.cudnn
        with cudnn.flags(enabled=True, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            yield

    def _decode(self, outputs: list[torch.Tensor], sizes: list[tuple[int, ...]], height: int,
                width: int) -> list[np.ndarray]:
        n = len(STRIDES)
        rows: list[torch.Tensor] = []
        for level, stride in enumerate(STRIDES):
            cls, obj, bbox, kps = (outputs[level + k * n] for k in range(4))
            cols = width // stride
            idx = torch.arange(cls.shape[1], device=cls.device)
            grid = torch.stack([idx % cols, idx // cols], dim=1).float()  # (c, r) per prior
            score = (cls.clamp(0, 1) * obj.clamp(0, 1)).sqrt()  # (B, P, 1)
            centre = (grid + bbox[..., :2]) * stride
            size = bbox[..., 2:4].exp() * stride
            points = (kps.reshape(*kps.shape[:2], 5, 2) + grid[:, None, :]) * stride
            rows.append(torch.cat([centre - size / 2, size, points.flatten(2), score], dim=2))
        faces = torch.cat(rows, dim=1)  # (B, all priors, 15)
        image_idx = torch.arange(faces.shape[0], device=faces.device)[:, None].expand(faces.shape[:2])
        # Keep what OpenCV would have seen: the image plus its own padding to a multiple of 32.
        limits = torch.tensor([[pad_to(w), pad_to(h)] for h, w, *_ in sizes], device=faces.device).float()
        centre = faces[..., :2] + faces[..., 2:4] / 2
        keep = (faces[..., 14] >= self.score_floor) & (centre < limits[:, None, :]).all(dim=2)
        faces, image_idx = faces[keep], image_idx[keep]
        boxes = torch.cat([faces[:, :2], faces[:, :2] + faces[:, 2:4]], dim=1)
        kept = batched_nms(boxes, faces[:, 14], image_idx, self.nms_iou)
        faces, image_idx = faces[kept].cpu().numpy(), image_idx[kept].cpu().numpy()
        return [faces[image_idx == i][: self.top_k] for i in range(len(sizes))]


class TorchSface:
    """Batched SFace on aligned 112x112 RGB crops; returns raw (unnormalised) 128-d features."""

    def __init__(self, path: Path, device: str, half: bool) -> None:
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.net = OnnxGraph(path).eval().to(self.device, self.dtype)

    @torch.inference_mode()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        batch = batch.permute(0, 3, 1, 2).to(self.dtype)  # the graph subtracts 127.5 and scales itself
        return self.net(batch)[0].float().cpu().numpy()
