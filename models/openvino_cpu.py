"""OpenVINO's CPU plugin, set up the one way every network here runs on it (the face engine in
models/yunet_openvino.py, the bib text detector in models/bib_reader.py).

Imported at load only, in the process that runs the model (after Celery's fork). One thread per
worker process and no core pinning: Celery runs a process per core, and pinning would stack them.
"""

from __future__ import annotations

from typing import Any


def new_core() -> Any:
    import openvino

    return openvino.Core()


def infer_request(core: Any, model: Any, precision: str, *, threads: int = 1) -> Any:
    """`model` (a path or a read model) compiled for the CPU in `precision` ("f32", "bf16")."""
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                 "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": precision})
    return compiled.create_infer_request()
