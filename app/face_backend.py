"""The face backend chosen by the settings, loaded once per process (API or worker child)."""

from __future__ import annotations

from app.config import Settings
from models.types import FaceBackend


def load_face_backend(settings: Settings) -> FaceBackend:
    """Call lazily (first use), never in a Celery parent before it forks: this may touch CUDA."""
    from models.loader import get_backend, resolve_device

    return get_backend(settings.face_backend, device=resolve_device(settings.device),
                       cache_dir=settings.model_cache_dir, batch_size=settings.embed_batch_size,
                       weights=settings.facenet_weights,
                       engine=None if settings.face_engine == "auto" else settings.face_engine)
