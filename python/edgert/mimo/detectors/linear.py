"""Linear detectors: matched filter, zero forcing, MMSE (shapes in :mod:`.base`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from edgert.mimo.detectors.base import check_inputs, eye_like, gram, matched
from edgert.ops.mmnet import hard_decision


@dataclass
class MatchedFilter:
    """``x = D^-1 H^H y`` with ``D = diag(H^H H)`` (per-user gain normalisation)."""

    name: str = "mf"

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        gain = (H.abs() ** 2).sum(1)  # [G, Nt]
        x = matched(H, y) / gain[:, None, :]
        return x, hard_decision(x, modulation)


@dataclass
class ZeroForcing:
    """``x = (H^H H)^-1 H^H y`` (least squares)."""

    name: str = "zf"

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        x = torch.linalg.solve(gram(H), matched(H, y).transpose(1, 2)).transpose(1, 2)
        return x, hard_decision(x, modulation)


@dataclass
class MMSE:
    """Linear MMSE: ``x = (H^H H + sigma2 I)^-1 H^H y`` (unit-energy symbols).

    ``unbiased`` rescales each stream by the inverse of its MMSE gain before slicing, which is what
    the hard decision of a biased MMSE filter needs for QAM16/64 (its output shrinks towards 0).
    """

    unbiased: bool = True
    name: str = "mmse"

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        nt = H.shape[-1]
        reg = gram(H) + sigma2.to(H.dtype)[:, None, None] * eye_like(nt, H)
        inv = torch.linalg.inv(reg)
        x = matched(H, y) @ inv.transpose(1, 2)
        if self.unbiased:
            gain = torch.diagonal(inv @ gram(H), dim1=1, dim2=2).real  # [G, Nt]
            x = x / gain[:, None, :].to(x.dtype)
        return x, hard_decision(x, modulation)
