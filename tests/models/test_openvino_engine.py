"""The openvino engine (the default on CPU) against OpenCV's reference, on the real shared photos."""

from __future__ import annotations

import numpy as np
import pytest

from models.types import Detection
from models.yunet_openvino import OpenvinoSface
from models.weights import SFACE, verified_path
from models.yunet_sface import YunetSfaceBackend
from tests.models.helpers import assert_same_detections, best_ious


@pytest.fixture(scope="module")
def crops(opencv_reference: YunetSfaceBackend, photos: list[np.ndarray],
          reference: list[list[Detection]]) -> list[np.ndarray]:
    found = [c for photo, faces in zip(photos, reference) for c in opencv_reference.crop_faces(photo, faces)]
    assert len(found) >= 80
    return found


def test_default_cpu_engine_is_openvino(yunet_sface: YunetSfaceBackend) -> None:
    assert yunet_sface.engine == "openvino"


def test_detections_match_opencv(yunet_sface: YunetSfaceBackend, photos: list[np.ndarray],
                                 reference: list[list[Detection]]) -> None:
    found = yunet_sface.detect(photos)
    assert_same_detections(reference, found, min_score=YunetSfaceBackend.min_detection_score)
    gate = YunetSfaceBackend.min_detection_score
    assert sum(f.score >= gate for faces in found for f in faces) == sum(r.score >= gate for faces in reference for r in faces)


def test_detections_come_best_first_and_odd_sizes_work(yunet_sface: YunetSfaceBackend,
                                                       photos: list[np.ndarray]) -> None:
    odd = photos[0][:517, :733]  # neither side a multiple of 32: padded like OpenCV pads
    for faces in yunet_sface.detect([odd, photos[1]]):
        scores = [f.score for f in faces]
        assert scores == sorted(scores, reverse=True)
    blank = np.zeros((240, 320, 3), np.uint8)
    assert yunet_sface.detect([blank]) == [[]]


def test_embeddings_match_opencv(yunet_sface: YunetSfaceBackend, opencv_reference: YunetSfaceBackend,
                                 crops: list[np.ndarray]) -> None:
    cosine = (opencv_reference.embed(crops) * yunet_sface.embed(crops)).sum(axis=1)
    assert cosine.min() >= 0.999


def test_fp32_sface_equals_opencv_and_any_batch_size(opencv_reference: YunetSfaceBackend,
                                                     crops: list[np.ndarray]) -> None:
    fp32 = OpenvinoSface(verified_path(SFACE), precision="f32")
    batch = np.stack(crops[:7]).astype(np.float32)
    whole = fp32.embed(batch)
    one_by_one = np.concatenate([fp32.embed(batch[i:i + 1]) for i in range(len(batch))])
    assert np.allclose(whole, one_by_one, atol=1e-4)
    unit = whole / np.linalg.norm(whole, axis=1, keepdims=True)
    assert (unit * opencv_reference.embed(crops[:7])).sum(axis=1).min() >= 0.9999


def test_a_size_seen_often_gets_its_own_model_with_the_same_faces(photos: list[np.ndarray]) -> None:
    from models.yunet_openvino import COMPILE_AFTER

    backend = YunetSfaceBackend(device="cpu")  # a fresh one: no size seen yet
    backend.load()
    detector = backend._detector
    photo = photos[0]
    runs = [backend.detect([photo])[0] for _ in range(COMPILE_AFTER + 1)]
    assert len(detector.by_shape.compiled) == 1  # the first runs used the any-size model
    for faces in runs[1:]:
        assert len(faces) == len(runs[0])
        assert min(best_ious(runs[0], faces), default=1.0) >= 0.999


def tiny_network():  # type: ignore[no-untyped-def]
    """A one-layer ONNX network with any input shape, read by OpenVINO (for ByShape's policy)."""
    import io

    import onnx
    from onnx import TensorProto, helper

    from models.openvino_cpu import new_core

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    core = new_core()
    return core, core.read_model(io.BytesIO(model.SerializeToString()))


def test_by_shape_compiles_recurring_shapes_once_and_never_thrashes(monkeypatch) -> None:
    from models import openvino_cpu

    core, model = tiny_network()
    nets = openvino_cpu.ByShape(core, model, "f32", compile_after=3, kept=2)
    compiled: list[int] = []  # one entry per compilation from here on
    real = openvino_cpu.infer_request
    monkeypatch.setattr(openvino_cpu, "infer_request", lambda *a, **k: compiled.append(1) or real(*a, **k))
    shapes = [(1, 3, 32, 32), (1, 3, 32, 64), (1, 3, 64, 64)]
    for _ in range(30):  # three shapes in turn, two places: the third must not evict the others
        for shape in shapes:
            request = nets.request(shape)
            x = np.full(shape, -1.0, np.float32)
            request.infer({0: x})
            assert request.get_output_tensor(0).data.shape == shape and request.get_output_tensor(0).data.max() == 0
    assert len(compiled) == 2 and set(nets.compiled) == set(shapes[:2])
    for _ in range(200):  # a shape far more common than the rarest compiled one takes its place
        nets.request((1, 3, 96, 128))
    assert len(compiled) == 3 and (1, 3, 96, 128) in nets.compiled and len(nets.compiled) == 2
