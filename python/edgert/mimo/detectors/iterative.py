"""Message-passing detectors: AMP, OAMP/OAMPNet (also trained per channel) and EP (shapes in :mod:`.base`).

All three call the Gaussian-channel posterior of :func:`edgert.ops.gaussian_denoise`:
given ``z = x + w`` with ``w ~ CN(0, var)`` and ``x`` uniform on the constellation, it returns the
posterior mean and variance ``E|x - mean|^2`` per symbol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from edgert.mimo.detectors.base import check_inputs, eye_like, gram, matched
from edgert.ops.mmnet import (
    axis_posterior_mean,
    gaussian_denoise,
    gaussian_denoise_reference,
    hard_decision,
    pam_posterior,
    qam_levels,
    real_block,
)

_EPS = 1e-9


def _denoise(z: torch.Tensor, var: torch.Tensor, modulation: int, differentiable: bool):
    var = var.expand(z.shape).contiguous().to(z.real.dtype)
    if differentiable or z.dtype != torch.complex64:
        return gaussian_denoise_reference(z, var, modulation)
    return gaussian_denoise(z.contiguous(), var, modulation)


@dataclass
class AMP:
    """Approximate message passing for large MIMO (Jeon et al., ISIT 2015) with analytic noise tracking.

    With ``A = H / sqrt(Nr)`` and ``beta = Nt / Nr``: ``z = x + A^H r``,
    ``x, v = denoise(z, tau2)``, ``r <- y/sqrt(Nr) - A x + beta * mean(v) / tau2 * r`` and the
    state-evolution update ``tau2 <- sigma2/Nr + beta * mean(v)`` (no empirical residual norm).
    Converges on i.i.d.-like channels; diverges on strongly correlated ones (as expected of AMP).
    """

    iterations: int = 10
    name: str = "amp"

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        g, nr, nt = H.shape
        scale = nr ** -0.5
        A = H * scale
        yn = y * scale
        s2 = (sigma2 / nr)[:, None, None]
        beta = nt / nr
        x = torch.zeros(y.shape[0], y.shape[1], nt, dtype=H.dtype)
        r = yn
        tau2 = (s2 + beta).expand(g, y.shape[1], 1)
        for _ in range(self.iterations):
            z = x + matched(A, r)
            x, v = _denoise(z, tau2, modulation, False)
            vbar = v.mean(-1, keepdim=True)
            r = yn - x @ A.transpose(1, 2) + (beta * vbar / tau2).to(H.dtype) * r
            tau2 = (s2 + beta * vbar).clamp_min(_EPS)
        return x, hard_decision(z, modulation)


@dataclass
class OAMP:
    """Orthogonal AMP (Ma & Ping 2017) and OAMPNet (He et al. 2018) with 2 scalars per layer.

    Per layer, per vector: ``v2 = max((||y - Hx||^2 - Nr sigma2) / tr(H^H H), eps)``,
    ``W = Nt / tr(W^ H) W^`` with the LMMSE ``W^ = v2 H^H (v2 H H^H + sigma2 I)^-1``,
    ``z = x + gamma_t W (y - H x)``, ``tau2 = tr(C C^H) v2 / Nt + theta_t^2 tr(W W^H) sigma2 / Nt``
    with ``C = I - theta_t W H``, ``x = denoise(z, tau2)``. ``gamma = theta = 1`` is OAMP; OAMPNet
    learns them (:func:`edgert.mimo.training.train_offline`).
    """

    iterations: int = 10
    gamma: Optional[torch.Tensor] = None
    theta: Optional[torch.Tensor] = None
    name: str = "oamp"

    def __post_init__(self) -> None:
        if self.gamma is None:
            self.gamma = torch.ones(self.iterations)
        if self.theta is None:
            self.theta = torch.ones(self.iterations)

    def parameters(self) -> list[torch.Tensor]:
        return [self.gamma, self.theta]

    def forward(self, H, y, sigma2, modulation, all_layers: bool = False, differentiable: bool = False):
        """Returns the per-layer estimates ``[T, G, B, Nt]`` if ``all_layers`` else the last ``[G, B, Nt]``."""
        g, nr, nt = H.shape
        G = gram(H)  # [G, Nt, Nt]
        trG = torch.diagonal(G, dim1=1, dim2=2).real.sum(-1)  # [G]
        s2 = sigma2[:, None]
        eye = eye_like(nt, H)
        x = torch.zeros(g, y.shape[1], nt, dtype=H.dtype)
        outs = []
        for t in range(self.iterations):
            r = y - x @ H.transpose(1, 2)
            v2 = (((r.abs() ** 2).sum(-1) - nr * s2) / trG[:, None]).clamp_min(_EPS)  # [G, B]
            m = v2[..., None, None].to(H.dtype) * G[:, None] + (s2[..., None, None] * eye).to(H.dtype)
            minv = torch.linalg.inv(m)  # [G, B, Nt, Nt]
            p = v2[..., None, None].to(H.dtype) * (minv @ G[:, None])  # W^ H
            c = nt / torch.diagonal(p, dim1=-2, dim2=-1).real.sum(-1)  # [G, B]
            hr = matched(H, r)  # [G, B, Nt]
            wr = (c * v2)[..., None].to(H.dtype) * (minv @ hr[..., None])[..., 0]
            z = x + self.gamma[t].to(H.dtype) * wr
            cm = eye - self.theta[t].to(H.dtype) * c[..., None, None].to(H.dtype) * p
            trcc = (cm.abs() ** 2).sum((-2, -1))
            # tr(W W^H) = (c v2)^2 tr(minv G minv^H)
            trww = (c * v2) ** 2 * torch.einsum("gbij,gjk,gbik->gb", minv, G, minv.conj()).real
            tau2 = (trcc * v2 + self.theta[t] ** 2 * trww * s2) / nt
            x, _ = _denoise(z, tau2[..., None].clamp_min(_EPS), modulation, differentiable)
            outs.append(x)
        return (torch.stack(outs) if all_layers else x), z

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        with torch.no_grad():
            x, z = self.forward(H, y, sigma2, modulation)
        return x, hard_decision(x, modulation)


def oamp_train_forward(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, gamma: torch.Tensor,
                       theta: torch.Tensor, modulation: int) -> torch.Tensor:
    """:class:`OAMP`'s layers with per-channel ``gamma``, ``theta``, in a form that is fast to differentiate.

    With ``H^H H = U diag(lam) U^H`` (one eigendecomposition per channel, float64), the LMMSE matrix is
    diagonal in the basis ``U``: ``W^ H = U diag(d) U^H`` with ``d = v2 lam / (v2 lam + sigma2)``, so
    ``c = Nt / sum(d)``, ``tr(C C^H) = sum (1 - theta c d)^2`` and ``tr(W W^H) = (c v2)^2 sum lam /
    (v2 lam + sigma2)^2`` are sums over the Nt eigenvalues, and ``W (y - Hx) = c v2 U diag(1 / (v2 lam +
    sigma2)) q`` with ``q = U^H H^H (y - Hx) = U^H H^H y - lam U^H x``: per vector and layer two Nt x Nt
    rotations instead of an Nt x Nt inverse and two Nr x Nt products. The residual power is
    ``||y - Hx||^2 = (||y||^2 - ||P_H y||^2) + sum_i |q_i|^2 / lam_i`` (a projection-free sum of squares,
    no cancellation at high SNR; eigenvalues below ``1e-12 tr(H^H H)`` count as a null space). Vectors
    are stacked ``[Re, Im]`` (no complex autograd) and the denoiser is
    :func:`edgert.ops.mmnet.axis_posterior_mean`. Same math as :meth:`OAMP.forward` (float32 rounding).

    Args:
        H: complex64 ``[G, Nr, Nt]`` (constant, not differentiated).
        y: complex64 ``[G, B, Nr]``.
        sigma2: float32 ``[G]`` or ``[G, B]`` (a noise variance per vector, e.g. one SNR per vector group).
        gamma, theta: float32 ``[T, G]`` (differentiable).
        modulation: QAM order (4, 16, 64).

    Returns:
        float32 ``[T, G, B, 2, Nt]``: every layer's estimate (posterior mean), real part at ``[..., 0, :]``.
    """
    g, nr, nt = H.shape
    b = y.shape[1]
    s2 = (sigma2[:, None].expand(g, b) if sigma2.dim() == 1 else sigma2).to(torch.float32)
    with torch.no_grad():
        h64 = H.to(torch.complex128)
        gram64 = h64.mH @ h64
        lam64, u64 = torch.linalg.eigh(gram64)
        tr_g = torch.diagonal(gram64, dim1=1, dim2=2).real.sum(-1)  # [G]
        lam64 = lam64.clamp_min(0.0)
        inv_lam64 = torch.where(lam64 > 1e-12 * tr_g[:, None], 1.0 / lam64.clamp_min(1e-300), 0.0)
        y64 = y.to(torch.complex128)
        ty64 = (y64 @ h64.conj()) @ u64.conj()  # U^H H^H y, [G, B, Nt]
        perp = ((y64.abs() ** 2).sum(-1) - (ty64.abs() ** 2 * inv_lam64[:, None]).sum(-1)).clamp_min(0.0)
        base = ((perp - nr * s2.double()) / tr_g[:, None]).float()  # v2 at zero in-span residual, [G, B]
        lam = lam64.float()[:, None, :]  # [G, 1, Nt]
        w_res = (inv_lam64 / tr_g[:, None]).float()[:, None, None, :]  # [G, 1, 1, Nt]
        ty = torch.stack([ty64.real, ty64.imag], -2).float()  # [G, B, 2, Nt]
        to_eig = real_block(u64.mH).float()  # [Re, Im](x) @ to_eig = [Re, Im](U^H x)
        from_eig = real_block(u64).float()  # and back
    x = torch.zeros(g, b, 2 * nt, dtype=torch.float32)
    outputs = []
    for t in range(gamma.shape[0]):
        xt = torch.bmm(x, to_eig).view(g, b, 2, nt)
        q = ty - lam.unsqueeze(2) * xt  # U^H H^H (y - H x)
        v2 = (base + (q * q * w_res).sum((-2, -1))).clamp_min(_EPS)  # [G, B]
        vl = v2[..., None] * lam  # [G, B, Nt]
        den = vl + s2[..., None]
        d = vl / den
        c = nt / d.sum(-1)
        cv = c * v2
        gt, tt = gamma[t][:, None], theta[t][:, None]  # [G, 1]
        zt = xt + (gt * cv)[..., None, None] * q / den.unsqueeze(2)
        z = torch.bmm(zt.reshape(g, b, 2 * nt), from_eig).view(g, b, 2, nt)
        trcc = (1.0 - (tt * c)[..., None] * d).pow(2).sum(-1)
        trww = cv.pow(2) * (lam / den.pow(2)).sum(-1)
        tau2 = ((trcc * v2 + tt.pow(2) * trww * s2) / nt).clamp_min(_EPS)  # [G, B]
        x4 = axis_posterior_mean(z, tau2[..., None, None].expand(g, b, 2, nt), modulation)
        outputs.append(x4)
        x = x4.reshape(g, b, 2 * nt)
    return torch.stack(outputs)


@dataclass
class OAMPNetOnline:
    """OAMPNet with its two scalars per layer learned for each channel (:mod:`edgert.mimo.oampnet_online`).

    ``gamma``, ``theta``: float32 ``[T, G]``; channel ``g`` of the parameters belongs to channel ``g`` of
    the set they were trained on, and :meth:`for_channels` selects a range so that an evaluation can run
    the set in chunks. The layer is :class:`OAMP`'s, computed as :func:`oamp_train_forward` (the form the
    parameters were trained in; ``gamma = theta = 1`` is OAMP).
    """

    gamma: torch.Tensor = field(default_factory=lambda: torch.ones(0, 0))
    theta: torch.Tensor = field(default_factory=lambda: torch.ones(0, 0))
    name: str = "oampnet_online"

    @staticmethod
    def initial(layers: int, channels: int) -> "OAMPNetOnline":
        """OAMP's parameters (``gamma = theta = 1``) for ``channels`` channels."""
        return OAMPNetOnline(torch.ones(layers, channels), torch.ones(layers, channels))

    def for_channels(self, start: int, stop: int) -> "OAMPNetOnline":
        return OAMPNetOnline(self.gamma[:, start:stop].contiguous(), self.theta[:, start:stop].contiguous(),
                             self.name)

    def parameters(self) -> list[torch.Tensor]:
        return [self.gamma, self.theta]

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        g = H.shape[0]
        if self.gamma.dim() != 2 or self.gamma.shape != self.theta.shape or self.gamma.shape[1] != g:
            raise ValueError(f"OAMPNetOnline parameters gamma {list(self.gamma.shape)}, theta "
                             f"{list(self.theta.shape)} do not match H {list(H.shape)} (expected [T, G={g}] "
                             "each); select the trained channels with for_channels()")
        with torch.no_grad():
            x4 = oamp_train_forward(H, y, sigma2, self.gamma.float(), self.theta.float(), modulation)[-1]
        x = torch.complex(x4[..., 0, :], x4[..., 1, :])
        return x, hard_decision(x, modulation)


@dataclass
class EP:
    """Expectation propagation (Cespedes, Olmos, Sanchez-Fernandez, Santamaria 2014) in the real-valued form.

    The complex model becomes ``y_r = H_r x_r + n_r`` with ``2 Nt`` real unknowns, each uniform on the
    sqrt(M)-PAM of one QAM axis, and real noise of variance ``no = sigma2 / 2``. Every real unknown has its
    own Gaussian site ``exp(-lam_i x_i^2 / 2 + gam_i x_i)``; per iteration:
    ``Sigma = (H_r^T H_r / no + diag(lam))^-1``, ``mu = Sigma (H_r^T y_r / no + gam)``, cavity
    ``v_i = 1 / (1 / Sigma_ii - lam_i)``, ``t_i = v_i (mu_i / Sigma_ii - gam_i)``, moment matching with the PAM
    posterior (:func:`edgert.ops.pam_posterior`), and the damped site update
    ``lam <- (1 - beta) lam_new + beta lam`` (same for ``gam``; a negative new precision keeps the old site).
    Decisions slice the last cavity mean ``t`` (the symbol-wise MAP decision).

    This is Sionna's ``EPDetector`` (``sionna.phy.mimo``, which follows the paper) step for step, including
    its conventions, so that the two agree decision for decision (``tests/test_mimo_detectors.py``):

    * ``beta`` weighs the *previous* site (Sionna's ``beta = 0.9``; the paper's smoothing factor is
      ``1 - beta``). Heavy damping matters on correlated channels: weighing the new site by 0.9 instead (an
      earlier edgert EP) made ~20x more errors on UMa NLOS 64x16 at 24 dB.
    * Sites start at ``lam = init_precision / E[x_axis^2]``; ``None`` takes Sionna's start
      ``1 / var(levels)`` with the unbiased sample variance of the ``k`` PAM levels, i.e.
      ``(k - 1) / k / E[x_axis^2]`` (0.75 of the prior precision for QAM16). A start below the prior
      precision is a wider prior and helps on ill-conditioned channels (``docs/results/mimo.md``).
    * The real form gives the I and Q axes their own sites. With one site per complex symbol (the earlier
      complex form) the same damping still made ~1.6x more errors on UMa NLOS 64x16 at 24 dB.

    ``float64=True`` runs in double precision (variance floor 1e-12, else 1e-6, as Sionna).

    ``cavity_scale = (first, last)`` widens the Gaussian noise the denoiser assumes: layer t's denoiser sees
    the cavity variance times a factor linear from ``first`` (layer 0) to ``last`` (the last layer), while the
    site update keeps the cavity's own variance (:func:`ep_forward`). ``(1, 1)`` is Sionna's EP. Why: on
    realistic channels the cavity's error is heavier-tailed than its variance says (``docs/results/mimo.md``,
    Gaussianity), and a denoiser that trusts it commits early layers to wrong points that heavy damping then
    keeps. ``ep64_wide`` (``(2, 1)``, chosen on a tuning draw of the UMa time set) makes ~4x fewer errors
    than ``ep64`` on that set at 21-22 dB and ~2x more at 18 dB (``docs/results/mimo.md``, "EP with a widened
    denoiser").
    """

    iterations: int = 10
    beta: float = 0.9
    float64: bool = False
    init_precision: Optional[float] = None
    cavity_scale: tuple[float, float] = (1.0, 1.0)
    name: str = "ep"

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta: expected the weight of the previous site in [0, 1), got {self.beta}")
        if self.iterations < 1:
            raise ValueError(f"iterations: expected >= 1, got {self.iterations}")
        if self.init_precision is not None and not self.init_precision > 0:
            raise ValueError(f"init_precision: expected > 0 or None, got {self.init_precision}")
        if len(self.cavity_scale) != 2 or not all(math.isfinite(v) and v > 0 for v in self.cavity_scale):
            raise ValueError(f"cavity_scale: expected (first, last) finite factors > 0, got {self.cavity_scale}")

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        g, nt = H.shape[0], H.shape[2]
        beta = torch.full((self.iterations, g), self.beta, dtype=torch.float64)
        scale = None
        if tuple(self.cavity_scale) != (1.0, 1.0):
            per_layer = torch.linspace(*self.cavity_scale, self.iterations, dtype=torch.float64)
            scale = per_layer[:, None, None].expand(self.iterations, g, nt)
        means, cavity, _ = ep_forward(H, y, sigma2, modulation, beta, scale, init_precision=self.init_precision,
                                      float64=self.float64)
        return _ep_outputs(means[-1], cavity, modulation)


def _ep_outputs(m: torch.Tensor, t: torch.Tensor, modulation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """EP's soft output (the last posterior mean) and decisions (the last cavity mean), real ``[..., 2Nt]``."""
    nt = m.shape[-1] // 2
    x_soft = torch.complex(m[..., :nt], m[..., nt:]).to(torch.complex64)
    x_cav = torch.complex(t[..., :nt], t[..., nt:]).to(torch.complex64)
    return x_soft, hard_decision(x_cav, modulation)


def ep_forward(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, modulation: int, beta: torch.Tensor,
               scale: Optional[torch.Tensor] = None, *, init_precision: Optional[float] = None,
               float64: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The iterations of :class:`EP` with per-layer, per-channel damping and denoiser variance scales.

    ``beta``: ``[T, G]``, the weight of the previous site in layer t (:class:`EP`: 0.9 everywhere); ``scale``:
    ``[T, G, Nt]`` or None (ones): the denoiser of layer t sees user i's cavity variance times
    ``scale[t, g, i]`` on both axes, while the site update keeps the cavity's own variance (``cavity_scale``).
    ``sigma2`` is ``[G]`` or ``[G, B]`` (one noise variance per vector, as in training batches). Differentiable
    in ``beta`` and ``scale``. Returns the posterior means of every layer, real ``[T, G, B, 2Nt]``, the last
    layer's cavity means ``[G, B, 2Nt]`` (what EP decides on) and the variances its denoiser assumed for them
    (scaled), in float64 with ``float64`` else float32.

    Raises:
        ValueError: ``beta`` not ``[T, G]`` with T >= 1, or ``scale`` not ``[T, G, Nt]``.
    """
    rtype = torch.float64 if float64 else torch.float32
    floor = 1e-12 if float64 else 1e-6
    g, nr, nt = H.shape
    if beta.dim() != 2 or beta.shape[0] < 1 or beta.shape[1] != g:
        raise ValueError(f"beta: expected [T >= 1, G = {g}] (one damping weight per layer and channel), "
                         f"got {list(beta.shape)}")
    if scale is not None and tuple(scale.shape) != (beta.shape[0], g, nt):
        raise ValueError(f"scale: expected [T, G, Nt] = {[beta.shape[0], g, nt]} or None, got {list(scale.shape)}")
    rb = real_block(H.to(torch.complex128 if float64 else torch.complex64))  # [G, 2Nt, 2Nr]
    yr = torch.cat([y.real, y.imag], -1).to(rtype)  # [G, B, 2Nr]
    no = (sigma2.to(rtype) / 2).reshape(g, -1)[..., None, None]  # [G, 1 or B, 1, 1]
    hth = (rb @ rb.transpose(1, 2))[:, None] / no  # [G, 1 or B, 2Nt, 2Nt]
    hty = (yr @ rb.transpose(1, 2)) / no[..., 0]  # [G, B, 2Nt]
    levels = qam_levels(modulation, torch.float64)
    k = levels.numel()
    energy = float((levels ** 2).mean())
    start = (k - 1) / k if init_precision is None else init_precision
    lam = torch.full((g, y.shape[1], 2 * nt), start / energy, dtype=rtype)
    gam = torch.zeros_like(lam)
    means = []
    for layer in range(beta.shape[0]):
        sigma = torch.linalg.inv(hth + torch.diag_embed(lam))
        mu = (sigma @ (hty + gam)[..., None])[..., 0]
        sd = torch.diagonal(sigma, dim1=-2, dim2=-1)
        v_cav = (1 / (1 / sd - lam)).clamp_min(floor)
        t = v_cav * (mu / sd - gam)
        seen = v_cav if scale is None else v_cav * scale[layer].to(rtype).repeat(1, 2)[:, None, :]
        m, v = pam_posterior(t, seen, modulation)
        v = v.clamp_min(floor)
        lam_new = 1 / v - 1 / v_cav
        gam_new = m / v - t / v_cav
        keep = lam_new < 0
        lam_new = torch.where(keep, lam, lam_new)
        gam_new = torch.where(keep, gam, gam_new)
        b = beta[layer].to(rtype)[:, None, None]
        lam = (1 - b) * lam_new + b * lam
        gam = (1 - b) * gam_new + b * gam
        means.append(m)
    return torch.stack(means), t, seen
