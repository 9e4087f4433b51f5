"""The GPU check (.ci/gpu) kept honest on machines without a GPU: its syntax, its refusal (exit code 2, a clear
message) where there is no GPU, its plan (--dry-run) for a GPU it is told about, and the GPU tests it runs
being collected (and skipped here)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "gpu"


def _run(*args: str, env: dict[str, str] | None = None, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    if path_prefix is not None:
        full_env["PATH"] = f"{path_prefix}{os.pathsep}{full_env['PATH']}"
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=60)


def _fake_nvidia_smi(folder: Path, stdout: str, code: int = 0) -> Path:
    """An nvidia-smi on a PATH prefix that prints ``stdout`` and exits with ``code``."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {code}\n")
    tool.chmod(0o755)
    return folder


def _nvidia_smi_works() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0


def test_script_is_executable_bash_with_valid_syntax():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(_nvidia_smi_works(), reason="this machine has a working nvidia-smi: .ci/gpu would really run")
def test_without_a_gpu_it_exits_2_saying_so():
    out = _run()
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no NVIDIA GPU" in out.stderr and "nothing was run" in out.stderr
    assert "== build" not in out.stdout  # refused before any step


def test_a_failing_nvidia_smi_is_no_gpu_with_its_message(tmp_path):
    fake = _fake_nvidia_smi(tmp_path / "bin", "NVIDIA-SMI has failed because it couldn't communicate with the "
                                              "NVIDIA driver.", code=9)
    out = _run(path_prefix=fake)
    assert out.returncode == 2
    assert "no NVIDIA GPU: nvidia-smi failed: NVIDIA-SMI has failed" in out.stderr


def test_a_gpu_without_nvcc_exits_2(tmp_path):
    fake = _fake_nvidia_smi(tmp_path / "bin", "NVIDIA H200, 9.0")
    out = _run(env={"CUDACXX": str(tmp_path / "no-such-nvcc")}, path_prefix=fake)
    assert out.returncode == 2
    assert "GPU 'NVIDIA H200' found, but no nvcc" in out.stderr


def test_dry_run_plans_every_step_for_the_detected_arch(tmp_path):
    fake = _fake_nvidia_smi(tmp_path / "bin", "NVIDIA H200, 9.0\nNVIDIA H200, 9.0")
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\nexit 0\n")
    nvcc.chmod(0o755)
    before = set((ROOT / "bench" / "results").iterdir())
    out = _run("--dry-run", env={"CUDACXX": str(nvcc)}, path_prefix=fake)
    assert out.returncode == 0, out.stdout + out.stderr
    plan = out.stdout
    assert "NVIDIA H200, compute capability 9.0 -> CUDA architecture 90" in plan
    assert "bench/results/gpu-nvidia-h200-" in plan
    for expected in ("-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90", "-Cbuild-dir=build/gpu-sm90",
                     "tools/gpu_check.py versions", "-m pytest", "-m gpu", "-DCMAKE_CUDA_ARCHITECTURES=90",
                     "ctest --test-dir build/gpu-sm90-ctest", "bench.hotpaths --device cuda --quick --out",
                     "--peers compile,cupy", "bench.bench_srvc --device cuda --quick"):
        assert expected in plan, expected
    assert set((ROOT / "bench" / "results").iterdir()) == before  # a dry run writes nothing


def test_dry_run_without_a_gpu_prints_a_placeholder_plan(tmp_path):
    fake = _fake_nvidia_smi(tmp_path / "bin", "No devices were found", code=6)
    out = _run(env={"EDGERT_GPU_DRY_RUN": "1"}, path_prefix=fake)
    assert out.returncode == 0, out.stderr
    assert "(dry run) no NVIDIA GPU" in out.stdout and "-m pytest" in out.stdout


def test_help_and_bad_arguments():
    assert _run("--help").returncode == 0
    bad = _run("--frobnicate")
    assert bad.returncode == 64 and "unknown argument" in bad.stderr


def test_gpu_tests_are_collected_here():
    """`pytest -m gpu` (what .ci/gpu runs) collects a GPU row for every CUDA kernel; here they are skipped."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "gpu", "--collect-only",
                          "-q", "tests/test_ops_parity.py", "tests/test_cuda_bindings.py", "tests/test_mmnet_ops.py",
                          "tests/test_sparse_ops.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    ids = out.stdout
    for kernel in ("mmnet_detect", "gaussian_denoise", "adaptive_conv", "block_average", "sparse_patch",
                   "sparse_gather"):
        assert f"test_ops_parity.py::test_backend_matches_reference[{kernel}-cuda-" in ids, kernel
        for memory in ("cudart", "cupy"):
            assert f"test_cuda_bindings.py::test_cuda_binding_matches_reference[{memory}-{kernel}-" in ids, kernel
    assert "test_noise_estimate_of_one_layer_matches_its_definition[full-noise-only-1-cuda]" in ids
    assert "test_cuda_mmnet_noise_estimate_matches_its_definition[cudart-" in ids
    assert "test_slot_updates_replayed_on_device_memory_are_byte_identical[cudart-" in ids


@pytest.mark.parametrize("counts,code", [((5, 0, 0, 1), 0), ((5, 1, 0, 0), 1), ((5, 0, 1, 0), 1), ((5, 0, 0, 5), 1),
                                         ((0, 0, 0, 0), 1)])
def test_junit_summary_passes_only_when_some_gpu_test_passed_and_none_failed(tmp_path, counts, code):
    tests, failures, errors, skipped = counts
    report = tmp_path / "report.xml"
    report.write_text(f'<testsuites><testsuite name="pytest" tests="{tests}" failures="{failures}" errors="{errors}" '
                      f'skipped="{skipped}"/></testsuites>')
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "junit", str(report)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == code, out.stdout
    assert out.stdout.startswith(f"pytest -m gpu: {tests} tests, {tests - failures - errors - skipped} passed")
