"""Every op rejects wrong dtype/shape/device/non-contiguous input naming what was expected."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgert
from edgert import _edgert, ops
from edgert.ops._dispatch import resolve


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_block_average_rejects_bad_input(backend):
    with pytest.raises(TypeError, match=r"grad: expected contiguous float32 \[N, C, H, W\], got float64"):
        ops.block_average(torch.zeros(1, 3, 8, 8, dtype=torch.float64), backend=backend)
    with pytest.raises(ValueError, match=r"grad: expected .*\[N, C, H, W\], got float32 \[3, 8, 8\]"):
        ops.block_average(torch.zeros(3, 8, 8), backend=backend)
    with pytest.raises(ValueError, match=r"non-contiguous"):
        ops.block_average(torch.zeros(1, 3, 8, 16)[..., ::2], backend=backend)
    with pytest.raises(ValueError, match=r"block: expected a positive int"):
        ops.block_average(torch.zeros(1, 3, 8, 8), 0, backend=backend)


def test_block_average_accepts_numpy():
    grad = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    out = ops.block_average(grad, 4)
    torch.testing.assert_close(out, ops.block_average_reference(torch.from_numpy(grad), 4))


def test_native_binding_checks_independently():
    # The extension validates on its own too (callers may bypass edgert.ops).
    with pytest.raises(ValueError, match=r"out: expected float32 \[N, ceil\(H/b\), ceil\(W/b\)\] = \[1, 1, 1\]"):
        _edgert.block_average(torch.zeros(1, 1, 4, 4), 4, torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match=r"grad: expected an array"):
        _edgert.block_average([1, 2, 3], 4, torch.zeros(1, 1, 1))


def test_native_binding_imports_every_kind_of_torch_tensor_as_before():
    """Plain CPU tensors take a fast export (torch._C._to_dlpack without __dlpack__'s Python work); a
    tensor that needs autograd, a conjugate or negative view, a subclass, a non-contiguous or offset view and
    NumPy arrays must behave exactly as through __dlpack__: the same data, or the same refusal."""
    grad = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) - 100.0
    want = ops.block_average_reference(grad, 4)

    def run(x):
        out = torch.empty(2, 2, 2)
        _edgert.block_average(x, 4, out)
        return out

    torch.testing.assert_close(run(grad), want)
    torch.testing.assert_close(run(grad.numpy()), want)
    offset = torch.cat([torch.zeros(7), grad.reshape(-1)])[7:].reshape(2, 3, 8, 8)  # storage offset 7
    torch.testing.assert_close(run(offset), want)

    class Marked(torch.Tensor):
        pass

    torch.testing.assert_close(run(grad.as_subclass(Marked)), want)
    with pytest.raises(BufferError, match="require gradient"):
        run(grad.clone().requires_grad_())
    with pytest.raises(ValueError, match="non-contiguous"):
        run(torch.zeros(2, 3, 8, 16)[..., ::2])
    z = torch.tensor([0.5 + 1.5j, -0.5 - 0.5j], dtype=torch.complex64)
    mean = torch.empty(2, dtype=torch.complex64)
    with pytest.raises(BufferError, match="conjugate bit"):
        _edgert.gaussian_denoise(z.conj(), torch.ones(2), 16, mean)
    negative = torch.zeros(2, 3, 8, 8, dtype=torch.complex64).conj().imag  # a view with the negative bit
    assert negative.is_neg()
    out = torch.empty(2, 2, 2)
    try:
        _edgert.block_average(negative, 4, out)
    except (BufferError, RuntimeError, TypeError, ValueError):
        pass  # refused, as __dlpack__ does in some torch versions
    else:
        torch.testing.assert_close(out, torch.zeros(2, 2, 2))  # or exported with its values (all -0.0 here)


def test_cuda_backend_unavailable_is_a_clear_error():
    if edgert.cuda_available():
        pytest.skip("CUDA is usable here")
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        ops.block_average(torch.zeros(1, 1, 4, 4), backend="cuda")


def test_resolve_asks_the_registry():
    cpu = torch.device("cpu")
    t = torch.zeros(3)
    assert resolve("auto", cpu, (t,)) == "cpu"
    assert resolve("cpu", cpu, (t,)) == "cpu"
    assert resolve("torch", cpu, (t,)) == "torch"
    with pytest.raises(ValueError, match="backend must be one of auto, cuda, cpu, torch; got 'gpu'"):
        resolve("gpu", cpu, (t,))
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors, got tensors on meta"):
        resolve("cpu", torch.device("meta"), ())
    # No libedgert build addresses meta tensors: auto falls back to the reference.
    assert resolve("auto", torch.device("meta"), ()) == "torch"
    assert ops.available_backends("meta") == ["torch"]
    assert ops.available_backends("cpu") == ["cpu", "torch"]


def test_cuda_request_without_a_usable_device_names_the_registry_reason():
    if edgert.cuda_available():
        pytest.skip("CUDA is usable here")
    cuda = torch.device("cuda")
    # "auto" on CUDA memory the registry cannot run falls back to the reference; an explicit
    # "cuda" is an error that carries the library's reason when the CUDA module exists.
    assert resolve("auto", cuda, ()) == "torch"
    assert ops.available_backends("cuda") == ["torch"]
    with pytest.raises(RuntimeError, match="backend='cuda' requested but the CUDA kernels are not compiled in or no "
                                           "device is usable") as err:
        resolve("cuda", cuda, ())
    if edgert._info.cuda_module() is not None:
        assert "compiled in but no device is usable" in str(err.value)
