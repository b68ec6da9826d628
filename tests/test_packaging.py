"""Issue 12.13: pyproject's floors are what the code needs; every library the code imports is declared."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
# Minimums found by reading changelogs and running the tests on these exact versions (README).
NEEDED = {"fastapi": "0.158", "starlette": "0.46", "uvicorn": "0.31.1", "h11": "0.16", "pydantic": "2.9",
          "python-multipart": "0.0.18", "jinja2": "3.1.5"}
# import name -> distribution, where they differ; installed by scripts/install.sh are left out
DISTRIBUTIONS = {"PIL": "pillow", "cv2": "opencv-python-headless", "yaml": "pyyaml", "argon2": "argon2-cffi",
                 "psycopg": "psycopg", "pydantic_settings": "pydantic-settings", "multipart": "python-multipart",
                 "email_validator": "email-validator"}
INSTALLED_BY_SCRIPT = {"torch", "torchvision", "facenet_pytorch"}
OURS = {"app", "worker", "models", "migrations"}


def _floors() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = {}
    extras = [line for lines in project.get("optional-dependencies", {}).values() for line in lines]
    for line in project["dependencies"] + extras:
        req = Requirement(line)
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        floors[req.name.lower()] = max(lows) if lows else Version("0")
    return floors


def test_floors_are_at_least_what_the_code_needs():
    floors = _floors()
    for name, needed in NEEDED.items():
        assert name in floors and floors[name] >= Version(needed), (name, floors.get(name), needed)


def test_every_imported_library_is_declared():
    floors = _floors()
    imported = set()
    for folder in OURS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = imported - OURS - set(sys.stdlib_module_names) - INSTALLED_BY_SCRIPT
    missing = {name for name in third_party if DISTRIBUTIONS.get(name, name).lower().replace("_", "-") not in floors}
    assert not missing, f"imported but not in pyproject dependencies: {sorted(missing)}"
