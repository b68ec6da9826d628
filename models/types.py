"""Typed records and the backend protocol shared by every face backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

# Landmark order used by every backend: the subject's right eye, left eye, nose tip,
# right mouth corner, left mouth corner (as YuNet and MTCNN emit them, in image pixels).
LANDMARK_COUNT = 5


@dataclass(frozen=True)
class Detection:
    """One detected face in the pixels of the image it was detected on."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: tuple[tuple[float, float], ...]  # LANDMARK_COUNT (x, y) points
    score: float

    def scaled(self, factor: float) -> "Detection":
        """The same detection in an image `factor` times larger (e.g. the original)."""
        return Detection(
            box=tuple(v * factor for v in self.box),  # type: ignore[arg-type]
            landmarks=tuple((x * factor, y * factor) for x, y in self.landmarks),
            score=self.score,
        )

    def shifted(self, dx: float, dy: float) -> "Detection":
        """The same detection with the image's origin moved (e.g. in a region cut from it)."""
        return Detection(
            box=(self.box[0] + dx, self.box[1] + dy, self.box[2] + dx, self.box[3] + dy),
            landmarks=tuple((x + dx, y + dy) for x, y in self.landmarks),
            score=self.score,
        )

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class FaceBackend(Protocol):
    """A detector + embedder pair. Images are RGB uint8 arrays of shape (H, W, 3)."""

    name: str  # the setting that selects it: "yunet-sface" or "facenet"
    model_id: str  # stored with every embedding; vectors of different ids are never compared
    embedding_dim: int
    min_detection_score: float  # default quality gate for this detector

    def load(self) -> None:
        """Load weights; idempotent and safe to call from several threads."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in each image; one list per image, in input order."""

    def crop_faces(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        """Aligned crops, ready for `embed`, cut from `image` (detections in its pixels)."""

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised float32 embeddings, shape (len(crops), embedding_dim)."""
