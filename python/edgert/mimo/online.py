"""Online training of MMNet per channel with time/frequency warm starts (Algorithm 1 of Khani et al.).

For a channel sequence ``H[k, f]`` (time step k, subcarrier f):

* ``(k=0, f=0)``: ``psi`` Adam iterations from :func:`~edgert.mimo.detectors.mmnet.init_mmnet_params`;
* ``(k>0, f=0)``: start from the model of ``(k-1, 0)`` and train ``psi_time`` iterations;
* ``(k, f>0)``: start from the model of ``(k, f-1)`` and train ``phi`` iterations.

That is ``order="paper"`` (the default). ``order="time"`` amortizes over time instead, for channels
whose subcarriers are too far apart to share a model (UMa NLOS, see ``docs/results/mimo.md``):

* ``(0, f)`` for every f: ``psi`` iterations from :func:`~edgert.mimo.detectors.mmnet.init_mmnet_params`
  of that channel (no frequency warm start);
* ``(k>0, f)``: start from the model of ``(k-1, f)`` (the same subcarrier one time step earlier, with its
  Adam moments) and train ``phi_time`` iterations.

Each subcarrier is then an independent chain over time, so all of them are trained side by side.

Each iteration: batch of ``batch`` vectors (split into ``snr_groups`` groups, one SNR each, uniform
in ``snr_db``), loss = mean over layers of ``||x_hat_t - x||^2``, Adam with ``lr`` (its moments carry
over between subcarriers). Independent sequences (drops, user groups) are trained side by side in one
batched graph: each has its own parameters and its own loss term, so this equals training them one by
one. Training runs :func:`edgert.ops.mmnet.mmnet_train_loss` (the forward of
:func:`edgert.ops.mmnet.mmnet_train_forward`, the math of :func:`edgert.ops.mmnet_detect_reference`
real-valued with a fused denoiser backward, and this loss fused in on the CPU) under autograd.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from edgert.mimo.channels import check_modulation, noise_variance
from edgert.mimo.detectors.mmnet import MMNet, RegularisedBasis, init_mmnet_params
from edgert.mimo.training import online_batch
from edgert.ops.mmnet import mmnet_train_loss

#: lower bound on the trained per-symbol noise scales theta2 (projected after every Adam step)
THETA2_FLOOR: float = 1e-3

#: ``copy``: the paper's warm start (the neighbour's A_t as is); ``channel``: :func:`channel_transfer`;
#: ``restart``: A_t from :func:`init_mmnet_params` of the new channel, theta2 and Adam moments carried over.
WARM_STARTS: tuple[str, ...] = ("copy", "channel", "restart")

#: MMNet's linear stage ``z_t = x_t + A_t (y - H x_t)``: ``free``: every ``A_t`` a free complex matrix from the
#: matched filter (the paper); ``regularised``: ``A_t = alpha_t (H^H H + lam_t I)^-1 H^H`` with two learned
#: scalars per layer and channel (:meth:`RegularisedBasis.operators`); ``corrected``: that operator plus a
#: free complex correction ``D_t`` (starts at 0, trained at ``lr``).
LINEAR_STAGES: tuple[str, ...] = ("free", "regularised", "corrected")

#: ``paper``: Algorithm 1's order (frequency chain per time step, first subcarrier chained over time);
#: ``time``: every subcarrier chained over time only (see the module docstring).
ORDERS: tuple[str, ...] = ("paper", "time")


def channel_transfer(A: torch.Tensor, H_old: torch.Tensor, H_new: torch.Tensor, delta: float) -> torch.Tensor:
    """Moves trained operators ``A`` ``[T, S, Nt, Nr]`` from channels ``H_old`` to ``H_new`` ``[S, Nr, Nt]``.

    Writes each ``A_t = C_t W(H_old)`` with the regularised inverse ``W(H) = (H^H H + delta I)^-1 H^H``
    (``C_t = A_t H_old (I + delta G_old^-1)``, exact for ``A_t`` in the row space of ``H_old^H``, where an
    optimal ``A_t`` lies: a component outside it only adds noise) and returns ``C_t W(H_new)``. What is
    kept is the learned effective operator ``A_t H`` (interference left per layer), not the raw matrix:
    neighbouring 78 kHz subcarriers differ by ~27% in ``H``, and on channels with condition numbers ~50
    a copied ``A_t`` is far from ``H_new``'s inverse. ``delta`` (in units of ``|h_ij|^2``) bounds the
    amplification along weak eigen-directions. Computed in complex128.
    """
    c = torch.complex128
    A, Ho, Hn = A.to(c), H_old.to(c), H_new.to(c)
    eye = torch.eye(Ho.shape[-1], dtype=c)
    g_old = Ho.mH @ Ho
    g_new = Hn.mH @ Hn
    C = (A @ Ho.unsqueeze(0)) @ torch.linalg.solve(g_old, g_old + delta * eye).unsqueeze(0)
    return (C @ torch.linalg.solve(g_new + delta * eye, Hn.mH).unsqueeze(0)).to(torch.complex64)


@dataclass
class OnlineConfig:
    """Algorithm 1 hyper-parameters; defaults are the paper's (Psi=1000, Phi in 3..10, batch 500, lr 1e-3).

    ``warm_start`` ``"copy"`` starts each channel from its neighbour's parameters (the paper);
    ``"channel"`` moves them with :func:`channel_transfer` (``transfer_delta``) first; ``"restart"``
    starts A_t afresh from :func:`init_mmnet_params` (for neighbours too far apart to share A_t).
    theta2 and the Adam moments carry over in all three. The warm start applies to whichever neighbour
    ``order`` names: ``"paper"`` (default) uses ``psi`` / ``phi`` / ``psi_time`` as in Algorithm 1;
    ``"time"`` uses ``psi`` for every subcarrier of the first time step and ``phi_time`` for every later
    channel, started from the same subcarrier's model one time step earlier (``phi`` and ``psi_time``
    are then unused). ``parallel`` bounds how many independent chains share one batched graph (memory:
    ~12 MB per chain at batch 500, Nr 64, Nt 16, 10 layers); 0 = all. ``lr_time`` (``"time"`` only) is
    Adam's step size from the second time step on (None: ``lr``).

    ``linear_stage`` (:data:`LINEAR_STAGES`): ``"free"`` (default) learns each ``A_t`` as a full matrix;
    ``"regularised"`` / ``"corrected"`` keep an explicit regularised inverse of the channel at hand, with
    ``alpha_t = 1`` and ``lam_t`` = the noise variance at the middle of ``snr_db`` (the LMMSE filter) at the
    start, ``alpha``, ``log lam`` and ``theta2`` trained at ``lr_scalars``. Those scalars carry over to the
    next channel of a chain while the inverse is recomputed for it, so they need ``warm_start="copy"``.
    There ``lr_time`` replaces ``lr_scalars`` (the step of ``alpha``, ``log lam``, ``theta2``) from the second
    time step on, while ``D_t`` keeps ``lr``.
    """

    modulation: int = 16
    snr_db: tuple[float, float] = (10.0, 20.0)
    layers: int = 10
    psi: int = 1000
    psi_time: int = 1000
    phi: int = 5
    batch: int = 500
    snr_groups: int = 10
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1
    warm_start: str = "copy"
    transfer_delta: float = 0.5
    order: str = "paper"
    phi_time: int = 3
    parallel: int = 0
    lr_time: Optional[float] = None
    linear_stage: str = "free"
    lr_scalars: float = 0.02

    def validate(self) -> None:
        check_modulation(self.modulation)
        if self.linear_stage not in LINEAR_STAGES:
            raise ValueError(f"linear_stage: expected one of {LINEAR_STAGES}, got {self.linear_stage!r}")
        if self.linear_stage != "free" and self.warm_start != "copy":
            raise ValueError(f"linear_stage {self.linear_stage!r} carries its scalars to the next channel and "
                             f"recomputes the inverse there: expected warm_start 'copy', got {self.warm_start!r}")
        if not (math.isfinite(self.lr_scalars) and self.lr_scalars > 0):
            raise ValueError(f"lr_scalars: expected a finite value > 0, got {self.lr_scalars!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order: expected one of {ORDERS}, got {self.order!r}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start: expected one of {WARM_STARTS}, got {self.warm_start!r}")
        if self.lr_time is not None and not (math.isfinite(self.lr_time) and self.lr_time > 0):
            raise ValueError(f"lr_time: expected None or a finite value > 0, got {self.lr_time!r}")
        if not self.transfer_delta > 0:
            raise ValueError(f"transfer_delta: expected > 0, got {self.transfer_delta}")
        lo, hi = self.snr_db
        if not (-20.0 <= lo <= hi <= 60.0):
            raise ValueError(f"snr_db: expected -20 <= lo <= hi <= 60 dB, got {self.snr_db}")
        for name in ("layers", "batch", "snr_groups"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        for name in ("psi", "psi_time", "phi", "phi_time", "parallel"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name}: expected an integer, got {v!r}")
            if v < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.batch % self.snr_groups:
            raise ValueError(f"batch ({self.batch}) must be a multiple of snr_groups ({self.snr_groups})")


@dataclass
class OnlineResult:
    """Trained per-channel MMNet models and what the training cost.

    Attributes:
        A: complex64 ``[K, F, T, S, Nt, Nr]`` (time steps, subcarriers, layers, sequences).
        theta2: float32 ``[K, F, T, S, Nt]``.
        iterations: int ``[K, F]`` Adam iterations spent on each channel.
        final_loss: float ``[K, F]`` training loss at the last iteration for that channel (sum over S / S).
        seconds: wall time of the whole training.
    """

    A: torch.Tensor
    theta2: torch.Tensor
    iterations: np.ndarray
    final_loss: np.ndarray
    seconds: float
    config: dict = field(default_factory=dict)

    @property
    def iterations_per_channel(self) -> float:
        """Average Adam iterations per channel realization (the paper's amortized training cost)."""
        return float(self.iterations.mean())

    def detector(self) -> MMNet:
        """An :class:`MMNet` whose channel index follows ``[S, K, F]`` flattened (as ``ChannelSet.flat()``
        orders ``[drop, time, subcarrier]``)."""
        k, f, t, s, nt, nr = self.A.shape
        A = self.A.permute(2, 3, 0, 1, 4, 5).reshape(t, s * k * f, nt, nr).contiguous()
        th = self.theta2.permute(2, 3, 0, 1, 4).reshape(t, s * k * f, nt).contiguous()
        return MMNet(A, th)

    def save(self, path: Union[str, Path]) -> None:
        torch.save({"A": self.A, "theta2": self.theta2, "iterations": self.iterations,
                    "final_loss": self.final_loss, "seconds": self.seconds, "config": self.config}, path)

    @staticmethod
    def load(path: Union[str, Path]) -> "OnlineResult":
        d = torch.load(path, weights_only=False)
        return OnlineResult(d["A"], d["theta2"], d["iterations"], d["final_loss"], d["seconds"], d["config"])


class _Trainer:
    """Adam on per-sequence MMNet parameters for a batch of S channels (one per sequence).

    ``linear_stage="free"``: ``A`` is optimised through its real view ``[T, S, Nt, Nr, 2]`` (what
    ``torch.optim.Adam`` does for a complex parameter internally, so the updates are the same).
    ``"regularised"`` / ``"corrected"``: ``A_t = alpha_t W(lam_t) (+ D_t)`` is rebuilt from the scalars
    (:meth:`RegularisedBasis.operators`) for the channels of every :meth:`train` call. The forward pass and
    the loss are :func:`edgert.ops.mmnet.mmnet_train_loss` (the reference's math without complex autograd).
    """

    def __init__(self, A: torch.Tensor, theta2: torch.Tensor, cfg: OnlineConfig, gen: torch.Generator):
        self.cfg = cfg
        self.gen = gen
        self.theta2 = theta2.clone().float().requires_grad_(True)
        self.basis: Optional[RegularisedBasis] = None
        if cfg.linear_stage == "free":
            self.A_ri = torch.view_as_real(A.to(torch.complex64)).clone().requires_grad_(True)
            self.opt = torch.optim.Adam([self.A_ri, self.theta2], lr=cfg.lr)
            return
        t, s = A.shape[:2]
        lam0 = float(noise_variance(0.5 * (cfg.snr_db[0] + cfg.snr_db[1]), A.shape[2]))
        self.alpha = torch.ones(t, s, requires_grad=True)
        self.log_lam = torch.full((t, s), math.log(lam0), requires_grad=True)
        groups = [{"params": [self.alpha, self.log_lam, self.theta2], "lr": cfg.lr_scalars}]
        if cfg.linear_stage == "corrected":
            self.A_ri = torch.zeros(torch.view_as_real(A.to(torch.complex64)).shape, requires_grad=True)
            groups.append({"params": [self.A_ri], "lr": cfg.lr})
        self.opt = torch.optim.Adam(groups, lr=cfg.lr)

    def operators(self) -> torch.Tensor:
        """The current ``A`` as the float32 real view ``[T, S, Nt, Nr, 2]`` (differentiable)."""
        if self.cfg.linear_stage == "free":
            return self.A_ri
        if self.basis is None:
            raise RuntimeError("regularised linear stage: no channel yet (call train() first)")
        A_ri = torch.view_as_real(self.basis.operators(self.alpha, self.log_lam))
        return A_ri + self.A_ri if self.cfg.linear_stage == "corrected" else A_ri

    def step(self, H: torch.Tensor) -> float:
        """One iteration on channels ``H`` ``[S, Nr, Nt]``; returns the mean over sequences of the loss."""
        cfg = self.cfg
        s = H.shape[0]
        y, sigma2, x = online_batch(H, cfg.modulation, cfg.snr_db, cfg.batch, cfg.snr_groups, self.gen)
        target = torch.stack([x.real, x.imag], -2)  # [S, B, 2, Nt]
        per_seq = mmnet_train_loss(H, y, sigma2, self.operators(), self.theta2, target, cfg.modulation)  # [S]
        self.last_per_sequence = per_seq.detach()
        loss = per_seq.sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            # projected step: a noise scale <= 0 clamps v at the denoiser's floor, where the gradient is
            # 0 and the symbol can never recover (seen on QAM4 warm-start chains)
            self.theta2.clamp_(min=THETA2_FLOOR)
        return float(loss.detach()) / s

    def train(self, H: torch.Tensor, iterations: int) -> float:
        """``iterations`` steps on channels ``H`` ``[S, Nr, Nt]`` (which :attr:`A` then refers to)."""
        if self.cfg.linear_stage != "free":
            self.basis = RegularisedBasis.of(H)
        last = float("nan")
        for _ in range(iterations):
            last = self.step(H)
        return last

    @property
    def A(self) -> torch.Tensor:
        return torch.view_as_complex(self.operators().detach().contiguous())

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A.clone(), self.theta2.detach().clone()

    def state(self) -> list[torch.Tensor]:
        """Copies of the trained parameters (not Adam's moments), for :meth:`restore`."""
        return [p.detach().clone() for group in self.opt.param_groups for p in group["params"]]

    def restore(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, v in zip([p for group in self.opt.param_groups for p in group["params"]], state):
                p.copy_(v)

    def load(self, A: torch.Tensor, theta2: torch.Tensor) -> None:
        if self.cfg.linear_stage != "free":
            raise ValueError("a regularised linear stage is defined by its scalars: load() takes a free A_t")
        with torch.no_grad():
            self.A_ri.copy_(torch.view_as_real(A.to(torch.complex64)))
            self.theta2.copy_(theta2)


def train_online(H: torch.Tensor, cfg: OnlineConfig) -> OnlineResult:
    """Runs Algorithm 1 on channel sequences.

    Args:
        H: complex64 ``[S, K, F, Nr, Nt]`` (sequences, time steps, subcarriers) or ``[S, F, Nr, Nt]``
            (one time step).
        cfg: hyper-parameters.

    Returns:
        The per-(time, subcarrier) models and the iterations spent on each channel.
    """
    cfg.validate()
    if H.dim() == 4:
        H = H.unsqueeze(1)
    if H.dim() != 5 or not H.is_complex():
        raise ValueError(f"H: expected complex [S, K, F, Nr, Nt] or [S, F, Nr, Nt], got {H.dtype} {list(H.shape)}")
    s, k, f, nr, nt = H.shape
    if cfg.order == "time":
        return _train_time_order(H, cfg)
    torch.manual_seed(cfg.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    A0, th0 = init_mmnet_params(H[:, 0, 0].contiguous(), cfg.layers)
    trainer = _Trainer(A0, th0, cfg, gen)
    A_out = torch.empty(k, f, cfg.layers, s, nt, nr, dtype=torch.complex64)
    th_out = torch.empty(k, f, cfg.layers, s, nt)
    iters = np.zeros((k, f), dtype=np.int64)
    losses = np.zeros((k, f))
    first_state: list[torch.Tensor] = []
    t0 = time.perf_counter()
    try:
        for ki in range(k):
            for fi in range(f):
                if fi == 0 and ki > 0:
                    trainer.restore(first_state)
                if ki > 0 or fi > 0:
                    _warm_start(trainer, cfg, H[:, ki, fi - 1] if fi > 0 else H[:, ki - 1, 0], H[:, ki, fi])
                n = cfg.psi if (ki == 0 and fi == 0) else (cfg.psi_time if fi == 0 else cfg.phi)
                losses[ki, fi] = trainer.train(H[:, ki, fi].contiguous(), n)
                iters[ki, fi] = n
                A_out[ki, fi], th_out[ki, fi] = trainer.snapshot()
                if fi == 0:
                    first_state = trainer.state()
    finally:
        torch.set_num_threads(previous_threads)
    return OnlineResult(A_out, th_out, iters, losses, time.perf_counter() - t0, asdict(cfg))


def _warm_start(trainer: "_Trainer", cfg: OnlineConfig, H_old: torch.Tensor, H_new: torch.Tensor) -> None:
    """Applies ``cfg.warm_start`` to the trainer's parameters when moving from ``H_old`` to ``H_new`` (copy: no-op)."""
    if cfg.warm_start == "channel":
        trainer.load(channel_transfer(trainer.A, H_old, H_new, cfg.transfer_delta), trainer.theta2.detach())
    elif cfg.warm_start == "restart":
        trainer.load(init_mmnet_params(H_new.contiguous(), cfg.layers)[0], trainer.theta2.detach())


def _train_time_order(H: torch.Tensor, cfg: OnlineConfig) -> OnlineResult:
    """``order="time"``: S x F independent chains over K time steps, ``parallel`` chains per batched graph."""
    s, k, f, nr, nt = H.shape
    chains = H.permute(0, 2, 1, 3, 4).reshape(s * f, k, nr, nt)  # chain c = (s, f) at c = s * F + f
    n = s * f
    step = cfg.parallel or n
    torch.manual_seed(cfg.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    A_out = torch.empty(k, cfg.layers, n, nt, nr, dtype=torch.complex64)
    th_out = torch.empty(k, cfg.layers, n, nt)
    loss_chain = np.full((k, n), np.nan)
    t0 = time.perf_counter()
    try:
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            gen = torch.Generator().manual_seed(cfg.seed + 1_000_003 * (c0 // step))
            A0, th0 = init_mmnet_params(chains[c0:c1, 0].contiguous(), cfg.layers)
            trainer = _Trainer(A0, th0, cfg, gen)
            for ki in range(k):
                h = chains[c0:c1, ki].contiguous()
                if ki > 0:
                    _warm_start(trainer, cfg, chains[c0:c1, ki - 1], h)
                if ki == 1 and cfg.lr_time is not None:
                    # group 0: A_t and theta2 ("free"), or the scalars and theta2 (not D_t) otherwise
                    trainer.opt.param_groups[0]["lr"] = cfg.lr_time
                iterations = cfg.psi if ki == 0 else cfg.phi_time
                trainer.train(h, iterations)
                if iterations:
                    loss_chain[ki, c0:c1] = trainer.last_per_sequence.numpy()
                A_out[ki, :, c0:c1], th_out[ki, :, c0:c1] = trainer.snapshot()
    finally:
        torch.set_num_threads(previous_threads)
    # [K, T, S*F, ...] -> [K, F, T, S, ...]
    A_out = A_out.reshape(k, cfg.layers, s, f, nt, nr).permute(0, 3, 1, 2, 4, 5).contiguous()
    th_out = th_out.reshape(k, cfg.layers, s, f, nt).permute(0, 3, 1, 2, 4).contiguous()
    iters = np.full((k, f), cfg.phi_time, dtype=np.int64)
    iters[0] = cfg.psi
    losses = loss_chain.reshape(k, s, f).mean(axis=1)  # NaN where a channel got 0 iterations
    return OnlineResult(A_out, th_out, iters, losses, time.perf_counter() - t0, asdict(cfg))


def iterations_to_loss(H: torch.Tensor, cfg: OnlineConfig, target: float, max_iterations: int,
                       start: Optional[tuple[torch.Tensor, torch.Tensor]] = None, window: int = 5) -> int:
    """Iterations until the running mean (``window``) of the training loss on channels ``H`` ``[S, Nr, Nt]``
    is <= ``target``, from ``start`` (A, theta2) or from the default init; ``max_iterations`` if never."""
    cfg.validate()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    A0, th0 = start if start is not None else init_mmnet_params(H, cfg.layers)
    trainer = _Trainer(A0, th0, cfg, gen)
    recent: list[float] = []
    for it in range(1, max_iterations + 1):
        recent.append(trainer.step(H))
        recent = recent[-window:]
        if len(recent) == window and sum(recent) / window <= target:
            return it
    return max_iterations
