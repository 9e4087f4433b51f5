"""Message-passing detectors: AMP, OAMP/OAMPNet and EP (shapes in :mod:`.base`).

All three call the Gaussian-channel posterior of :func:`edgert.ops.gaussian_denoise`:
given ``z = x + w`` with ``w ~ CN(0, var)`` and ``x`` uniform on the constellation, it returns the
posterior mean and variance ``E|x - mean|^2`` per symbol.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from edgert.mimo.detectors.base import check_inputs, eye_like, gram, matched
from edgert.ops.mmnet import gaussian_denoise, gaussian_denoise_reference, hard_decision

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


@dataclass
class EP:
    """Expectation propagation (Cespedes, Olmos, Sanchez-Fernandez, Santamaria 2014), complex form.

    Gaussian approximation ``q(x) ∝ N(y; Hx, sigma2 I) prod_i exp(-lam_i |x_i|^2 + 2 Re(gam_i^* x_i))``;
    per iteration: ``Sigma = (H^H H / sigma2 + diag(lam))^-1``, ``mu = Sigma (H^H y / sigma2 + gam)``,
    cavity ``h2_i = Sigma_ii / (1 - Sigma_ii lam_i)``, ``t_i = h2_i (mu_i / Sigma_ii - gam_i)``, moment
    matching by the constellation posterior (:func:`edgert.ops.gaussian_denoise`), damped update
    (``beta`` on the new value; negative precisions keep the old value). Decisions slice the cavity
    mean ``t`` (the symbol-wise MAP decision). ``float64=True`` runs in complex128: float32 EP
    breaks down on ill-conditioned channels at high SNR.
    """

    iterations: int = 10
    beta: float = 0.9
    float64: bool = False
    min_var: float = 1e-7
    name: str = "ep"

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        ctype = torch.complex128 if self.float64 else torch.complex64
        rtype = torch.float64 if self.float64 else torch.float32
        Hc, yc = H.to(ctype), y.to(ctype)
        s2 = sigma2.to(rtype)[:, None, None]
        g, nr, nt = H.shape
        b = y.shape[1]
        G = (gram(Hc) / s2.to(ctype))[:, None]  # [G, 1, Nt, Nt]
        hy = matched(Hc, yc) / s2.to(ctype)  # [G, B, Nt]
        lam = torch.ones(g, b, nt, dtype=rtype)  # unit-energy prior
        gam = torch.zeros(g, b, nt, dtype=ctype)
        eye = torch.eye(nt, dtype=rtype)
        floor = self.min_var if not self.float64 else 1e-12
        for _ in range(self.iterations):
            sigma = torch.linalg.inv(G + torch.diag_embed(lam).to(ctype))
            mu = (sigma @ (hy + gam)[..., None])[..., 0]
            sd = torch.diagonal(sigma, dim1=-2, dim2=-1).real.clamp_min(floor)
            h2 = (sd / (1 - sd * lam)).clamp_min(floor)
            t = h2.to(ctype) * (mu / sd.to(ctype) - gam)
            m, v = _denoise(t, h2, modulation, False)
            v = v.to(rtype).clamp_min(floor)
            lam_new = 1 / v - 1 / h2
            gam_new = m.to(ctype) / v.to(ctype) - t / h2.to(ctype)
            ok = lam_new > 0
            lam = torch.where(ok, self.beta * lam_new + (1 - self.beta) * lam, lam)
            gam = torch.where(ok, self.beta * gam_new + (1 - self.beta) * gam, gam)
        del eye
        return m.to(torch.complex64), hard_decision(t.to(torch.complex64), modulation)
