"""Cut 112x112 face crops aligned on the five landmarks, the input SFace (and ArcFace) expect."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

CROP_SIZE = 112
# Where the five landmarks (eyes, nose tip, mouth corners) sit in the crop SFace was trained on.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray = ARCFACE_112) -> np.ndarray:
    """2x3 matrix of the least-squares similarity (Umeyama 1991) taking `src` points onto `dst`.

    Same result as OpenCV's FaceRecognizerSF.alignCrop; rotation, uniform scale and shift only,
    so a face is never sheared to fit.
    """
    src = np.asarray(src, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0  # a reflection would mirror the face; take the best proper rotation instead
    rotation = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / src_var if src_var > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_crop(image: np.ndarray, landmarks: Sequence[tuple[float, float]]) -> np.ndarray:
    """(112, 112, 3) crop of `image` with the landmarks moved onto ARCFACE_112; same channel order."""
    matrix = similarity_transform(np.asarray(landmarks, dtype=np.float64))
    return cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR)
