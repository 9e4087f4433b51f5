"""Coordinate selection for sparse model updates: Adam over a chosen fraction of the parameters.

AMS (Khani et al.) trains the server's copy of a device's student for ``K`` iterations per phase but
sends only a fraction ``gamma`` of the coordinates. The **gradient-guided** rule picks, for the next
phase, the coordinates whose Adam update was largest in magnitude over the previous phase (the sum of
the per-iteration Adam steps, computed for every coordinate whether or not it was applied); the set is
fixed for the whole phase, the Adam moments are updated for every coordinate, and the first phase uses a
random set. The ablation strategies are ``random`` (a fresh random set each phase), ``first`` and ``last``
(the first / last ``gamma`` of the coordinates in parameter order, i.e. the early / late layers) and
``full`` (every coordinate: full-model updates).

:class:`MaskedAdam` implements Adam (Kingma & Ba, bias-corrected, no weight decay) that applies its step
only where a boolean mask is set and accumulates the unmasked step for the selection rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

STRATEGIES = ("gradient", "random", "first", "last", "full")


@dataclass
class SelectionConfig:
    """Which coordinates a phase may change.

    Attributes:
        strategy: ``gradient`` (AMS), ``random``, ``first``, ``last`` or ``full``.
        fraction: gamma, the fraction of all coordinates updated per phase (paper: 5 %); ignored by ``full``.
        seed: seeds the random sets (first gradient-guided phase, every ``random`` phase).
    """

    strategy: str = "gradient"
    fraction: float = 0.05
    seed: int = 0

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {STRATEGIES}, got {self.strategy!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction: expected 0 < gamma <= 1, got {self.fraction}")


@dataclass
class AdamConfig:
    """Adam hyper-parameters (the paper trains with Adam, learning rate 1e-3)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def validate(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1):
            raise ValueError(f"betas: expected each in [0, 1), got {self.betas}")
        if not self.eps > 0:
            raise ValueError(f"eps: expected > 0, got {self.eps}")


class MaskedAdam:
    """Adam whose step is applied only on masked coordinates; moments are updated everywhere.

    Args:
        params: the parameters to train (their order defines the flat coordinate order).
        config: Adam hyper-parameters.

    ``masks`` (one bool tensor per parameter, same shape) selects what :meth:`step` writes; ``None``
    applies everywhere. :attr:`accumulated` holds, per parameter, the sum of the full (unmasked) Adam
    steps since the last :meth:`reset_accumulator`: the quantity the gradient-guided rule ranks.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], config: Optional[AdamConfig] = None) -> None:
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("MaskedAdam: no parameters to train")
        self.config = config or AdamConfig()
        self.config.validate()
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.accumulated = [torch.zeros_like(p) for p in self.params]
        self.steps = 0
        self.masks: Optional[list[torch.Tensor]] = None

    def set_masks(self, masks: Optional[Sequence[torch.Tensor]]) -> None:
        """Fix the coordinates the following steps may change (``None``: all)."""
        if masks is not None:
            if len(masks) != len(self.params):
                raise ValueError(f"masks: expected {len(self.params)} tensors, got {len(masks)}")
            for i, (m, p) in enumerate(zip(masks, self.params)):
                if m.shape != p.shape or m.dtype != torch.bool:
                    raise ValueError(f"mask {i}: expected bool {list(p.shape)}, got {m.dtype} {list(m.shape)}")
            masks = [m.to(p.device) for m, p in zip(masks, self.params)]
        self.masks = None if masks is None else list(masks)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drops the gradients (``torch.optim.Optimizer`` signature; they are always set to None)."""
        for p in self.params:
            p.grad = None

    def reset_accumulator(self) -> None:
        for a in self.accumulated:
            a.zero_()

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state (step count, moments, accumulator, masks) as CPU tensor copies: what another
        process needs to continue exactly where this one is (see :meth:`load_state_dict`)."""
        def copies(ts: Optional[Sequence[torch.Tensor]]) -> Optional[list[torch.Tensor]]:
            return None if ts is None else [t.detach().cpu().clone() for t in ts]

        return {"steps": self.steps, "exp_avg": copies(self.exp_avg), "exp_avg_sq": copies(self.exp_avg_sq),
                "accumulated": copies(self.accumulated), "masks": copies(self.masks)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Takes a :meth:`state_dict` (of an optimizer over parameters of the same shapes), copying the values
        into this optimizer's tensors.

        Raises:
            ValueError: the tensor counts or shapes differ from this optimizer's parameters; nothing changed.
        """
        for key in ("exp_avg", "exp_avg_sq", "accumulated"):
            ts = state[key]
            if len(ts) != len(self.params) or any(t.shape != p.shape for t, p in zip(ts, self.params)):
                raise ValueError(f"load_state_dict: {key} does not match the optimizer's {len(self.params)} "
                                 f"parameters")
        self.set_masks(state["masks"])
        with torch.no_grad():
            for key in ("exp_avg", "exp_avg_sq", "accumulated"):
                for mine, theirs in zip(getattr(self, key), state[key]):
                    mine.copy_(theirs)
        self.steps = int(state["steps"])

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step from the parameters' ``.grad`` (a missing grad counts as zero)."""
        b1, b2 = self.config.betas
        self.steps += 1
        c1 = 1 - b1 ** self.steps
        c2 = 1 - b2 ** self.steps
        for i, p in enumerate(self.params):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            self.exp_avg[i].mul_(b1).add_(g, alpha=1 - b1)
            self.exp_avg_sq[i].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.exp_avg_sq[i] / c2).sqrt_().add_(self.config.eps)
            update = (self.exp_avg[i] / c1).div_(denom).mul_(-self.config.lr)
            self.accumulated[i].add_(update)
            if self.masks is None:
                p.add_(update)
            else:
                p.add_(update * self.masks[i])


class CoordinateSelector:
    """Chooses each phase's coordinate set for a list of parameter shapes.

    Call :meth:`next_masks` at the start of a phase; for ``gradient`` pass the optimizer's accumulated
    Adam steps from the previous phase (``None`` in the first phase: a random set).
    """

    def __init__(self, shapes: Sequence[Sequence[int]], config: Optional[SelectionConfig] = None) -> None:
        self.config = config or SelectionConfig()
        self.config.validate()
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.sizes = [int(np.prod(s)) if len(s) else 1 for s in self.shapes]
        self.total = int(sum(self.sizes))
        if self.total == 0:
            raise ValueError("CoordinateSelector: the model has no coordinates")
        self.count = (self.total if self.config.strategy == "full"
                      else max(1, int(round(self.config.fraction * self.total))))
        self._rng = np.random.default_rng(self.config.seed)
        self.phase = 0

    def _split(self, flat: np.ndarray) -> list[torch.Tensor]:
        out, pos = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(torch.from_numpy(flat[pos:pos + size].reshape(shape).copy()))
            pos += size
        return out

    def _from_indices(self, idx: np.ndarray) -> list[torch.Tensor]:
        flat = np.zeros(self.total, dtype=bool)
        flat[idx] = True
        return self._split(flat)

    def next_masks(self, accumulated: Optional[Sequence[torch.Tensor]] = None) -> list[torch.Tensor]:
        """Bool masks (one per parameter) holding exactly :attr:`count` set coordinates."""
        strategy = self.config.strategy
        self.phase += 1
        if strategy == "full":
            return self._split(np.ones(self.total, dtype=bool))
        if strategy == "first":
            return self._from_indices(np.arange(self.count))
        if strategy == "last":
            return self._from_indices(np.arange(self.total - self.count, self.total))
        if strategy == "random" or accumulated is None:
            return self._from_indices(self._rng.choice(self.total, self.count, replace=False))
        if len(accumulated) != len(self.shapes):
            raise ValueError(f"accumulated: expected {len(self.shapes)} tensors, got {len(accumulated)}")
        if sum(a.numel() for a in accumulated) != self.total:
            raise ValueError(f"accumulated: expected {self.total} coordinates, "
                             f"got {sum(a.numel() for a in accumulated)}")
        return top_count_masks(accumulated, self.count)


def top_count_masks(scores: Sequence[torch.Tensor], count: int) -> list[torch.Tensor]:
    """Bool masks (shapes of ``scores``) selecting the ``count`` coordinates with the largest ``|score|``
    over all tensors together: the gradient-guided rule shared by AMS (score: the previous phase's Adam
    steps) and SRVC (score: the change of one full training pass).

    Ties are broken by torch.topk, deterministically for equal inputs on one machine; the chosen set
    travels in the update packet, so encoder and device never need to agree on it independently.
    """
    flat_scores = torch.cat([a.detach().abs().reshape(-1).float().cpu() for a in scores])
    if not 0 < count <= flat_scores.numel():
        raise ValueError(f"count: expected 1..{flat_scores.numel()}, got {count}")
    order = torch.topk(flat_scores, count, sorted=False).indices
    flat = torch.zeros(flat_scores.numel(), dtype=torch.bool)
    flat[order] = True
    masks, pos = [], 0
    for a in scores:
        masks.append(flat[pos:pos + a.numel()].reshape(a.shape))
        pos += a.numel()
    return masks


def masked_indices(mask: torch.Tensor) -> np.ndarray:
    """Strictly increasing flat indices where ``mask`` is set (row-major), as int64."""
    return np.flatnonzero(mask.reshape(-1).cpu().numpy()).astype(np.int64)
