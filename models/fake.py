"""A face backend without networks, for fast tests of services and tasks.

Rule: a "face" is a blob of strongly red pixels (R >= 128, G <= 64, so edges blended by downscaling
still count); its blue value is the identity.
`paint_face` draws one. Blobs of the same blue value embed to the same unit vector, different
ones to unrelated vectors (cosine near 0), so matching logic can be tested exactly.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

from models.types import Detection

MIN_BLOB_PX = 4


def paint_face(image: Image.Image, box: tuple[int, int, int, int], identity: int) -> None:
    """Draw a fake face of `identity` (0..255) filling `box` (x1, y1, x2, y2) in place."""
    ImageDraw.Draw(image).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(255, 0, identity))


class FakeBackend:
    name = "fake"
    model_id = "fake-1"
    min_detection_score = 0.5

    def __init__(self, embedding_dim: int = 128) -> None:
        self.embedding_dim = embedding_dim
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self._detect_one(img) for img in images]

    def crop_faces(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        # The blob's centre only: resampled edges have blended colours.
        crops = []
        for d in detections:
            x1, y1, x2, y2 = d.box
            cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
            rx, ry = max(1, int((x2 - x1) / 4)), max(1, int((y2 - y1) / 4))
            crops.append(image[max(cy - ry, 0) : cy + ry, max(cx - rx, 0) : cx + rx].copy())
        return crops

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(crops), self.embedding_dim), np.float32)
        for i, crop in enumerate(crops):
            identity = int(np.median(crop[..., 2]))
            seed = int.from_bytes(hashlib.sha256(f"fake-face-{identity}".encode()).digest()[:8], "big")
            vector = np.random.default_rng(seed).standard_normal(self.embedding_dim)
            out[i] = vector / np.linalg.norm(vector)
        return out

    def _detect_one(self, image: np.ndarray) -> list[Detection]:
        mask = ((image[..., 0] >= 128) & (image[..., 1] <= 64)).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        faces = []
        for x, y, w, h, area in stats[1:count]:
            if min(w, h) < MIN_BLOB_PX:
                continue
            # Landmarks where a real face has them, so alignment code paths get plausible points.
            points = ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))
            faces.append(Detection(box=(float(x), float(y), float(x + w), float(y + h)),
                                   landmarks=tuple((x + px * w, y + py * h) for px, py in points),
                                   score=0.99))
        return faces
