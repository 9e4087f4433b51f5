"""MMNet detection and the complex Gaussian (QAM posterior) denoiser.

Model: y = H x + n with x uniform over square M-QAM normalised to unit average
energy (E|x_i|^2 = 1) and n ~ CN(0, sigma2 I) (sigma2 = E|n_j|^2 per receive
antenna). Per real axis the QAM levels are (2k - sqrt(M) + 1) * sqrt(3 / (2 (M - 1))),
k = 0 .. sqrt(M) - 1; the constellation index of a symbol is
``re_level * sqrt(M) + im_level``.

MMNet layer t (Khani et al., eq. 3.14), starting from x = 0:

    r = y - H x
    z = x + A_t r
    v = theta2_t / Nt * ( ||I - A_t H||_F^2 / ||H||_F^2 * max(||r||^2 - Nr sigma2, 0)
                          + ||A_t||_F^2 * sigma2 )

The first term is ||I - A_t H||_F^2 times the residual symbol error power per user
((||r||^2 - Nr sigma2) / ||H||_F^2), the second the noise that A_t passes on
(E||A_t n||^2 = ||A_t||_F^2 sigma2), so v estimates E|z_i - x_i|^2 (theta2 refines it).
    x = E[x | z, v]      (posterior mean under z = x + CN(0, v))

with either full operators A_t [T, G, Nt, Nr] (MMNet) or the iid form
A_t = theta1_t H^H (MMNet-iid).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Iterator, NamedTuple, Optional

import torch

import edgert._edgert as _edgert
from edgert.ops._dispatch import (
    ArrayLike,
    Backend,
    as_tensor,
    check_tensor,
    describe,
    native,
    resolve,
    same_device,
    stream_of,
)

MODULATIONS = (4, 16, 64)
# The denoiser's variance floor (also in the C++ and CUDA kernels): the posterior
# collapses onto the nearest point instead of dividing by zero.
MIN_VARIANCE = 1e-9


def _check_modulation(modulation: int) -> int:
    if modulation not in MODULATIONS:
        raise ValueError(f"modulation: expected one of {MODULATIONS} (QAM order), got {modulation!r}")
    return int(math.isqrt(modulation))


@functools.lru_cache(maxsize=None)
def _levels_cpu(modulation: int) -> torch.Tensor:
    k = _check_modulation(modulation)
    scale = math.sqrt(3.0 / (2.0 * (modulation - 1)))
    return torch.tensor([(2 * i - k + 1) * scale for i in range(k)], dtype=torch.float64)


def qam_levels(modulation: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sqrt(M) levels of one real axis of unit-energy square M-QAM, ascending."""
    return _levels_cpu(modulation).to(dtype=dtype, device=device)


def qam_constellation(modulation: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """complex64 [M] constellation; entry ``re_level * sqrt(M) + im_level``. Unit average energy."""
    levels = qam_levels(modulation, torch.float32, device)
    k = levels.numel()
    return torch.complex(levels[:, None].expand(-1, k), levels[None, :].expand(k, -1)).reshape(-1)


def hard_decision(x: torch.Tensor, modulation: int) -> torch.Tensor:
    """Nearest-constellation indices (int32, same shape as complex ``x``)."""
    k = _check_modulation(modulation)
    spacing = 2.0 * math.sqrt(3.0 / (2.0 * (modulation - 1)))

    def axis(u: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(u / spacing + 0.5 * (k - 1)), 0, k - 1).to(torch.int32)

    return axis(x.real) * k + axis(x.imag)


def indices_to_symbols(indices: torch.Tensor, modulation: int) -> torch.Tensor:
    """Constellation indices (any integer dtype) -> complex64 symbols."""
    return qam_constellation(modulation, indices.device)[indices.long()]


def _posterior_axis(u: torch.Tensor, var: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Real-axis noise variance is var / 2, so the log-likelihood is -(u - a)^2 / var.
    logits = -(u[..., None] - levels) ** 2 / var.clamp_min(MIN_VARIANCE)[..., None]
    weights = torch.softmax(logits, dim=-1)
    mean = (weights * levels).sum(-1)
    second = (weights * levels**2).sum(-1)
    return mean, (second - mean**2).clamp_min(0.0)


def pam_posterior(u: torch.Tensor, axis_var: torch.Tensor, modulation: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and variance of one real axis of square M-QAM (a sqrt(M)-PAM) seen in real Gaussian noise.

    ``u`` real [...], ``axis_var`` real [...] (variance of the real noise on that axis); the symbol is uniform on
    :func:`qam_levels`. The real-valued form of :func:`gaussian_denoise_reference` (which assumes the same
    variance on both axes); used where the two axes have their own variances (real-valued EP).
    """
    return _posterior_axis(u, 2.0 * axis_var, qam_levels(modulation, axis_var.dtype, u.device))


def gaussian_denoise_reference(z: torch.Tensor, var: torch.Tensor,
                               modulation: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch posterior mean (complex) and variance (real, E|x - mean|^2) of QAM symbols.

    z is complex [...], var real [...] (E|w|^2 of the complex noise). Differentiable.
    """
    levels = qam_levels(modulation, var.dtype, z.device)
    mean_re, var_re = _posterior_axis(z.real, var, levels)
    mean_im, var_im = _posterior_axis(z.imag, var, levels)
    return torch.complex(mean_re, mean_im), var_re + var_im


def gaussian_denoise(z: ArrayLike, var: ArrayLike, modulation: int = 16, *,
                     backend: Backend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Complex Gaussian denoiser: posterior mean and variance of unit-energy M-QAM symbols.

    Args:
        z: complex64 [...] observations z = x + w, w ~ CN(0, var).
        var: float32, same shape as z: E|w|^2 per element (>= 0; floored at 1e-9).
        modulation: QAM order, 4, 16 or 64.
    Returns:
        (mean complex64 [...], variance float32 [...]).
    """
    z, var = as_tensor(z, "z"), as_tensor(var, "var")
    _check_modulation(modulation)
    check_tensor(z, "z", (torch.complex64,), (None,) * z.dim(), "[...]")
    check_tensor(var, "var", (torch.float32,), tuple(z.shape), "like z")
    chosen = resolve(backend, same_device({"z": z, "var": var}), (z, var))
    if chosen == "torch":
        return gaussian_denoise_reference(z, var, modulation)
    mean = torch.empty_like(z)
    var_out = torch.empty_like(var)
    native(chosen).gaussian_denoise(z.detach(), var.detach(), modulation, mean, var_out, stream_of(z))
    return mean, var_out


class MMNetLayer(NamedTuple):
    """One MMNet layer's intermediates, each complex ``[G, B, Nt]`` except ``var`` (real)."""

    z: torch.Tensor  # denoiser input x_t + A_t (y - H x_t)
    var: torch.Tensor  # the layer's noise-variance estimate v_t per symbol
    x: torch.Tensor  # denoiser output x_{t+1} = E[x | z, v]


def mmnet_layers_reference(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, theta2: torch.Tensor, *,
                           A: Optional[torch.Tensor] = None, theta1: Optional[torch.Tensor] = None,
                           modulation: int = 16) -> Iterator[MMNetLayer]:
    """The pure-PyTorch MMNet forward, one :class:`MMNetLayer` per layer (differentiable in A / theta1 /
    theta2): the single reference that :func:`mmnet_detect_reference` and the noise analysis
    (:mod:`edgert.mimo.analysis`) both run. Shapes as :func:`mmnet_detect_reference`.
    """
    if (A is None) == (theta1 is None):
        raise ValueError("mmnet_detect: pass exactly one of A (full form) and theta1 (iid form)")
    levels = qam_levels(modulation, theta2.dtype, H.device)
    n_rx, n_tx = H.shape[-2], H.shape[-1]
    h_norm = (H.real**2 + H.imag**2).sum(dim=(-2, -1))  # [G]
    eye = torch.eye(n_tx, dtype=H.dtype, device=H.device)
    x = torch.zeros(y.shape[:-1] + (n_tx,), dtype=H.dtype, device=H.device)
    for t in range(theta2.shape[0]):
        if A is not None:
            a_t = A[t]
        else:
            assert theta1 is not None  # exactly one of A and theta1, checked above
            a_t = theta1[t][:, None, None].to(H.dtype) * H.conj().transpose(-1, -2)
        r = y - x @ H.transpose(-1, -2)
        z = x + r @ a_t.transpose(-1, -2)
        m_t = eye - a_t @ H
        ratio_m = (m_t.real**2 + m_t.imag**2).sum(dim=(-2, -1)) / h_norm
        ratio_a = (a_t.real**2 + a_t.imag**2).sum(dim=(-2, -1))
        excess = torch.relu((r.real**2 + r.imag**2).sum(-1) - n_rx * sigma2[:, None])  # [G, B]
        v = theta2[t][:, None, :] / n_tx * (ratio_m[:, None, None] * excess[..., None]
                                            + (ratio_a * sigma2)[:, None, None])
        mean_re, _ = _posterior_axis(z.real, v, levels)
        mean_im, _ = _posterior_axis(z.imag, v, levels)
        x = torch.complex(mean_re, mean_im)
        yield MMNetLayer(z, v, x)


def mmnet_detect_reference(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, theta2: torch.Tensor, *,
                           A: Optional[torch.Tensor] = None, theta1: Optional[torch.Tensor] = None,
                           modulation: int = 16, all_layers: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch MMNet forward (differentiable in A / theta1 / theta2); see the module docstring.

    Shapes: H [G, Nr, Nt], y [G, B, Nr] complex; A [T, G, Nt, Nr] complex or theta1 [T, G] real;
    theta2 [T, G, Nt], sigma2 [G] real. Returns x_hat [G, B, Nt] (or [T, G, B, Nt] with
    all_layers) and int32 hard decisions [G, B, Nt] of the last layer.
    Intermediates of every layer: :func:`mmnet_layers_reference`.
    """
    outputs = [layer.x for layer in mmnet_layers_reference(H, y, sigma2, theta2, A=A, theta1=theta1,
                                                           modulation=modulation)]
    x = outputs[-1] if outputs else torch.zeros(y.shape[:-1] + (H.shape[-1],), dtype=H.dtype, device=H.device)
    decisions = hard_decision(x, modulation)
    return (torch.stack(outputs) if all_layers else x), decisions


def mmnet_detect(H: ArrayLike, y: ArrayLike, sigma2: ArrayLike, theta2: ArrayLike, *,
                 A: Optional[ArrayLike] = None, theta1: Optional[ArrayLike] = None, modulation: int = 16,
                 all_layers: bool = False, backend: Backend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Batched MMNet detection (inference; train through :func:`mmnet_detect_reference`).

    Args:
        H: complex64 [G, Nr, Nt] channels; each is shared by the B received vectors of its group.
        y: complex64 [G, B, Nr] received vectors.
        sigma2: float32 [G] noise variance per receive antenna (E|n_j|^2).
        theta2: float32 [T, G, Nt] per-layer, per-symbol noise scales.
        A: complex64 [T, G, Nt, Nr] per-layer linear operators (MMNet), or
        theta1: float32 [T, G] (MMNet-iid: A_t = theta1_t H^H).
        modulation: QAM order (4, 16, 64).
        all_layers: return x after every layer ([T, G, B, Nt]) instead of the last ([G, B, Nt]).
        backend: "auto", "cuda", "cpu" or "torch".
    Returns:
        (x_hat complex64, decisions int32 [G, B, Nt] constellation indices).
    """
    H, y, sigma2, theta2 = (as_tensor(H, "H"), as_tensor(y, "y"), as_tensor(sigma2, "sigma2"),
                            as_tensor(theta2, "theta2"))
    _check_modulation(modulation)
    if (A is None) == (theta1 is None):
        raise ValueError("mmnet_detect: pass exactly one of A (full form) and theta1 (iid form)")
    check_tensor(H, "H", (torch.complex64,), (None, None, None), "[G, Nr, Nt]")
    groups, n_rx, n_tx = H.shape
    check_tensor(y, "y", (torch.complex64,), (groups, None, n_rx), "[G, B, Nr]")
    check_tensor(theta2, "theta2", (torch.float32,), (None, groups, n_tx), "[T, G, Nt]")
    layers = theta2.shape[0]
    if layers == 0:
        raise ValueError("theta2: need at least one layer (T >= 1)")
    check_tensor(sigma2, "sigma2", (torch.float32,), (groups,), "[G]")
    tensors = {"H": H, "y": y, "theta2": theta2, "sigma2": sigma2}
    A_tensor: Optional[torch.Tensor] = None
    theta1_tensor: Optional[torch.Tensor] = None
    if A is not None:
        A_tensor = as_tensor(A, "A")
        check_tensor(A_tensor, "A", (torch.complex64,), (layers, groups, n_tx, n_rx), "[T, G, Nt, Nr]")
        tensors["A"] = A_tensor
    else:
        assert theta1 is not None  # exactly one of A and theta1, checked above
        theta1_tensor = as_tensor(theta1, "theta1")
        check_tensor(theta1_tensor, "theta1", (torch.float32,), (layers, groups), "[T, G]")
        tensors["theta1"] = theta1_tensor
    chosen = resolve(backend, same_device(tensors), tuple(tensors.values()))
    if chosen == "torch":
        return mmnet_detect_reference(H, y, sigma2, theta2, A=A_tensor, theta1=theta1_tensor,
                                      modulation=modulation, all_layers=all_layers)
    batch = y.shape[1]
    x_shape = (layers, groups, batch, n_tx) if all_layers else (groups, batch, n_tx)
    x_hat = torch.empty(x_shape, dtype=torch.complex64, device=H.device)
    decisions = torch.empty((groups, batch, n_tx), dtype=torch.int32, device=H.device)
    native(chosen).mmnet_detect(H.detach(), y.detach(), None if A_tensor is None else A_tensor.detach(),
                                None if theta1_tensor is None else theta1_tensor.detach(), theta2.detach(),
                                sigma2.detach(), modulation, all_layers, x_hat, decisions, stream_of(H))
    return x_hat, decisions


# ---------------------------------------------------------------------------------------------
# Fast training forward: real-valued, hoisted per-channel algebra, fused denoiser backward.
# ---------------------------------------------------------------------------------------------

class _PosteriorMean(torch.autograd.Function):
    """E[a | u, v] for u = a + N(0, v / 2) per real axis, a uniform over ``levels``; hand-written backward.

    d mean / d u = 2 Var_w(a) / v and d mean / d v = Cov_w(a, (u - a)^2) / v^2 (w: the posterior
    weights), both in centred form so that near-deterministic posteriors give 0 rather than rounding
    noise divided by v^2. Below the variance floor the v-gradient is 0 (as for ``clamp_min``).
    """

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, v: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        # Levels on a leading axis: every op is elementwise over [L, ...] or a reduction over the outer
        # axis (a softmax over a trailing axis of 2-8 levels is several times slower on CPU).
        lv = levels.reshape((-1,) + (1,) * u.dim())
        vc = v.clamp_min(MIN_VARIANCE)
        inv = 1.0 / vc
        d2 = (u.unsqueeze(0) - lv) ** 2                  # [L, ...]
        logits = d2 * inv.neg()
        # exp(-60) ~ 1e-26: below float32 resolution of the weights, and it keeps exp off its slow
        # underflow path (logits of far levels reach -1e9 at high SNR).
        e = torch.exp((logits - logits.amax(0)).clamp_min_(-60.0))
        w = e / e.sum(0)
        mean = (w * lv).sum(0)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ac = lv - mean                                # a_k - m
            wc = w * ac
            var = (wc * ac).sum(0)                        # Var_w(a)
            cov = (wc * (d2 - (w * d2).sum(0))).sum(0)    # Cov_w(a, d^2), centred
            du = 2.0 * var * inv
            dv = torch.where(v >= MIN_VARIANCE, cov * inv * inv, torch.zeros_like(cov))
            ctx.save_for_backward(du, dv)
        return mean

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        du, dv = ctx.saved_tensors
        return grad * du, grad * dv, None


def axis_posterior_mean(u: torch.Tensor, var: torch.Tensor, modulation: int = 16) -> torch.Tensor:
    """Posterior mean of one real axis of square M-QAM, differentiable with :class:`_PosteriorMean`'s backward.

    ``u`` real ``[...]`` (one axis of ``z = x + w``), ``var`` real, same shape: ``E|w|^2`` of the complex
    noise (``var / 2`` per axis), floored at :data:`MIN_VARIANCE`. The value is the real or imaginary part
    of :func:`gaussian_denoise_reference`'s mean; the gradient (in ``u`` and ``var``) is the denoiser
    backward of :func:`mmnet_train_forward`, for training graphs of other detectors.
    """
    _check_modulation(modulation)
    return _PosteriorMean.apply(u, var, qam_levels(modulation, u.dtype, u.device))


def real_block(M: torch.Tensor) -> torch.Tensor:
    """Real form of right-multiplication by ``M^T``: complex ``[..., m, n]`` -> real ``[..., 2n, 2m]``.

    For a complex row vector u (length n) stacked as ``[Re u, Im u]``, ``[Re, Im](u @ M^T) =
    [Re u, Im u] @ real_block(M)``.
    """
    mt = M.transpose(-1, -2)
    re, im = mt.real, mt.imag
    return torch.cat([torch.cat([re, im], -1), torch.cat([-im, re], -1)], -2)


def _real_block_ri(A_ri: torch.Tensor) -> torch.Tensor:
    """:func:`real_block` of a complex matrix given as its real view ``[..., m, n, 2]`` (differentiable)."""
    re, im = A_ri[..., 0].transpose(-1, -2), A_ri[..., 1].transpose(-1, -2)
    return torch.cat([torch.cat([re, im], -1), torch.cat([-im, re], -1)], -2)


def mmnet_train_forward(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, A_ri: torch.Tensor,
                        theta2: torch.Tensor, modulation: int = 16, *, backend: Backend = "auto") -> torch.Tensor:
    """MMNet forward for training: the math of :func:`mmnet_detect_reference` (full-A form), fast to differentiate.

    Same layer as the module docstring, rewritten without complex autograd:

    * real stacking: vectors ``[Re, Im]`` (2 Nt / 2 Nr), complex matrices as :func:`real_block`;
    * ``z = x + A (y - H x) = A y + (I - A H) x``: ``A_t y`` for all T layers is one matmul per batch,
      each layer then costs a ``2Nt x 2Nt`` product instead of two ``2Nr x 2Nt`` ones;
    * ``||y - H x||^2 = ||y||^2 - 2 Re(x^H H^H y) + x^H H^H H x`` evaluated in float64 (no cancellation
      at high SNR), with ``H^H H`` hoisted per channel;
    * the QAM posterior mean with a hand-written backward (:class:`_PosteriorMean`).

    Args:
        H: complex64 ``[G, Nr, Nt]`` (one channel per group; constant, not differentiated).
        y: complex64 ``[G, B, Nr]``.
        sigma2: float32 ``[G]`` or ``[G, B]`` (a noise variance per vector, e.g. one SNR per vector group).
        A_ri: float32 ``[T, G, Nt, Nr, 2]``: ``torch.view_as_real`` of the complex A (differentiable);
            float64 runs the whole graph in float64 (gradient checks).
        theta2: float32 ``[T, G, Nt]`` (differentiable).
        modulation: QAM order (4, 16, 64).
        backend: "torch" runs the PyTorch graph below (the reference); "cpu" runs libedgert's fused
            forward and backward (:func:`_MMNetTrainCpu`: register-blocked complex products over tiles of
            vectors, the denoiser and its derivatives in one pass); "auto" picks "cpu" for float32 CPU
            tensors (not while tracing or compiling) and "torch" otherwise.

    Returns:
        float32 ``[T, G, B, 2, Nt]``: every layer's estimate, real part at ``[..., 0, :]``, imaginary at
        ``[..., 1, :]`` (:func:`real_to_complex` gives the complex view of :func:`mmnet_detect_reference`).
    """
    _check_modulation(modulation)
    if _train_backend(backend, H, y, sigma2, A_ri, theta2) == "cpu":
        return _train_forward_cpu(H, y, sigma2, A_ri, theta2, modulation)
    dtype = A_ri.dtype
    levels = qam_levels(modulation, dtype, H.device)
    groups, n_rx, n_tx = H.shape
    layers = A_ri.shape[0]
    batch = y.shape[1]
    if sigma2.dim() == 1:
        sigma2 = sigma2[:, None].expand(groups, batch)
    sigma2 = sigma2.to(dtype)
    with torch.no_grad():
        HT = real_block(H).to(dtype)                                   # [G, 2Nt, 2Nr]
        Y = torch.cat([y.real, y.imag], -1).to(dtype)                  # [G, B, 2Nr]
        HT64, Y64 = HT.double(), Y.double()
        gram64 = HT64 @ HT64.transpose(-1, -2)                       # real form of H^H H, [G, 2Nt, 2Nt]
        hty64 = Y64 @ HT64.transpose(-1, -2)                         # [G, B, 2Nt]
        yy64 = (Y64 * Y64).sum(-1)                                   # [G, B]
        h_norm = (HT * HT).sum((-2, -1)) / 2.0                       # ||H||_F^2, [G]
        floor64 = n_rx * sigma2.double()                             # [G, B]
        eye = torch.eye(2 * n_tx, dtype=dtype, device=H.device)
    AT = _real_block_ri(A_ri)                                        # [T, G, 2Nr, 2Nt]
    M = eye - HT.unsqueeze(0) @ AT                                   # real form of (I - A H)^T, [T, G, 2Nt, 2Nt]
    ratio_m = (M * M).sum((-2, -1)) / 2.0 / h_norm                   # ||I - A H||_F^2 / ||H||_F^2, [T, G]
    ratio_a = (A_ri * A_ri).sum((-3, -2, -1))                        # ||A||_F^2 (E||A n||^2 / sigma2), [T, G]
    ya = torch.bmm(Y, AT.permute(1, 2, 0, 3).reshape(groups, 2 * n_rx, layers * 2 * n_tx))
    ya = ya.reshape(groups, batch, layers, 2 * n_tx)
    # unbind (not indexing) per layer: its backward is one stack instead of T zero-filled scatters.
    ya_t = ya.unbind(2)
    m_t = M.unbind(0)
    coef_m = (theta2 / n_tx * ratio_m[..., None]).unbind(0)         # [G, Nt] per layer
    coef_a = (theta2 / n_tx * ratio_a[..., None]).unbind(0)
    x = None
    outputs = []
    for t in range(layers):
        if x is None:
            z = ya_t[0]
            excess = torch.relu(yy64 - floor64).to(dtype)
        else:
            z = torch.baddbmm(ya_t[t], x, m_t[t])
            x64 = x.double()
            rr = yy64 - 2.0 * (x64 * hty64).sum(-1) + (x64 * torch.bmm(x64, gram64)).sum(-1)
            excess = torch.relu(rr - floor64).to(dtype)                # [G, B]
        v = coef_m[t][:, None, :] * excess[..., None] + coef_a[t][:, None, :] * sigma2[..., None]  # [G, B, Nt]
        zz = z.view(groups, batch, 2, n_tx)
        x4 = _PosteriorMean.apply(zz, v.unsqueeze(2).expand(groups, batch, 2, n_tx), levels)
        outputs.append(x4)
        x = x4.reshape(groups, batch, 2 * n_tx)
    return torch.stack(outputs)


def _train_backend(backend: Backend, *tensors: torch.Tensor) -> str:
    """"cpu" or "torch" for :func:`mmnet_train_forward` (see its ``backend`` argument)."""
    if backend not in ("auto", "cpu", "torch"):
        raise ValueError(f"mmnet_train_forward: backend must be auto, cpu or torch; got {backend!r}")
    if backend == "torch":
        return "torch"
    native_ok = (all(t.device.type == "cpu" for t in tensors) and tensors[3].dtype == torch.float32
                 and tensors[4].dtype == torch.float32)
    if backend == "cpu":
        if not native_ok:
            raise ValueError("mmnet_train_forward: backend='cpu' needs float32 A_ri and theta2 on the CPU, got "
                             f"A_ri {describe(tensors[3])}, theta2 {describe(tensors[4])}")
        return "cpu"
    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
    return "cpu" if native_ok and not tracing else "torch"


def _native_train_sigma2(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, A_ri: torch.Tensor,
                         theta2: torch.Tensor) -> torch.Tensor:
    """Checks the native training arguments; returns sigma2 as float32 ``[G, B]``."""
    groups, n_rx, n_tx = H.shape
    check_tensor(H, "H", (torch.complex64,), (None, None, None), "[G, Nr, Nt]")
    check_tensor(y, "y", (torch.complex64,), (groups, None, n_rx), "[G, B, Nr]")
    batch = y.shape[1]
    if sigma2.dim() == 1:
        sigma2 = sigma2[:, None].expand(groups, batch)
    sigma2 = sigma2.detach().to(torch.float32).contiguous()
    check_tensor(sigma2, "sigma2", (torch.float32,), (groups, batch), "[G] or [G, B]")
    check_tensor(A_ri, "A_ri", (torch.float32,), (None, groups, n_tx, n_rx, 2), "[T, G, Nt, Nr, 2]")
    check_tensor(theta2, "theta2", (torch.float32,), (A_ri.shape[0], groups, n_tx), "[T, G, Nt]")
    return sigma2


def _train_forward_cpu(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, A_ri: torch.Tensor,
                       theta2: torch.Tensor, modulation: int) -> torch.Tensor:
    sigma2 = _native_train_sigma2(H, y, sigma2, A_ri, theta2)
    return _MMNetTrainCpu.apply(A_ri, theta2, H.detach(), y.detach(), sigma2, modulation)


def _train_buffers(A_ri: torch.Tensor, theta2: torch.Tensor,
                   y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The native training forward's inputs as it takes them (complex A, detached theta2) and its outputs
    (estimates ``[T, G, B, 2, Nt]``, tape)."""
    layers, groups, n_tx = theta2.shape
    batch = y.shape[1]
    xs = torch.empty((layers, groups, batch, 2, n_tx), dtype=torch.float32)
    tape = torch.empty(_edgert.mmnet_tape_size(layers, groups, batch, n_tx), dtype=torch.float32)
    return torch.view_as_complex(A_ri.detach()), theta2.detach(), xs, tape


class _MMNetTrainCpu(torch.autograd.Function):
    """:func:`mmnet_train_forward` on libedgert: the forward records a tape, the backward gives dL/dA and dL/dtheta2."""

    @staticmethod
    def forward(ctx: Any, A_ri: torch.Tensor, theta2: torch.Tensor, H: torch.Tensor, y: torch.Tensor,
                sigma2: torch.Tensor, modulation: int) -> torch.Tensor:
        A, theta2, xs, tape = _train_buffers(A_ri, theta2, y)
        _edgert.mmnet_train_forward(H, y, sigma2, A, theta2, modulation, xs, tape)
        ctx.save_for_backward(A_ri, theta2, H, y, sigma2, xs, tape)
        ctx.modulation = modulation
        return xs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        A_ri, theta2, H, y, sigma2, xs, tape = (t.detach() for t in ctx.saved_tensors)
        A = torch.view_as_complex(A_ri)
        grad_A = torch.empty_like(A)
        grad_theta2 = torch.empty_like(theta2)
        _edgert.mmnet_train_backward(H, y, sigma2, A, theta2, ctx.modulation, xs, tape,
                                     grad.to(torch.float32).contiguous(), grad_A, grad_theta2)
        return torch.view_as_real(grad_A), grad_theta2, None, None, None, None


def mmnet_train_loss(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, A_ri: torch.Tensor,
                     theta2: torch.Tensor, target: torch.Tensor, modulation: int = 16, *,
                     backend: Backend = "auto") -> torch.Tensor:
    """MMNet's training loss per channel: every layer's squared error, averaged over layers and vectors.

    ``loss[g] = mean_{t, b} ||xs[t, g, b] - target[g, b]||^2`` with ``xs`` from :func:`mmnet_train_forward`,
    i.e. ``(mmnet_train_forward(...) - target).pow(2).sum((-2, -1)).mean((0, 2))``, which is what the
    "torch" backend computes. The "cpu" backend fuses it into libedgert's forward and backward (the error
    is summed while each tile's estimates are in registers, and dL/dxs is never materialised), which saves
    the loss's passes over the ``[T, G, B, 2, Nt]`` estimates in every training step.

    Args:
        H, y, sigma2, A_ri, theta2, modulation, backend: as :func:`mmnet_train_forward`.
        target: ``[G, B, 2, Nt]`` transmitted symbols, real part at ``[..., 0, :]`` (constant), in
            ``A_ri``'s dtype.

    Returns:
        ``[G]`` loss per channel, differentiable in ``A_ri`` and ``theta2``.
    """
    _check_modulation(modulation)
    groups, _, n_tx = H.shape
    if target.shape != (groups, y.shape[1], 2, n_tx):
        raise ValueError(f"mmnet_train_loss: target must be [G, B, 2, Nt] = {[groups, y.shape[1], 2, n_tx]}, "
                         f"got {describe(target)}")
    if y.shape[1] == 0:
        raise ValueError("mmnet_train_loss: y has no vectors (B = 0); the loss is a mean over the batch")
    if _train_backend(backend, H, y, sigma2, A_ri, theta2) == "cpu":
        sigma2 = _native_train_sigma2(H, y, sigma2, A_ri, theta2)
        check_tensor(target, "target", (torch.float32,), (groups, y.shape[1], 2, n_tx), "[G, B, 2, Nt]")
        return _MMNetTrainLossCpu.apply(A_ri, theta2, H.detach(), y.detach(), sigma2,
                                        target.detach().contiguous(), modulation)
    xs = mmnet_train_forward(H, y, sigma2, A_ri, theta2, modulation, backend="torch")
    return (xs - target).pow(2).sum((-2, -1)).mean((0, 2))


class _MMNetTrainLossCpu(torch.autograd.Function):
    """:func:`mmnet_train_loss` on libedgert (mmnet_train_mse_forward / mmnet_train_mse_backward)."""

    @staticmethod
    def forward(ctx: Any, A_ri: torch.Tensor, theta2: torch.Tensor, H: torch.Tensor, y: torch.Tensor,
                sigma2: torch.Tensor, target: torch.Tensor, modulation: int) -> torch.Tensor:
        A, theta2, xs, tape = _train_buffers(A_ri, theta2, y)
        loss = torch.empty(theta2.shape[1], dtype=torch.float32)
        _edgert.mmnet_train_mse_forward(H, y, sigma2, A, theta2, modulation, target, xs, tape, loss)
        ctx.save_for_backward(A_ri, theta2, H, y, sigma2, target, xs, tape)
        ctx.modulation = modulation
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        A_ri, theta2, H, y, sigma2, target, xs, tape = (t.detach() for t in ctx.saved_tensors)
        A = torch.view_as_complex(A_ri)
        grad_A = torch.empty_like(A)
        grad_theta2 = torch.empty_like(theta2)
        _edgert.mmnet_train_mse_backward(H, y, sigma2, A, theta2, ctx.modulation, xs, tape, target,
                                         grad.to(torch.float32).contiguous(), grad_A, grad_theta2)
        return torch.view_as_real(grad_A), grad_theta2, None, None, None, None, None


def real_to_complex(x: torch.Tensor) -> torch.Tensor:
    """``[..., 2, Nt]`` real stacking (as returned by :func:`mmnet_train_forward`) -> complex ``[..., Nt]``."""
    return torch.complex(x[..., 0, :], x[..., 1, :])
