"""The common detector interface and shared linear algebra.

Every detector is a callable ``det(H, y, sigma2, modulation) -> (x_soft, indices)``:

* ``H``: complex64 ``[G, Nr, Nt]`` channels (perfect or estimated CSI).
* ``y``: complex64 ``[G, B, Nr]``, B received vectors per channel (``y = H x + n``).
* ``sigma2``: float32 ``[G]`` noise variance per receive antenna (``n ~ CN(0, sigma2 I)``).
* ``modulation``: QAM order (4, 16, 64), unit-energy constellation of :mod:`edgert.ops`.
* returns ``x_soft`` complex64 ``[G, B, Nt]`` (the detector's soft or final estimate) and
  ``indices`` int64 ``[G, B, Nt]`` hard decisions (constellation indices of :mod:`edgert.ops`).
"""
from __future__ import annotations

from typing import Protocol

import torch

from edgert.mimo.channels import check_modulation


class Detector(Protocol):
    """What every detector implements (see module docstring for shapes)."""

    name: str

    def __call__(self, H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor,
                 modulation: int) -> tuple[torch.Tensor, torch.Tensor]:
        ...


def check_inputs(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, modulation: int) -> None:
    """Raises ValueError naming the first argument that does not fit the detector interface."""
    check_modulation(modulation)
    if H.dim() != 3 or not H.is_complex():
        raise ValueError(f"H: expected complex [G, Nr, Nt], got {H.dtype} {list(H.shape)}")
    g, nr, nt = H.shape
    if y.dim() != 3 or y.shape[0] != g or y.shape[2] != nr or not y.is_complex():
        raise ValueError(f"y: expected complex [G={g}, B, Nr={nr}], got {y.dtype} {list(y.shape)}")
    if sigma2.shape != (g,):
        raise ValueError(f"sigma2: expected [G={g}], got {list(sigma2.shape)}")


def gram(H: torch.Tensor) -> torch.Tensor:
    """``H^H H``: ``[G, Nt, Nt]``."""
    return H.mH @ H


def matched(H: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``H^H y`` for every vector: ``[G, B, Nt]``."""
    return y @ H.conj()


def eye_like(n: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=ref.dtype, device=ref.device)
