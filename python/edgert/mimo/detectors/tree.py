"""Successive-cancellation and tree-search detectors: V-BLAST, K-Best, sphere decoder (exact ML).

Shapes follow :mod:`.base`. The tree searches work on a QR decomposition ``H P = Q R`` (``P`` a
column permutation sorting users by ascending column norm so the strongest user is at the root),
``ybar = Q^H y``: ``||y - Hx||^2 = ||ybar - R P^T x||^2 + const``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from edgert.mimo.detectors.base import check_inputs, eye_like
from edgert.ops.mmnet import hard_decision, indices_to_symbols, qam_constellation, qam_levels


@dataclass
class VBLAST:
    """Ordered successive interference cancellation with MMSE nulling (V-BLAST, Wolniansky et al. 1998).

    At each of Nt steps: MMSE filter over the users not yet detected, detect the one with the smallest
    MMSE error variance (largest SINR), slice it (unbiased), subtract its contribution from ``y``.
    """

    name: str = "vblast"

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        g, nr, nt = H.shape
        active = torch.ones(g, nt, dtype=torch.bool)
        yr = y.clone()
        x = torch.zeros(g, y.shape[1], nt, dtype=H.dtype)
        idx = torch.zeros(g, y.shape[1], nt, dtype=torch.long)
        eye = eye_like(nt, H)
        rows = torch.arange(g)
        for _ in range(nt):
            Hk = H * active[:, None, :].to(H.dtype)
            P = torch.linalg.inv(Hk.mH @ Hk + sigma2.to(H.dtype)[:, None, None] * eye)
            err = torch.diagonal(P, dim1=1, dim2=2).real.masked_fill(~active, math.inf)
            k = err.argmin(1)  # [G]
            w = (P[rows, k][:, :, None] * Hk.mH).sum(1)  # row k of P Hk^H: [G, Nr]
            hk = H[rows, :, k]  # [G, Nr]
            gain = (w * hk).sum(-1)  # [G]
            est = (yr @ w[:, :, None])[..., 0] / gain[:, None]  # [G, B]
            d = hard_decision(est, modulation)
            s = indices_to_symbols(d, modulation).to(H.dtype)
            x[rows, :, k] = est
            idx[rows, :, k] = d.to(idx.dtype)
            yr = yr - s[..., None] * hk[:, None, :]
            active[rows, k] = False
        return x, idx


def sorted_qr(H: torch.Tensor, descending: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``H[:, :, perm] = Q R`` with columns by ascending norm (``descending``: by descending norm).

    Returns Q [G,Nr,Nt], R [G,Nt,Nt], perm [G,Nt]. A tree search over ``R`` starts from the last column, so the
    ascending order detects the strongest user first.
    """
    perm = (H.abs() ** 2).sum(1).argsort(dim=1, descending=descending)
    Hp = torch.gather(H, 2, perm[:, None, :].expand(H.shape))
    Q, R = torch.linalg.qr(Hp)
    return Q, R, perm


@dataclass
class KBest:
    """K-Best breadth-first tree search (complex domain, sorted QR), keeping the K best partial paths.

    Per level from the root: every survivor is extended by all M symbols, partial Euclidean distances
    ``|ybar_i - sum_j>=i R_ij x_j|^2`` are accumulated and the K smallest kept. Exact ML when
    ``K >= M^(Nt-1)``; close to ML on well-conditioned channels for moderate K.

    ``order``: ``"strongest_first"`` (default) sorts the columns so that the root of the tree is the user with
    the largest channel norm, the most reliable first decision; ``"weakest_first"`` is Sionna's
    ``KBestDetector`` order (columns by descending norm, so the weakest user is the root). The two are the
    same algorithm otherwise (they agree on > 99.99 % of decisions in ``tests/test_mimo_detectors.py``), but on
    UMa NLOS 64x16 QAM16 at 24 dB, K = 32, strongest-first makes ~14x fewer errors (9.0e-4 vs 1.26e-2 SER):
    a wrong root decision cannot be undone by the K survivors.
    """

    k: int = 32
    order: str = "strongest_first"
    name: str = "kbest"

    def __post_init__(self) -> None:
        if self.order not in ("strongest_first", "weakest_first"):
            raise ValueError(f"order: expected 'strongest_first' or 'weakest_first', got {self.order!r}")
        if self.k < 1:
            raise ValueError(f"k: expected >= 1, got {self.k}")

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        g, nr, nt = H.shape
        b = y.shape[1]
        Q, R, perm = sorted_qr(H, descending=self.order == "weakest_first")
        yb = y @ Q.conj()  # [G, B, Nt] = (Q^H y)^T
        const = qam_constellation(modulation).to(H.dtype)  # [M]
        m = const.numel()
        paths = torch.zeros(g, b, 1, nt, dtype=torch.long)
        metric = torch.zeros(g, b, 1, dtype=yb.real.dtype)
        for i in range(nt - 1, -1, -1):
            sym = const[paths[..., i + 1:]]  # [G, B, K, nt-i-1]
            interf = (sym * R[:, None, None, i, i + 1:]).sum(-1)  # [G, B, K]
            resid = yb[:, :, None, i] - interf  # [G, B, K]
            child = metric[..., None] + (resid[..., None] - R[:, None, None, i, i, None] * const).abs() ** 2
            kk = paths.shape[2]
            flat = child.reshape(g, b, kk * m)
            keep = min(self.k, kk * m)
            metric, best = flat.topk(keep, dim=-1, largest=False)
            parent = torch.div(best, m, rounding_mode="floor")
            paths = torch.gather(paths, 2, parent[..., None].expand(g, b, keep, nt)).clone()
            paths[..., i] = best % m
        sel = paths[:, :, 0, :]  # best path (topk is sorted)
        idx = torch.empty_like(sel)
        idx.scatter_(2, perm[:, None, :].expand(g, b, nt), sel)
        x = indices_to_symbols(idx, modulation).to(H.dtype)
        return x, idx


@dataclass
class SphereStats:
    """What the sphere decoder did: vectors decoded, nodes visited, vectors that fell back to K-Best."""

    vectors: int = 0
    nodes: int = 0
    fallbacks: int = 0


@dataclass
class SphereDecoder:
    """Exact ML detection by depth-first sphere decoding with Schnorr-Euchner enumeration.

    Real-valued model (``2Nt`` PAM levels), sorted QR; children of a node are visited in order of
    distance to the node's centre and the radius shrinks to each leaf found, so the first leaf is the
    Babai (ZF-SIC) point and the search ends with the exact ML solution. If a vector needs more than
    ``node_budget`` visited nodes, the search stops and the vector is decoded by K-Best with
    ``fallback_k`` survivors instead; ``stats.fallbacks`` counts those vectors (report it: results
    with fallbacks are not guaranteed ML).
    """

    node_budget: int = 200_000
    fallback_k: int = 256
    stats: SphereStats = field(default_factory=SphereStats)
    name: str = "ml"

    def __call__(self, H, y, sigma2, modulation):
        check_inputs(H, y, sigma2, modulation)
        g, nr, nt = H.shape
        b = y.shape[1]
        lv = qam_levels(modulation).double().numpy()
        L = lv.size
        Hn = H.to(torch.complex128).numpy()
        yn = y.to(torch.complex128).numpy()
        out = np.zeros((g, b, nt), dtype=np.int64)
        failed: list[tuple[int, int]] = []
        for gi in range(g):
            Hr = np.block([[Hn[gi].real, -Hn[gi].imag], [Hn[gi].imag, Hn[gi].real]])
            perm = np.argsort((Hr ** 2).sum(0))
            Q, R = np.linalg.qr(Hr[:, perm])
            Yr = np.concatenate([yn[gi].real, yn[gi].imag], axis=1) @ Q  # [B, 2Nt]
            Rl = R.tolist()
            for bi in range(b):
                sol, nodes = _sphere_search(Rl, Yr[bi].tolist(), lv.tolist(), self.node_budget)
                self.stats.nodes += nodes
                self.stats.vectors += 1
                if sol is None:
                    failed.append((gi, bi))
                    continue
                levels = np.empty(2 * nt, dtype=np.int64)
                levels[perm] = sol
                out[gi, bi] = levels[:nt] * L + levels[nt:]
        idx = torch.from_numpy(out)
        if failed:
            self.stats.fallbacks += len(failed)
            kb = KBest(k=self.fallback_k)
            for gi, bi in failed:
                _, d = kb(H[gi:gi + 1], y[gi:gi + 1, bi:bi + 1], sigma2[gi:gi + 1], modulation)
                idx[gi, bi] = d[0, 0]
        return indices_to_symbols(idx, modulation).to(H.dtype), idx


def _sphere_search(R: list, yb: list, lv: list, budget: int):
    """Schnorr-Euchner DFS on ``||yb - R s||^2`` over ``s_k`` in ``lv``; returns (level indices or None, nodes)."""
    n = len(yb)
    best = math.inf
    best_sol = None
    x = [0.0] * n
    xi = [0] * n
    dist = [0.0] * (n + 1)
    order: list = [None] * n
    pos = [0] * n
    rkk = [R[k][k] for k in range(n)]
    nodes = 0
    k = n - 1

    def expand(k: int) -> None:
        c = yb[k]
        row = R[k]
        for j in range(k + 1, n):
            c -= row[j] * x[j]
        c /= rkk[k]
        order[k] = (c, sorted(range(len(lv)), key=lambda m: abs(lv[m] - c)))
        pos[k] = 0

    expand(k)
    while True:
        c, cand = order[k]
        if pos[k] < len(cand):
            m = cand[pos[k]]
            pos[k] += 1
            d = dist[k + 1] + (rkk[k] * (c - lv[m])) ** 2
            nodes += 1
            if nodes > budget:
                return None, nodes
            if d < best:
                x[k] = lv[m]
                xi[k] = m
                dist[k] = d
                if k == 0:
                    best = d
                    best_sol = list(xi)
                else:
                    k -= 1
                    expand(k)
                continue
            # children are sorted by distance: the rest of this level is outside the sphere too
            pos[k] = len(cand)
        k += 1
        if k >= n:
            break
    return best_sol, nodes
