"""Photos in, faces out: detect on a downscaled copy, embed aligned crops of the full image.

Plain functions, one per stage, so the worker (event photos) and the API (selfies) share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from models.image import downscale, to_array
from models.types import Detection, FaceBackend


@dataclass(frozen=True)
class FaceResult:
    """One face in the ORIGINAL pixels of its photo (after EXIF orientation)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2, clipped to the photo
    landmarks: tuple[tuple[float, float], ...]
    score: float
    face_px: float  # the box's smaller side: how much detail the embedding had
    embedding: np.ndarray  # float32, L2-normalised, shape (backend.embedding_dim,)


def analyse_images(images: Sequence[Image.Image], backend: FaceBackend, *, detect_long_side: int = 1600,
                   min_face_px: int = 24, min_score: float | None = None) -> list[list[FaceResult]]:
    """Faces of every image, in input order; all crops are embedded together in batches."""
    detections = detect_faces(images, backend, detect_long_side=detect_long_side,
                              min_face_px=min_face_px, min_score=min_score)
    return embed_faces(images, detections, backend)


def detect_faces(images: Sequence[Image.Image], backend: FaceBackend, *, detect_long_side: int = 1600,
                 min_face_px: int = 24, min_score: float | None = None) -> list[list[Detection]]:
    """Detections in original pixels, without the weak ones and the ones too small to recognise.

    Detecting at 1600 px cost no accuracy against native resolution (shared/MODELS.md) and
    bounds time and memory for 50 MP uploads.
    """
    threshold = backend.min_detection_score if min_score is None else min_score
    small = [downscale(img, detect_long_side) for img in images]
    found = backend.detect([to_array(img) for img, _ in small])
    kept: list[list[Detection]] = []
    for img, (_, factor), faces in zip(images, small, found):
        full = [_clipped(d.scaled(factor), img.size) for d in faces if d.score >= threshold]
        kept.append([d for d in full if min(d.width, d.height) >= min_face_px])
    return kept


def embed_faces(images: Sequence[Image.Image], detections: Sequence[Sequence[Detection]],
                backend: FaceBackend) -> list[list[FaceResult]]:
    """Embed each detection from its full-resolution image; detections in that image's pixels."""
    crops: list[np.ndarray] = []
    for img, faces in zip(images, detections):
        if faces:  # skip the full-size array copy for photos without faces
            crops.extend(backend.crop_faces(to_array(img), faces))
    vectors = backend.embed(crops)
    results: list[list[FaceResult]] = []
    row = 0
    for faces in detections:
        results.append([_result(d, vectors[row + k]) for k, d in enumerate(faces)])
        row += len(faces)
    return results


def _clipped(d: Detection, size: tuple[int, int]) -> Detection:
    w, h = size
    x1, y1, x2, y2 = d.box
    box = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))
    return Detection(box=box, landmarks=d.landmarks, score=d.score)


def _result(d: Detection, vector: np.ndarray) -> FaceResult:
    return FaceResult(box=d.box, landmarks=d.landmarks, score=d.score,
                      face_px=min(d.width, d.height), embedding=vector.astype(np.float32))
