"""Per-layer noise analysis of MMNet: is the denoiser told the right noise level?

For each layer t of a trained MMNet (full ``A_t`` and ``theta2_t``), on vectors with known symbols:

* ``linear_mse``: the measured ``E|z_t - x|^2`` per symbol after the linear stage
  ``z_t = x_t + A_t (y - H x_t)`` (what the denoiser sees),
* ``estimated_var``: the mean of the layer's own estimate ``v_t`` (module docstring of
  :mod:`edgert.ops.mmnet`) that the denoiser uses as that variance,
* ``denoiser_mse``: ``E|x_{t+1} - x|^2`` after the denoiser.

A ratio ``estimated_var / linear_mse`` far below 1 means an over-confident denoiser (hard decisions
too early, errors propagate); far above 1 an over-cautious one.
"""
from __future__ import annotations

import torch

from edgert.ops.mmnet import _posterior_axis, qam_levels


def layer_noise(H: torch.Tensor, y: torch.Tensor, x: torch.Tensor, sigma2: torch.Tensor, A: torch.Tensor,
                theta2: torch.Tensor, modulation: int) -> dict[str, list[float]]:
    """Per-layer ``linear_mse``, ``estimated_var`` and ``denoiser_mse`` (lists of T floats), averaged over all
    channels, vectors and users.

    Shapes as :func:`edgert.ops.mmnet_detect`: ``H`` ``[G, Nr, Nt]``, ``y`` ``[G, B, Nr]``, ``x`` (sent symbols)
    ``[G, B, Nt]``, ``sigma2`` ``[G]``, ``A`` ``[T, G, Nt, Nr]``, ``theta2`` ``[T, G, Nt]``.
    """
    if A.dim() != 4 or A.shape[1:] != (H.shape[0], H.shape[2], H.shape[1]):
        raise ValueError(f"A: expected [T, G={H.shape[0]}, Nt={H.shape[2]}, Nr={H.shape[1]}], got {list(A.shape)}")
    if x.shape != y.shape[:-1] + (H.shape[2],):
        raise ValueError(f"x: expected {list(y.shape[:-1]) + [H.shape[2]]}, got {list(x.shape)}")
    levels = qam_levels(modulation, torch.float32, H.device)
    n_rx, n_tx = H.shape[-2], H.shape[-1]
    h_norm = (H.abs() ** 2).sum((-2, -1))
    eye = torch.eye(n_tx, dtype=H.dtype, device=H.device)
    out: dict[str, list[float]] = {"linear_mse": [], "estimated_var": [], "denoiser_mse": []}
    est = torch.zeros_like(x)
    with torch.no_grad():
        for t in range(A.shape[0]):
            a_t = A[t]
            r = y - est @ H.transpose(-1, -2)
            z = est + r @ a_t.transpose(-1, -2)
            ratio_m = ((eye - a_t @ H).abs() ** 2).sum((-2, -1)) / h_norm
            ratio_a = (a_t.abs() ** 2).sum((-2, -1))
            excess = torch.relu((r.abs() ** 2).sum(-1) - n_rx * sigma2[:, None])
            v = theta2[t][:, None, :] / n_tx * (ratio_m[:, None, None] * excess[..., None]
                                                + (ratio_a * sigma2)[:, None, None])
            mean_re, _ = _posterior_axis(z.real, v, levels)
            mean_im, _ = _posterior_axis(z.imag, v, levels)
            est = torch.complex(mean_re, mean_im)
            out["linear_mse"].append(float(((z - x).abs() ** 2).mean()))
            out["estimated_var"].append(float(v.mean()))
            out["denoiser_mse"].append(float(((est - x).abs() ** 2).mean()))
    return out
