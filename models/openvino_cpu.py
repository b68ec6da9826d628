"""OpenVINO's CPU plugin, set up the one way every network here runs on it (the face engine in
models/yunet_openvino.py, the bib text detector in models/bib_reader.py).

Imported at load only, in the process that runs the model (after Celery's fork). One thread per
worker process and no core pinning: Celery runs a process per core, and pinning would stack them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def new_core() -> Any:
    import openvino

    return openvino.Core()


def infer_request(core: Any, model: Any, precision: str, *, threads: int = 1) -> Any:
    """`model` (a path or a read model) compiled for the CPU in `precision` ("f32", "bf16")."""
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                 "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": precision})
    return compiled.create_infer_request()


class ByShape:
    """A network with inputs of varying size: the any-size model, plus models compiled for the
    `kept` shapes that recur most.

    A model compiled for one shape runs 20-40% faster than the any-size one (YuNet on 1600 px
    photos, the bib detector on its 128x96 torso regions) but costs tens of milliseconds to
    compile, so a shape gets one only after `compile_after` inputs, and when all places are
    taken, only by being twice as common as the rarest compiled shape: shapes never take turns
    evicting each other, recompiling at every call. Counts halve every `AGE_EVERY` calls, so the
    sizes of the event a worker serves now win over last week's.
    """

    AGE_EVERY = 2000

    def __init__(self, core: Any, model: Any, precision: str, *, threads: int = 1, compile_after: int = 3,
                 kept: int = 3) -> None:
        self._core, self._model, self._precision, self._threads = core, model, precision, threads
        self.compile_after, self.kept = compile_after, kept
        self._any_size = infer_request(core, model, precision, threads=threads)
        self.compiled: dict[tuple[int, ...], Any] = {}
        self._seen: Counter[tuple[int, ...]] = Counter()
        self._calls = 0

    def request(self, shape: tuple[int, ...]) -> Any:
        """The infer request to run an input of `shape` (the whole shape, batch included)."""
        shape = tuple(shape)
        self._count(shape)
        request = self.compiled.get(shape)
        if request is not None:
            return request
        if self._seen[shape] < self.compile_after:
            return self._any_size
        if len(self.compiled) >= self.kept:
            rarest = min(self.compiled, key=lambda s: self._seen[s])
            if self._seen[shape] <= 2 * self._seen[rarest]:
                return self._any_size
            del self.compiled[rarest]
        model = self._model.clone()
        model.reshape(list(shape))
        request = self.compiled[shape] = infer_request(self._core, model, self._precision, threads=self._threads)
        return request

    def _count(self, shape: tuple[int, ...]) -> None:
        self._seen[shape] += 1
        self._calls += 1
        if self._calls % self.AGE_EVERY == 0:
            self._seen = Counter({s: n // 2 for s, n in self._seen.items() if n > 1})
