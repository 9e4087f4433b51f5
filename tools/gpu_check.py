"""Helpers of the GPU check (.ci/gpu): what the run ran on, and the pytest summary line.

    python tools/gpu_check.py versions        # edgert/torch/cupy versions; exit 1 unless edgert's CUDA is usable
    python tools/gpu_check.py junit FILE.xml  # "pytest -m gpu: N tests, P passed, ..."; exit 1 unless some passed
                                              # and none failed
"""
from __future__ import annotations

import platform
import sys
import xml.etree.ElementTree as ET


def versions() -> int:
    import torch

    import edgert

    info = edgert.info()
    print(info)
    print("python", platform.python_version())
    print(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}, "
          f"torch.cuda.is_available() {torch.cuda.is_available()}")
    try:
        import cupy

        print(f"cupy {cupy.__version__}, cupy.cuda.is_available() {cupy.cuda.is_available()}")
    except ImportError:
        print("cupy: not installed (optional: cupy-cuda13x)")
    if not torch.cuda.is_available():
        print(f"NOTE: torch {torch.__version__} is a CPU-only build or cannot see the GPU: the PyTorch CUDA peers "
              "(eager, torch.compile), the benchmarks and the torch-based GPU tests are skipped (each says why); "
              "the CUDA kernels are still checked against the PyTorch reference on plain cudaMalloc memory (and "
              "cupy's where installed) by tests/test_cuda_bindings.py, and by the C++ tests (ctest). Install a "
              "CUDA build of torch 2.13.0 in the venv for the PyTorch CUDA columns.")
    if not edgert.cuda_available():
        print("FAILED: edgert.cuda_available() is False after a CUDA build: " + info.backends["cuda"]["detail"])
        return 1
    return 0


def junit(path: str) -> int:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root[0]
    n, failed, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    print(f"pytest -m gpu: {n} tests, {n - failed - errors - skipped} passed, {failed} failed, {errors} errors, "
          f"{skipped} skipped")
    if n == 0:
        print("FAILED: no test marked gpu was collected")
        return 1
    if n == skipped:
        print("FAILED: every test marked gpu was skipped (reasons in the pytest log)")
        return 1
    return 0 if failed == errors == 0 else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["versions"]:
        return versions()
    if argv[:1] == ["junit"] and len(argv) == 2:
        return junit(argv[1])
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
