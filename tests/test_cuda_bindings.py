"""Every CUDA kernel through the raw binding ``edgert._edgert_cuda``, against the PyTorch reference, and the
model slot's update packets replayed on device memory.

The bindings take any ``__dlpack__`` array, so the device arrays here are plain ``cudaMalloc`` memory
(tests/device_memory.py) and, where installed, cupy's: a CPU-only torch build (the wheel these machines install)
still checks the kernels on a GPU. tests/test_ops_parity.py runs the same rows through ``edgert.ops`` on torch
CUDA tensors. The inputs, shapes (batch 1, odd sizes, empty, large) and tolerances are the parity
harness's (tests/test_ops_parity.py); every test is marked gpu (.ci/gpu) and skipped with the reason where no
device can run it.
"""
from __future__ import annotations

import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import device_memory
import edgert
from edgert import ops
from edgert._edgert import Slot
from edgert._info import cuda_module
from edgert.updates import Manifest, PacketEncoder, TensorSpec, TensorUpdate
from test_mmnet_ops import NOISE_ESTIMATE_CASES, noise_estimate_problem
from test_ops_parity import CASES

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not edgert.cuda_available(),
                                 reason="no usable CUDA device / edgert's CUDA kernels not compiled")]


@pytest.fixture(scope="module", params=["cudart", "cupy"])
def dev(request) -> SimpleNamespace:
    """to_device(numpy), to_host(array), empty(shape, numpy dtype) and view_bytes(uint8 array, offset, nbytes,
    numpy dtype) on the GPU: with plain cudaMalloc memory (tests/device_memory.py, needs only the CUDA toolkit's
    libcudart), and with cupy where it is installed."""
    if request.param == "cudart":
        reason = device_memory.unavailable_reason()
        if reason is not None:
            pytest.skip(f"no device memory through libcudart: {reason}")
        DA = device_memory.DeviceArray
        return SimpleNamespace(to_device=DA.from_numpy, to_host=DA.numpy, empty=DA.empty,
                               view_bytes=lambda a, off, n, dtype: a.view_bytes(off, n, dtype))
    try:
        import cupy
    except ImportError:
        pytest.skip("cupy not installed (pip install cupy-cuda13x)")
    if not cupy.cuda.is_available():
        pytest.skip("cupy cannot use the GPU")
    return SimpleNamespace(to_device=lambda a: cupy.asarray(np.ascontiguousarray(a)), to_host=cupy.asnumpy,
                           empty=lambda shape, dtype: cupy.full(shape, np.nan if np.dtype(dtype).kind in "fc" else -1,
                                                                dtype),
                           view_bytes=lambda a, off, n, dtype: a[off:off + n].view(dtype))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _run_raw(op: str, cu, dev: SimpleNamespace, inputs: dict) -> tuple[np.ndarray, ...]:
    """Runs one op through the CUDA binding on device copies of ``inputs`` (CPU torch tensors)."""
    d = {k: dev.to_device(_np(v)) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if op == "mmnet_detect":
        groups, batch, n_tx = d["H"].shape[0], d["y"].shape[1], d["H"].shape[2]
        layers = d["theta2"].shape[0]
        x = dev.empty((layers, groups, batch, n_tx) if d["all_layers"] else (groups, batch, n_tx), np.complex64)
        dec = dev.empty((groups, batch, n_tx), np.int32)
        cu.mmnet_detect(d["H"], d["y"], d.get("A"), d.get("theta1"), d["theta2"], d["sigma2"], d["modulation"],
                        d["all_layers"], x, dec)
        return dev.to_host(x), dev.to_host(dec)
    if op == "gaussian_denoise":
        mean, var = dev.empty(d["z"].shape, np.complex64), dev.empty(d["z"].shape, np.float32)
        cu.gaussian_denoise(d["z"], d["var"], d["modulation"], mean, var)
        return dev.to_host(mean), dev.to_host(var)
    if op == "adaptive_conv":
        n, _, h, w = d["x"].shape
        out = dev.empty((n, d["kernels"].shape[3], h, w), np.float32)
        cu.adaptive_conv(d["x"], d["kernels"], d["bias"], d["patch"], {"none": 0, "relu": 1}[d["activation"]], out)
        return (dev.to_host(out),)
    if op == "block_average":
        n, _, h, w = d["grad"].shape
        b = d["block"]
        out = dev.empty((n, -(-h // b), -(-w // b)), np.float32)
        cu.block_average(d["grad"], b, out)
        return (dev.to_host(out),)
    if op == "sparse_patch":
        cu.sparse_patch(d["weights"], d["indices"], d["values"], d["mode"])
        return (dev.to_host(d["weights"]),)
    if op == "sparse_gather":
        out = dev.empty((d["indices"].shape[0],), _np(torch.empty(0, dtype=inputs["out_dtype"])).dtype)
        cu.sparse_gather(d["weights"], d["indices"], out)
        return (dev.to_host(out),)
    raise AssertionError(f"no raw call for {op}")


_PARAMS = [pytest.param(case, shape, id=f"{case.op}-{shape}") for case in CASES for shape in case.shapes]


@pytest.mark.parametrize("case,shape", _PARAMS)
def test_cuda_binding_matches_reference(dev, case, shape):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((case.op, shape)).encode()))
    inputs = case.make_inputs(shape, torch.device("cpu"), gen)
    ref_inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    expected = case.run("torch", **ref_inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = _run_raw(case.op, cuda_module(), dev, inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        g = torch.from_numpy(np.ascontiguousarray(g))
        assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, g.dtype, e.shape, e.dtype)
        torch.testing.assert_close(g, e, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("form,regime,batch", NOISE_ESTIMATE_CASES)
def test_cuda_mmnet_noise_estimate_matches_its_definition(dev, form, regime, batch):
    """The one-layer closed form of tests/test_mmnet_ops.py (the ||A_t||^2 sigma2 noise term) on the CUDA kernel."""
    H, y, sigma2, theta2, kwargs, want = noise_estimate_problem(form, regime, batch)
    inputs = {"H": H, "y": y, "sigma2": sigma2, "theta2": theta2, "modulation": 16, "all_layers": False, **kwargs}
    got, decisions = _run_raw("mmnet_detect", cuda_module(), dev, inputs)
    torch.testing.assert_close(torch.from_numpy(got).to(torch.complex128), want, rtol=1e-3, atol=2e-4)
    np.testing.assert_array_equal(decisions, ops.hard_decision(torch.from_numpy(got), 16).numpy())


@pytest.mark.parametrize("coding,max_format", [("fp16", 1), ("fp32", 1), ("int8", 1), ("fp16", 2), ("int8", 2)])
def test_slot_updates_replayed_on_device_memory_are_byte_identical(dev, coding, max_format):
    """The slot (host memory, the device program's path) and a copy of its weight buffer on the GPU patched by
    the CUDA sparse-patch kernel with each packet's decoded updates hold the same bytes after every packet."""
    cu = cuda_module()
    rng = np.random.default_rng(3)
    m = Manifest(b"\x43" * 16, (TensorSpec("a", "float32", (300, 7)), TensorSpec("b", "float16", (513,)),
                                TensorSpec("c", "float32", (1,)), TensorSpec("d", "float16", (2, 2049))))
    enc = PacketEncoder(m, value_coding=coding, max_format=max_format)
    slot = Slot(m.to_bytes())
    slot.apply(enc.snapshot({t.name: rng.standard_normal(t.shape) for t in m.tensors}).data)
    buffer = dev.to_device(np.frombuffer(slot.weights()[0], dtype=np.uint8).copy())
    views = [dev.view_bytes(buffer, off, t.nbytes, t.np_dtype) for off, t in zip(m.offsets(), m.tensors)]
    for step in range(30):
        updates = {}
        for t in m.tensors:
            if rng.random() < 0.3:
                continue
            idx = np.flatnonzero(rng.random(t.numel) < rng.choice([0.01, 0.05, 0.5, 1.0]))
            updates[t.name] = TensorUpdate(values=0.1 * rng.standard_normal(idx.size), indices=idx,
                                           mode="set" if rng.random() < 0.2 else "add")
        pkt = enc.update(updates)
        slot.apply(pkt.data)
        for u in pkt.applied:
            numel = m.tensors[u.tensor_id].numel
            idx = np.arange(numel) if u.indices is None else np.asarray(u.indices)
            cu.sparse_patch(views[u.tensor_id], dev.to_device(idx.astype(np.uint32)),
                            dev.to_device(np.asarray(u.values, dtype=np.float32)), u.mode)
        assert dev.to_host(buffer).tobytes() == slot.weights()[0], f"step {step} ({coding}, format {max_format})"
