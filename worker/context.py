"""Per-process resources of a worker: database, photo store, face backend.

Built lazily on the first task, i.e. after Celery's fork: CUDA and database connections must
not be inherited across fork, and loading the networks in worker_process_init would be killed
by Celery after 4 s.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db.session import make_engine, make_sessionmaker
from app.face_backend import load_face_backend
from app.storage import PhotoStore, make_store
from models.bib_reader import TextReader
from models.types import FaceBackend


@dataclass
class WorkerContext:
    settings: Settings
    make_session: sessionmaker[Session]
    store: PhotoStore
    _backend: FaceBackend | None = field(default=None, init=False)
    _bib_reader: TextReader | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def backend(self) -> FaceBackend:
        with self._lock:
            if self._backend is None:
                self._backend = load_face_backend(self.settings)
            return self._backend

    @property
    def bib_reader(self) -> TextReader | None:
        """The bib reader, loaded on first use; None when FINISHLINE_READ_BIBS is off."""
        if not self.settings.read_bibs:
            return None
        with self._lock:
            if self._bib_reader is None:
                from models.bib_reader import get_reader

                self._bib_reader = get_reader()  # CPU: one thread, like the face networks
            return self._bib_reader


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def get_context(settings: Settings) -> WorkerContext:
    global _context
    with _context_lock:
        if _context is None:
            engine = make_engine(settings.resolved_database_url, **settings.engine_options)
            store = make_store(settings.storage_url, settings.photos_dir)
            _context = WorkerContext(settings, make_sessionmaker(engine), store)
        return _context
