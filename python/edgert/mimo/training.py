"""Training data and losses shared by offline (MMNet-iid, OAMPNet) and online (MMNet) training.

Loss (Khani et al.): mean over layers of ``||x_hat_t - x||^2``, averaged over vectors.
Training batches are drawn on the fly: uniform QAM symbols, SNR uniform in ``snr_db`` per group of
vectors (one noise variance per channel copy, see :func:`edgert.mimo.channels.sample_batch`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from edgert.mimo.channels import check_modulation, iid_rayleigh, sample_batch


def layer_loss(xs: torch.Tensor, x: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    """``mean_t mean_vectors ||xs[t] - x||^2`` for ``xs`` ``[T, G, B, Nt]``, ``x`` ``[G, B, Nt]``: a scalar
    (also averaged over the G channels), or ``[G]`` with ``per_channel`` (each channel's own loss)."""
    err = (xs - x.unsqueeze(0)).abs().pow(2).sum(-1)
    return err.mean((0, 2)) if per_channel else err.mean()


def uniform_snr(n: int, snr_db: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """``n`` SNRs (dB) uniform in ``[lo, hi]``: float64 ``[n]``."""
    lo, hi = snr_db
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def online_batch(H: torch.Tensor, modulation: int, snr_db: tuple[float, float], batch: int, snr_groups: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One iteration's data for per-channel training on channels ``H`` ``[G, Nr, Nt]`` (MMNet's online recipe):
    ``batch`` vectors per channel in ``snr_groups`` groups, one SNR each, uniform in ``snr_db``. Returns ``y``
    complex64 ``[G, B, Nr]``, ``sigma2`` float32 ``[G, B]`` and the sent ``x`` complex64 ``[G, B, Nt]``."""
    g, nr, nt = H.shape
    per = batch // snr_groups
    b = sample_batch(H.repeat_interleave(snr_groups, dim=0), uniform_snr(g * snr_groups, snr_db, generator),
                     modulation, per, generator)
    sigma2 = b.sigma2.reshape(g, snr_groups, 1).expand(g, snr_groups, per).reshape(g, batch)
    return b.y.reshape(g, batch, nr), sigma2, b.x.reshape(g, batch, nt)


@dataclass
class OfflineConfig:
    """Offline training on random i.i.d. Rayleigh channels (MMNet-iid, OAMPNet).

    Each iteration draws ``channels`` fresh channels with ``batch // channels`` vectors each and one
    SNR per channel uniform in ``snr_db``.
    """

    nr: int = 64
    nt: int = 16
    modulation: int = 16
    snr_db: tuple[float, float] = (8.0, 16.0)
    iterations: int = 2000
    batch: int = 500
    channels: int = 10
    lr: float = 1e-3
    seed: int = 0


def train_offline(model, cfg: OfflineConfig, log: Optional[Callable[[int, float], None]] = None) -> list[float]:
    """Trains ``model`` (``parameters()`` and ``forward(H, y, sigma2, modulation, all_layers, differentiable)``)
    with Adam; returns the loss per iteration. The model's parameter tensors are updated in place."""
    check_modulation(cfg.modulation)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p.requires_grad_(True) for p in model.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    per = max(1, cfg.batch // cfg.channels)
    losses: list[float] = []
    for it in range(cfg.iterations):
        H = iid_rayleigh(cfg.channels, cfg.nr, cfg.nt, gen)
        b = sample_batch(H, uniform_snr(cfg.channels, cfg.snr_db, gen), cfg.modulation, per, gen)
        xs, _ = model.forward(H, b.y, b.sigma2, cfg.modulation, all_layers=True, differentiable=True)
        loss = layer_loss(xs, b.x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None:
            log(it, losses[-1])
    for p in params:
        p.requires_grad_(False)
    return losses


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """Runs ``fn`` and returns (its result, wall seconds)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
