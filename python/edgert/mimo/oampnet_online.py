"""OAMPNet trained online per channel: OAMP's two scalars per layer (gamma_t, theta_t) learned for each matrix.

The MMNet paper's strongest learned baseline on realistic channels is OAMPNet trained for the channel at
hand, as MMNet is. Here every channel ``g`` of a set gets its own ``gamma[:, g]``, ``theta[:, g]``
(``[T, G]`` in all), trained with MMNet's online recipe (:mod:`edgert.mimo.online`): per iteration
``batch`` fresh vectors per channel split into ``snr_groups`` groups, one SNR each, uniform in ``snr_db``
(:func:`edgert.mimo.training.online_batch`); loss = mean over
layers of ``||x_t - x||^2`` (:func:`edgert.mimo.training.layer_loss`); Adam with ``lr``.

**Start and warm starts.** Every channel starts from OAMP (``gamma = theta = 1``) and gets ``iterations``
Adam steps; there is no warm start along time or frequency. MMNet needs its warm starts because its
``A_t`` are channel-specific operators that take ~1000 iterations from scratch; OAMPNet's scalars sit on
top of OAMP's analytic, channel-adapted LMMSE step, so OAMP is already a good start on every channel, and
independent channels train side by side in one batched graph (each with its own parameters and loss term;
Adam is elementwise, so this equals training them one by one), which a chain along a sequence would
serialise. ``parallel`` bounds the channels per graph (memory: ~25 MB per channel at batch 500, 64x16,
10 layers); the result depends on it only through the random batches (one generator per graph).

The forward pass is :func:`edgert.mimo.detectors.iterative.oamp_train_forward` (OAMP in the eigenbasis of
``H^H H``, real-valued, the denoiser with a hand-written backward).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch

from edgert.mimo.channels import check_modulation
from edgert.mimo.detectors.iterative import OAMPNetOnline, oamp_train_forward
from edgert.mimo.training import layer_loss, online_batch
from edgert.ops.mmnet import real_to_complex


@dataclass
class OAMPNetOnlineConfig:
    """Per-channel OAMPNet training; batch, SNR groups and lr as :class:`edgert.mimo.online.OnlineConfig`."""

    modulation: int = 16
    snr_db: tuple[float, float] = (10.0, 20.0)
    layers: int = 10
    iterations: int = 100
    batch: int = 500
    snr_groups: int = 10
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1
    parallel: int = 0

    def validate(self) -> None:
        check_modulation(self.modulation)
        lo, hi = self.snr_db
        if not (-20.0 <= lo <= hi <= 60.0):
            raise ValueError(f"snr_db: expected -20 <= lo <= hi <= 60 dB, got {self.snr_db}")
        for name in ("layers", "batch", "snr_groups", "threads", "iterations", "parallel"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name}: expected an integer, got {v!r}")
            if v < (0 if name in ("iterations", "parallel") else 1):
                raise ValueError(f"{name}: expected >= {0 if name in ('iterations', 'parallel') else 1}, got {v}")
        if self.batch % self.snr_groups:
            raise ValueError(f"batch ({self.batch}) must be a multiple of snr_groups ({self.snr_groups})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a finite value > 0, got {self.lr!r}")


@dataclass
class OAMPNetOnlineResult:
    """Per-channel OAMPNet parameters and what training them cost.

    Attributes:
        gamma, theta: float32 ``[T, G]`` (channel g of the set trained on).
        loss: float32 ``[iterations, G]``: each channel's training loss at every iteration (before its step).
        seconds: wall time of the whole training.
        config: the :class:`OAMPNetOnlineConfig` as a dict.
    """

    gamma: torch.Tensor
    theta: torch.Tensor
    loss: np.ndarray
    seconds: float
    config: dict = field(default_factory=dict)

    @property
    def iterations_per_channel(self) -> float:
        return float(self.loss.shape[0])

    def detector(self) -> OAMPNetOnline:
        return OAMPNetOnline(self.gamma.clone(), self.theta.clone())

    def save(self, path: Union[str, Path]) -> None:
        torch.save({"gamma": self.gamma, "theta": self.theta, "loss": self.loss, "seconds": self.seconds,
                    "config": self.config}, path)

    @staticmethod
    def load(path: Union[str, Path]) -> "OAMPNetOnlineResult":
        d = torch.load(path, weights_only=False)
        return OAMPNetOnlineResult(d["gamma"], d["theta"], d["loss"], d["seconds"], d["config"])


def train_oampnet_online(H: torch.Tensor, cfg: OAMPNetOnlineConfig) -> OAMPNetOnlineResult:
    """Trains OAMPNet's ``gamma``, ``theta`` for each channel of ``H`` (complex64 ``[G, Nr, Nt]``)."""
    cfg.validate()
    if H.dim() != 3 or not H.is_complex() or H.shape[0] == 0:
        raise ValueError(f"H: expected complex [G, Nr, Nt] with G > 0, got {H.dtype} {list(H.shape)}")
    g = H.shape[0]
    step = cfg.parallel or g
    gamma = torch.ones(cfg.layers, g)
    theta = torch.ones(cfg.layers, g)
    losses = np.zeros((cfg.iterations, g), dtype=np.float32)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    try:
        for c0 in range(0, g, step):
            c1 = min(g, c0 + step)
            h = H[c0:c1].contiguous()
            gen = torch.Generator().manual_seed(cfg.seed + 1_000_003 * (c0 // step))
            gm = gamma[:, c0:c1].clone().requires_grad_(True)
            th = theta[:, c0:c1].clone().requires_grad_(True)
            opt = torch.optim.Adam([gm, th], lr=cfg.lr)
            for it in range(cfg.iterations):
                y, sigma2, x = online_batch(h, cfg.modulation, cfg.snr_db, cfg.batch, cfg.snr_groups, gen)
                xs = real_to_complex(oamp_train_forward(h, y, sigma2, gm, th, cfg.modulation))
                per_channel = layer_loss(xs, x, per_channel=True)  # [G']: each channel's own loss term
                losses[it, c0:c1] = per_channel.detach().numpy()
                opt.zero_grad(set_to_none=True)
                per_channel.sum().backward()
                opt.step()
            gamma[:, c0:c1], theta[:, c0:c1] = gm.detach(), th.detach()
    finally:
        torch.set_num_threads(previous_threads)
    return OAMPNetOnlineResult(gamma, theta, losses, time.perf_counter() - t0, asdict(cfg))
