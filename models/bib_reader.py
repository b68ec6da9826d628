"""The text networks that read bib numbers: PP-OCRv6 detection + recognition.

The ONNX files ship inside the `rapidocr` wheel (Apache-2.0, PaddleOCR's PP-OCRv6 "small"
models); we check their sha256 and hand rapidocr our own single-threaded sessions, so nothing is
ever downloaded (the recogniser's character list is read from the ONNX metadata, and we refuse a
file without it rather than let rapidocr fetch a dictionary). rapidocr's pre/post-processing
(DB boxes, CTC decoding) is used as is; its whole-image pipeline is not: `models.bibs` decides
where to look and at what scale.

Images are RGB uint8 arrays, like the face backends; PP-OCR was trained on BGR, so we swap here.

The detector runs on OpenVINO's CPU plugin in fp32 (four times faster than onnxruntime on one
thread, same outputs to 1e-5: 19 against 79 ms on a 384x256 region), with a model compiled for
each shape that recurs; the recogniser stays on onnxruntime, which was as fast for its small
batches. `det_engine="onnxruntime"` restores it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from models.weights import WeightFile, WeightsError, verified_path

PPOCR_DET = WeightFile(
    package="rapidocr",
    relpath="models/PP-OCRv6_det_small.onnx",
    sha256="090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
)
PPOCR_REC = WeightFile(
    package="rapidocr",
    relpath="models/PP-OCRv6_rec_small.onnx",
    sha256="6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
)


@dataclass(frozen=True)
class TextBox:
    """A text line found by the detector: a 4-point polygon in the input image's pixels."""

    quad: np.ndarray  # (4, 2) float32, clockwise from top-left
    score: float


class TextReader(Protocol):
    """A text detector + recogniser pair. Images are RGB uint8 arrays of shape (H, W, 3)."""

    model_id: str  # stored with every read, so reads of different models can be told apart

    def load(self) -> None:
        """Load weights; idempotent and safe to call from several threads."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[TextBox]]:
        """Text lines of each image, one list per image, in input order."""

    def recognise(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(text, confidence 0-1) of each cropped, upright text line, in input order."""


class _Config(dict):
    """The config object rapidocr's classes read (`cfg.key` and `cfg.get`); a dict can hold our
    ready-made sessions, which OmegaConf cannot."""

    def __getattr__(self, key: str):  # type: ignore[no-untyped-def]
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc


class PpOcrReader:
    model_id = "ppocrv6-small"

    def __init__(self, *, device: str = "cpu", threads: int = 1, weights_root: Path | None = None,
                 det_engine: str | None = None) -> None:
        self.device = device
        # OpenVINO on CPU; a CUDA device keeps onnxruntime, which can use the GPU
        self.det_engine = det_engine or ("openvino" if device == "cpu" else "onnxruntime")
        self.threads = threads
        self.weights_root = weights_root  # tests: a folder laid out like the package
        self._det = None
        self._rec = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._det is not None:
                return
            from rapidocr.ch_ppocr_det import TextDetector
            from rapidocr.ch_ppocr_rec import TextRecognizer
            from rapidocr.utils.typings import EngineType, LangRec, ModelType, OCRVersion, TaskType

            det_session = self._session(verified_path(PPOCR_DET, root=self.weights_root))
            rec_session = self._session(verified_path(PPOCR_REC, root=self.weights_root))
            if "character" not in rec_session.get_modelmeta().custom_metadata_map:
                raise WeightsError(f"{PPOCR_REC.relpath} has no character list; rapidocr would download one")
            common = {"engine_type": EngineType.ONNXRUNTIME, "lang_type": LangRec("ch"),
                      "model_type": ModelType("small"), "ocr_version": OCRVersion("PP-OCRv6")}
            # limit "max" with a side larger than any input: the caller has already scaled the
            # image; the detector only rounds it to a multiple of 32.
            det_cfg = _Config({**common, "task_type": TaskType("det"), "session": det_session,
                                        "limit_side_len": 4096, "limit_type": "max",
                                        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                        "thresh": 0.3, "box_thresh": 0.5, "max_candidates": 1000,
                                        "unclip_ratio": 1.6, "use_dilation": True, "score_mode": "fast"})
            # rapidocr pads every crop of a batch to at least the configured width: 320 px costs 3x
            # more than the 96 px (2:1) that 1-6 numerals need; wider crops still widen their batch.
            rec_cfg = _Config({**common, "task_type": TaskType("rec"), "session": rec_session,
                                        "rec_keys_path": None, "rec_img_shape": [3, 48, 96],
                                        "rec_batch_num": 16, "font_path": None})
            self._rec = TextRecognizer(rec_cfg)
            detector = TextDetector(det_cfg)
            if self.det_engine == "openvino":
                # rapidocr (pinned) calls `detector.session(batch)` for the network's first output
                detector.session = _OpenvinoNetwork(verified_path(PPOCR_DET, root=self.weights_root), self.threads)
            self._det = detector

    def _session(self, path):  # type: ignore[no-untyped-def]
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads  # one thread per worker (shared/MODELS.md)
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # inputs change shape with every crop
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[TextBox]]:
        self.load()
        found: list[list[TextBox]] = []
        for image in images:
            if min(image.shape[:2]) < 16:
                found.append([])
                continue
            out = self._det(np.ascontiguousarray(image[:, :, ::-1]))
            if out.boxes is None or len(out.boxes) == 0:
                found.append([])
                continue
            found.append([TextBox(np.asarray(q, np.float32), float(s)) for q, s in zip(out.boxes, out.scores)])
        return found

    def recognise(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        if not crops:
            return []
        self.load()
        from rapidocr.ch_ppocr_rec.typings import TextRecInput

        out = self._rec(TextRecInput(img=[np.ascontiguousarray(c[:, :, ::-1]) for c in crops]))
        return [(str(t), float(s)) for t, s in zip(out.txts, out.scores)]


class _OpenvinoNetwork:
    """An ONNX network on OpenVINO's CPU plugin, fp32, any input shape: `net(batch)` is its first
    output. Shapes that recur get a model of their own (ByShape): 80% of the calls are torso
    regions of one shape, 128x96, which then run 40% faster."""

    def __init__(self, path: Path, threads: int) -> None:
        from models.openvino_cpu import ByShape, new_core  # openvino at load only

        core = new_core()
        # fp32: bf16 missed one more of 89 rendered bibs (bench/bibs.py: recall 0.966 -> 0.955)
        self.by_shape = ByShape(core, core.read_model(str(path)), "f32", threads=threads, kept=4)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = self.by_shape.request(batch.shape)
        request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data)


_readers: dict[str, PpOcrReader] = {}
_readers_lock = threading.Lock()


def get_reader(*, device: str = "cpu") -> TextReader:
    """The process's loaded bib reader, created on first use (after the worker's fork)."""
    with _readers_lock:
        reader = _readers.get(device)
        if reader is None:
            reader = PpOcrReader(device=device)
            reader.load()
            _readers[device] = reader
        return reader
