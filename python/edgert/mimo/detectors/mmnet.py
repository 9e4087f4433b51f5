"""MMNet detectors (Khani et al., "Adaptive Neural Signal Detection for Massive MIMO", 2020).

Layer t (of T, default 10): ``z_t = x_t + A_t (y - H x_t)``, per-symbol noise estimate
``sigma_t^2 = theta2_t / Nt * (||I - A_t H||_F^2 v_t^2 + ||A_t||_F^2 sigma2)`` with
``v_t^2 = max((||y - H x_t||^2 - Nr sigma2) / ||H||_F^2, eps)``, ``x_{t+1} = denoise(z_t, sigma_t^2)``.

* MMNet-iid: ``A_t = theta1_t H^H`` and a scalar ``theta2_t``: 2 scalars per layer, trained offline
  on random i.i.d. channels (:func:`edgert.mimo.training.train_offline`).
* MMNet: a full complex ``A_t`` ``[Nt, Nr]`` and ``theta2_t`` ``[Nt]`` per layer, trained online per
  channel (:mod:`edgert.mimo.online`).

Inference runs :func:`edgert.ops.mmnet_detect` (native kernel); training runs
:func:`edgert.ops.mmnet.mmnet_train_forward` (the math of :func:`edgert.ops.mmnet_detect_reference`,
real-valued, with a fused denoiser backward) under autograd. Shapes as in :mod:`.base`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from edgert.mimo.detectors.base import check_inputs
from edgert.ops.mmnet import hard_decision, mmnet_detect, mmnet_train_forward, real_to_complex


@dataclass
class MMNetIID:
    """MMNet-iid: ``theta1`` ``[T]`` and ``theta2`` ``[T]`` shared by all channels and users.

    ``theta1`` starts at ``1/Nr`` (a matched-filter step for unit-power columns), ``theta2`` at 1.
    """

    layers: int = 10
    nr: int = 64
    theta1: Optional[torch.Tensor] = None
    theta2: Optional[torch.Tensor] = None
    name: str = "mmnet_iid"

    def __post_init__(self) -> None:
        if self.theta1 is None:
            self.theta1 = torch.full((self.layers,), 1.0 / self.nr)
        if self.theta2 is None:
            self.theta2 = torch.ones(self.layers)

    def parameters(self) -> list[torch.Tensor]:
        return [self.theta1, self.theta2]

    def forward(self, H, y, sigma2, modulation, all_layers: bool = False, differentiable: bool = False):
        """Per-layer estimates ``[T, G, B, Nt]`` if ``all_layers`` else ``[G, B, Nt]``; plus decisions."""
        g, _, nt = H.shape
        t2 = self.theta2[:, None, None].expand(self.layers, g, nt).contiguous()
        if differentiable:
            # A_t = theta1_t H^H through the fast training graph (same math as mmnet_detect_reference)
            A_ri = self.theta1[:, None, None, None, None] * torch.view_as_real(H.mH.contiguous()).unsqueeze(0)
            xs = real_to_complex(mmnet_train_forward(H, y, sigma2, A_ri, t2, modulation))
            x = xs if all_layers else xs[-1]
            return x, hard_decision(xs[-1].detach(), modulation)
        t1 = self.theta1[:, None].expand(self.layers, g).contiguous()
        return mmnet_detect(H, y, sigma2, t2, theta1=t1, modulation=modulation, all_layers=all_layers)

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        with torch.no_grad():
            return self.forward(H.contiguous(), y.contiguous(), sigma2.contiguous(), modulation)

    def state_dict(self) -> dict:
        return {"theta1": self.theta1.detach().clone(), "theta2": self.theta2.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.theta1 = state["theta1"].clone()
        self.theta2 = state["theta2"].clone()
        self.layers = int(self.theta1.numel())


def init_mmnet_params(H: torch.Tensor, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial MMNet parameters for channels ``H`` ``[G, Nr, Nt]``.

    ``A_t = H^H / ||H||_F^2 * Nt`` (a matched-filter step normalised per channel) and ``theta2_t = 1``.
    Returns ``A`` complex64 ``[T, G, Nt, Nr]`` and ``theta2`` float32 ``[T, G, Nt]``.
    """
    g, _, nt = H.shape
    scale = nt / (H.abs() ** 2).sum((1, 2))
    A = (H.mH * scale[:, None, None].to(H.dtype)).unsqueeze(0).repeat(layers, 1, 1, 1)
    return A.contiguous(), torch.ones(layers, g, nt)


@dataclass
class RegularisedBasis:
    """Eigenbasis of channels ``H`` ``[G, Nr, Nt]`` for MMNet's regularised linear stage.

    ``H^H H = U diag(d) U^H`` (one eigendecomposition per channel, complex128) and ``B = U^H H^H``, so that
    the regularised inverse ``(H^H H + lam I)^-1 H^H = U diag(1 / (d + lam)) B`` costs no solve per ``lam``
    and is differentiable in ``lam`` through real scalings only.

    Attributes:
        u: complex128 ``[G, Nt, Nt]``; d: float64 ``[G, Nt]`` (eigenvalues, >= 0); b: complex128 ``[G, Nt, Nr]``.
    """

    u: torch.Tensor
    d: torch.Tensor
    b: torch.Tensor

    @staticmethod
    def of(H: torch.Tensor) -> "RegularisedBasis":
        h = H.detach().to(torch.complex128)
        d, u = torch.linalg.eigh(h.mH @ h)
        return RegularisedBasis(u, d.clamp_min(0.0), u.mH @ h.mH)

    def operators(self, alpha: torch.Tensor, log_lam: torch.Tensor,
                  dtype: torch.dtype = torch.complex64) -> torch.Tensor:
        """``A_t = alpha_t (H^H H + lam_t I)^-1 H^H`` with ``lam_t = exp(log_lam_t)``: ``dtype`` ``[T, G, Nt, Nr]``.

        ``alpha``, ``log_lam``: real ``[T, G]`` (differentiable). ``lam`` is in units of ``|h_ij|^2`` (the
        noise variance ``sigma2`` per receive antenna gives the LMMSE filter for unit-energy symbols).
        """
        inv = 1.0 / (self.d.unsqueeze(0) + log_lam.double().exp()[..., None])  # [T, G, Nt]
        w = (self.u.unsqueeze(0) * inv[..., None, :].to(self.u.dtype)) @ self.b.unsqueeze(0)
        return (alpha.double()[..., None, None].to(w.dtype) * w).to(dtype)


@dataclass
class MMNet:
    """MMNet with per-channel parameters: ``A`` ``[T, G, Nt, Nr]`` and ``theta2`` ``[T, G, Nt]``.

    Channel ``g`` of the parameters belongs to channel ``g`` of the set it was trained on
    (:func:`edgert.mimo.online.train_online` fills them); :meth:`for_channels` selects a range so that
    an evaluation can run the set in chunks.
    """

    A: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, 0, 0, dtype=torch.complex64))
    theta2: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, 0))
    name: str = "mmnet"

    def for_channels(self, start: int, stop: int) -> "MMNet":
        return MMNet(self.A[:, start:stop].contiguous(), self.theta2[:, start:stop].contiguous(), self.name)

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        if self.A.shape[1] != H.shape[0] or self.A.shape[2:] != (H.shape[2], H.shape[1]):
            raise ValueError(f"MMNet parameters A {list(self.A.shape)} do not match H {list(H.shape)} "
                             "(expected [T, G, Nt, Nr]); select the trained channels with for_channels()")
        with torch.no_grad():
            return mmnet_detect(H.contiguous(), y.contiguous(), sigma2.contiguous(), self.theta2, A=self.A,
                                modulation=modulation)
