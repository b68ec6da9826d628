"""FacenetBackend on real photos: weight conversion, detection, crops and verification."""

from __future__ import annotations

import csv
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("facenet_pytorch")

from models import facenet_convert  # noqa: E402
from models.facenet import CROP_MARGIN, CROP_SIZE, FacenetBackend, FacenetWeightsError  # noqa: E402
from models.types import LANDMARK_COUNT, Detection  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "faces"
# Production detects on downscaled photos too; native size only slows the test.
GROUP_LONG_SIDE = 1600
IDENTITY_LONG_SIDE = 800


def read_rgb(path: Path, long_side: int) -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    scale = long_side / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def central(image: np.ndarray, detections: list[Detection]) -> Detection | None:
    cx, cy = image.shape[1] / 2, image.shape[0] / 2
    return min(
        detections,
        key=lambda d: np.hypot((d.box[0] + d.box[2]) / 2 - cx, (d.box[1] + d.box[3]) / 2 - cy),
        default=None,
    )


def mean_genuine(sims: np.ndarray, mask: np.ndarray) -> float:
    own = sims[np.ix_(mask, mask)]
    return float(own[np.triu_indices(len(own), 1)].mean())


@pytest.fixture(scope="module")
def faces_dir() -> Path:
    if not (FACES / "manifest.csv").exists():
        pytest.skip(f"real face photos not found at {FACES.resolve()}")
    return FACES


@pytest.fixture(scope="module")
def graph_path() -> Path:
    try:
        return facenet_convert.casia_graph_path()
    except FacenetWeightsError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, graph_path: Path) -> FacenetBackend:
    # One conversion for the whole module, into a cache dir of its own.
    b = FacenetBackend("cpu", tmp_path_factory.mktemp("facenet-cache"))
    b.load()
    return b


@pytest.fixture(scope="module")
def identities(faces_dir: Path, backend: FacenetBackend) -> dict[str, object]:
    """Every identity photo: its label, image and the central detection (None if missed)."""
    labels, images = [], []
    for person in sorted(p for p in (faces_dir / "identities").iterdir() if p.is_dir()):
        for photo in sorted(person.glob("*.jpg")):
            labels.append(person.name)
            images.append(read_rgb(photo, IDENTITY_LONG_SIDE))
    detections = backend.detect(images)
    picked = [central(img, found) for img, found in zip(images, detections)]
    return {"labels": labels, "images": images, "picked": picked}


def test_conversion_matches_opencv_forward(backend: FacenetBackend, identities, graph_path):
    net = cv2.dnn.readNetFromTensorflow(str(graph_path))
    crops = [
        backend.crop_faces(img, [d])[0]
        for img, d in list(zip(identities["images"], identities["picked"]))[::13]
        if d is not None
    ]
    ours = backend.embed(crops)
    for crop, vector in zip(crops, ours):
        # The graph starts at its first convolution: standardisation happens outside it.
        blob = ((crop.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        net.setInput(blob, facenet_convert.GRAPH_INPUT)
        reference = net.forward(facenet_convert.GRAPH_OUTPUT)[0]  # this OpenCV runs batch 1 only
        cosine = float(vector @ reference / np.linalg.norm(reference))
        # 0.99999, not 0.9999: batch norms left unscaled by eps still reach 0.999995.
        assert cosine >= 0.99999, cosine
    assert len(crops) >= 8


def test_converted_weights_are_cached(backend: FacenetBackend):
    cached = facenet_convert.cached_casia_path(backend.cache_dir)
    assert cached.exists()
    assert [p.name for p in backend.cache_dir.iterdir()] == [cached.name]  # no temp files left


def test_identity_batch_norm_is_exact(backend: FacenetBackend):
    bn = backend._resnet.repeat_1[0].branch1[1].bn  # any BasicConv2d
    x = torch.randn(2, bn.num_features, 4, 4)
    with torch.no_grad():
        assert torch.allclose(bn(x), x + bn.bias[None, :, None, None], rtol=0, atol=1e-6)


def test_concurrent_conversions_leave_one_complete_file(tmp_path: Path, graph_path: Path):
    results: list[object] = []

    def convert() -> None:
        try:
            results.append(facenet_convert.load_casia_state_dict(tmp_path))
        except Exception as error:  # surfaced by the assert below
            results.append(error)

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, dict) for r in results), results
    cached = facenet_convert.cached_casia_path(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]
    reloaded = facenet_convert.load_casia_state_dict(tmp_path)
    assert all(torch.equal(reloaded[k], v) for k, v in results[0].items())


def test_wrong_sha256_is_a_clear_error(tmp_path: Path, graph_path: Path):
    with pytest.raises(FacenetWeightsError, match="sha256 mismatch"):
        facenet_convert.load_casia_state_dict(tmp_path, expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_vggface2_fails_clearly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def refuse(url: str, timeout: float):
        calls.append(timeout)
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    b = FacenetBackend("cpu", tmp_path, weights="vggface2")
    assert b.model_id != FacenetBackend("cpu", tmp_path).model_id
    for _ in range(2):
        with pytest.raises(FacenetWeightsError, match="VGGFace2 weights are not in"):
            b.load()
    assert len(calls) == 1 and calls[0] > 0  # a timeout is set, and no second attempt


def test_empty_inputs(backend: FacenetBackend):
    assert backend.detect([]) == []
    assert backend.crop_faces(np.zeros((50, 50, 3), np.uint8), []) == []
    empty = backend.embed([])
    assert empty.shape == (0, 512) and empty.dtype == np.float32
    assert backend.detect([np.full((120, 160, 3), 128, np.uint8)]) == [[]]


def test_unknown_weights_and_bad_crops_are_rejected(backend: FacenetBackend, tmp_path: Path):
    with pytest.raises(ValueError):
        FacenetBackend("cpu", tmp_path, weights="imagenet")
    with pytest.raises(ValueError, match="160x160x3"):
        backend.embed([np.zeros((112, 112, 3), np.uint8)])


def test_group_photos(backend: FacenetBackend, faces_dir: Path):
    with (faces_dir / "manifest.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["identity"] == "group"]
    images = [read_rgb(faces_dir / r["path"], GROUP_LONG_SIDE) for r in rows]
    found_per_photo = backend.detect(images)
    expected_total = found_total = 0
    for row, image, found in zip(rows, images, found_per_photo):
        kept = [d for d in found if d.score >= backend.min_detection_score]
        expected = int(row["faces_approx"])
        # MTCNN misses small and turned faces (spectators, far runners) but should not invent many.
        assert len(kept) >= max(1, round(0.3 * expected)), (row["path"], len(kept), expected)
        assert len(kept) <= expected + max(1, round(0.2 * expected)), (row["path"], len(kept))
        expected_total += expected
        found_total += len(kept)
        h, w = image.shape[:2]
        for d in found:
            assert len(d.landmarks) == LANDMARK_COUNT and 0 < d.score <= 1
            assert -0.1 * w < d.box[0] < d.box[2] < 1.1 * w
            assert -0.1 * h < d.box[1] < d.box[3] < 1.1 * h
    assert found_total >= 0.85 * expected_total, (found_total, expected_total)


def test_detect_keeps_input_order_across_sizes(backend: FacenetBackend, identities):
    images = identities["images"]
    sizes = {}
    for i, img in enumerate(images):
        sizes.setdefault(img.shape, i)
    assert len(sizes) >= 2  # the set mixes sizes, so grouping by size is exercised
    mixed = [images[i] for i in list(sizes.values())[:3]] + [images[0], images[1]]
    together = backend.detect(mixed)
    one_by_one = [backend.detect([img])[0] for img in mixed]
    assert [len(f) for f in together] == [len(f) for f in one_by_one]
    for a, b in zip(together, one_by_one):
        for da, db in zip(a, b):
            assert np.allclose(da.box, db.box, atol=0.5)


def test_landmark_order_and_crop(backend: FacenetBackend, identities):
    from facenet_pytorch import extract_face

    picked = [(img, d) for img, d in zip(identities["images"], identities["picked"]) if d]
    upright = 0
    for image, d in picked:
        (rex, rey), (lex, ley), (nx, ny), (rmx, _), (lmx, _) = d.landmarks
        # The subject's right eye and mouth corner appear on the image's left.
        upright += rex < nx < lex and rmx < lmx and max(rey, ley) < ny
    assert upright >= 0.95 * len(picked)
    for image, d in picked[:10]:
        crop = backend.crop_faces(image, [d])[0]
        reference = extract_face(image, np.array(d.box), CROP_SIZE, CROP_MARGIN)
        assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
        assert np.array_equal(crop, reference.permute(1, 2, 0).numpy().astype(np.uint8))


def test_same_person_is_closer_than_different_people(backend: FacenetBackend, identities):
    keep = [i for i, d in enumerate(identities["picked"]) if d is not None]
    assert len(keep) >= 0.97 * len(identities["picked"])
    images, picked = identities["images"], identities["picked"]
    crops = [backend.crop_faces(images[i], [picked[i]])[0] for i in keep]
    vectors = backend.embed(crops)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)

    labels = np.array([identities["labels"][i] for i in keep])
    sims = vectors @ vectors.T
    rows, cols = np.triu_indices(len(keep), 1)
    same = labels[rows] == labels[cols]
    genuine, impostor = sims[rows, cols][same], sims[rows, cols][~same]
    p99 = np.percentile(impostor, 99)
    people = sorted(set(labels))
    separated = sum(mean_genuine(sims, labels == p) > p99 for p in people)
    auc = (genuine[:, None] > impostor[None, :]).mean()
    assert separated >= 0.9 * len(people), (separated, len(people), p99)
    assert auc >= 0.98, auc
    np.fill_diagonal(sims, -1)
    assert (labels[sims.argmax(axis=1)] == labels).mean() >= 0.9
