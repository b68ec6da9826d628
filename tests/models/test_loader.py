"""The per-process backend cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import loader
from models.yunet_sface import YunetSfaceBackend


def test_one_loaded_instance_per_name_and_device(tmp_path: Path) -> None:
    first = loader.get_backend("yunet-sface", device="cpu", cache_dir=tmp_path)
    again = loader.get_backend("yunet-sface", device="cpu", cache_dir=tmp_path / "other")
    assert first is again and isinstance(first, YunetSfaceBackend)
    assert first.detect([]) == []  # loaded: would raise otherwise


def test_unknown_name_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="yunet-sface, facenet"):
        loader.get_backend("dlib", device="cpu", cache_dir=tmp_path)


def test_resolve_device() -> None:
    assert loader.resolve_device("cpu") == "cpu"
    assert loader.resolve_device("cuda:1") == "cuda:1"
    assert loader.resolve_device("auto") in ("cpu", "cuda")
