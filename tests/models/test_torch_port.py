"""The torch engine (the CUDA path) against OpenCV's reference, on real photos, on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from models.onnx_fold import dequantize
from models.types import Detection
from models.yunet_sface import YunetSfaceBackend
from tests.models.helpers import assert_same_detections, best_ious

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def torch_backend() -> YunetSfaceBackend:
    torch.set_num_threads(1)  # two threads stall on small shared VMs
    backend = YunetSfaceBackend(device="cpu", engine="torch", batch_size=8)
    backend.load()
    return backend


def test_detections_match_opencv(torch_backend: YunetSfaceBackend, photos: list[np.ndarray],
                                 reference: list[list[Detection]]) -> None:
    ported = torch_backend.detect(photos)  # mixed sizes in one call
    assert_same_detections(reference, ported, min_score=YunetSfaceBackend.min_detection_score)


def test_batched_detection_equals_one_photo_at_a_time(torch_backend: YunetSfaceBackend,
                                                      photos: list[np.ndarray]) -> None:
    subset = photos[:6] + photos[:2]  # repeats share a padded shape and so one batch
    together = torch_backend.detect(subset)
    for photo, faces in zip(subset, together):
        alone = torch_backend.detect([photo])[0]
        assert len(alone) == len(faces)
        assert min(best_ious(alone, faces), default=1.0) >= 0.999


def test_embeddings_match_opencv(torch_backend: YunetSfaceBackend, opencv_reference: YunetSfaceBackend,
                                 photos: list[np.ndarray], reference: list[list[Detection]]) -> None:
    crops = [c for photo, faces in zip(photos, reference) for c in opencv_reference.crop_faces(photo, faces)]
    assert len(crops) >= 80
    cosine = (opencv_reference.embed(crops) * torch_backend.embed(crops)).sum(axis=1)
    assert cosine.min() >= 0.999


def test_half_precision_sface_matches_fp32(torch_backend: YunetSfaceBackend, opencv_reference: YunetSfaceBackend,
                                           photos: list[np.ndarray], reference: list[list[Detection]]) -> None:
    half = YunetSfaceBackend(device="cpu", engine="torch", half=True)
    half.load()
    crops = [c for photo, faces in zip(photos[:8], reference[:8]) for c in opencv_reference.crop_faces(photo, faces)]
    try:
        vectors = half.embed(crops)
    except (RuntimeError, NotImplementedError) as error:  # older torch lacks some fp16 CPU kernels
        pytest.skip(f"torch cannot run SFace in fp16 on CPU: {error}")
    cosine = (vectors * torch_backend.embed(crops)).sum(axis=1)
    assert cosine.min() >= 0.999


def test_blocked_dequantize() -> None:
    q = np.array([[1, 2, 3, 4, 5]], np.int8)
    scale = np.array([[0.5, 2.0]], np.float32)
    zero = np.array([[1, 0]], np.int8)
    out = dequantize(q, scale, zero, axis=1, block=3)  # blocks: columns 0-2 and 3-4
    assert np.allclose(out, [[0.0, 0.5, 1.0, 8.0, 10.0]])
