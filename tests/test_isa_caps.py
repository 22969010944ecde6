"""The caps of ``scripts/test.sh``'s AVX2 run are in effect: each runtime that can be held to AVX2 says it is."""

from __future__ import annotations

import os
import subprocess
import sys

import faiss
import pytest
import threadpoolctl
import torch
from numpy._core._multiarray_umath import __cpu_features__

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.skipif(not os.environ.get("SEMSIM_AVX2_CAPS"), reason="only in the AVX2-capped run of scripts/test.sh"),
]


def test_every_capped_runtime_runs_avx2_kernels():
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert faiss.SIMDConfig.get_level_name() == "AVX2"
    assert not __cpu_features__["X86_V4"] and __cpu_features__["X86_V3"], "numpy: AVX2 loops, no AVX-512"
    blas = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"]
    assert blas and all(i["architecture"] == "Haswell" for i in blas)
    banner = subprocess.run(
        [sys.executable, "-c", "import torch; torch.ones(64, 64) @ torch.ones(64, 64)"],
        env={**os.environ, "MKL_VERBOSE": "1"},
        capture_output=True,
        text=True,
    ).stdout.splitlines()[0]
    assert "(Intel(R) AVX2) enabled processors" in banner, banner  # torch's BLAS (MKL) for Linear layers
