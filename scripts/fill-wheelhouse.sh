#!/usr/bin/env bash
# Fill ./wheelhouse with pytest and its pure-Python dependencies for the GPU image (Python 3.12),
# which has no pytest and no network. Run on a machine with network; the folder is git-ignored and
# travels with the checkout (about 2 MB); scripts/gpu-evidence.sh unpacks it when pytest is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
PYTEST_PIN="${PYTEST_PIN:-$(grep -E '^pytest==' .ci/constraints.txt | head -1)}"
rm -rf wheelhouse && mkdir -p wheelhouse
"$PY" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation py \
    --dest wheelhouse "${PYTEST_PIN:-pytest}" -c .ci/constraints.txt
ls -1 wheelhouse
du -sh wheelhouse
