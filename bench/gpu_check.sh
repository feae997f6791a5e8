#!/usr/bin/env bash
# The GPU check of issue 13 in one run (under 5 minutes on one H200): the `gpu`-marked
# ranking tests (CuPy against the host ranker) and the ranking benchmark
# (python -m bench.gpu_ranking: DeviceRanker vs a PyTorch gather+bmm anchor vs NumPy).
#
#   bench/gpu_check.sh --prepare   # here, with PyPI: pytest's small wheels into .gpu-wheels/
#   bench/gpu_check.sh             # on the GPU machine (Python 3.12, CuPy, PyTorch, NumPy;
#                                  # no network): installs only those wheels, then runs
#                                  # (.gpu-wheels/ is git-ignored: carry it along)
#
# The GPU machine lacks the service's dependencies (starlette, uvicorn, tokenizers, ...):
# the tests run with --noconftest and the benchmark imports only NumPy, CuPy, PyTorch and
# server.inference's ranking modules. Results go to $OUT (or /tmp/kbrec-gpu-check):
# environment.txt, tests.txt, benchmark.md. Exits non-zero if a test fails or is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=.gpu-wheels
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--prepare" ]]; then
    # Pure-Python wheels: the GPU machine's Python version does not matter to them.
    "$PYTHON" -m pip download --quiet --only-binary=:all: --no-deps --dest "$WHEELS" \
        'pytest>=8,<10' 'pluggy>=1.5,<2' 'iniconfig>=2,<3' 'packaging>=24' 'pygments>=2.7'
    ls "$WHEELS"
    exit 0
fi

OUT=${OUT:-/tmp/kbrec-gpu-check}
mkdir -p "$OUT"
SITE=/tmp/kbrec-gpu-check-site

{
    date -u '+%Y-%m-%d %H:%M UTC'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PYTHON" - <<'EOF'
import platform
import numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
for name in ("cupy", "torch"):
    try:
        module = __import__(name)
        print(name, module.__version__)
    except ImportError as exc:
        print(name, "missing:", exc)
EOF
} | tee "$OUT/environment.txt"

if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --target "$SITE" pytest
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

status=0
timeout 120 "$PYTHON" -m pytest --noconftest -p no:cacheprovider -q -rs -m gpu \
    tests/server/inference/test_device_ranking.py 2>&1 | tee "$OUT/tests.txt" || status=1
if grep -q "skipped" "$OUT/tests.txt"; then
    echo "gpu_check: gpu tests were skipped: nothing verified on a GPU" | tee -a "$OUT/tests.txt"
    status=1
fi

# One BLAS thread for the NumPy row, as the issue's CPU figure was measured.
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    timeout 170 "$PYTHON" -m bench.gpu_ranking 2>&1 | tee "$OUT/benchmark.md" || status=1
exit $status
