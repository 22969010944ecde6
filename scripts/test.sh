#!/usr/bin/env bash
# Set up .venv, lint, and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
bash scripts/setup-chromium.sh
.venv/bin/ruff check .
# Both runs share one folder of built backends (tests/conftest.py).
SEMSIM_TEST_CACHE=$(mktemp -d)
export SEMSIM_TEST_CACHE
trap 'rm -rf "$SEMSIM_TEST_CACHE"' EXIT
# One pytest worker per core, at most 4 (each holds a model); a test file stays on one worker (its module fixtures,
# e.g. the Pub/Sub emulator, start once); each worker keeps to its share of the cores (tests/__init__.py).
workers=$(nproc)
workers=$((workers < 4 ? workers : 4))
.venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
# The tests whose results rest on float kernels, again with every runtime that lets us cap its instruction set held
# to AVX2 (torch's ATen and MKL, FAISS, numpy, OpenBLAS), on CPUs that have more; README: "Tests on any CPU".
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  echo "again with the AVX2 caps (-m kernels):"
  env SEMSIM_AVX2_CAPS=1 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 FAISS_SIMD_LEVEL=AVX2 \
    OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" \
    .venv/bin/python -m pytest -m kernels "$@"
fi
