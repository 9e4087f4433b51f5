"""Analytic complexity: complex multiplications per detected vector (Khani et al., Fig. 3-12 style).

Counts are leading-order complex multiplications (a real-separable QAM denoiser costs about
``2 sqrt(M)`` per symbol; a Hermitian Nt x Nt inverse ``Nt^3``). ``per_channel`` work (Gram matrix,
QR, filters, and for online MMNet the training) is amortized over the ``vectors`` sharing a channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Complexity:
    """Multiplications per vector and per channel; ``amortized = per_vector + per_channel / vectors``."""

    per_vector: float
    per_channel: float
    vectors: int

    @property
    def amortized(self) -> float:
        return self.per_vector + self.per_channel / max(self.vectors, 1)

    def as_dict(self) -> dict:
        return {"per_vector": self.per_vector, "per_channel": self.per_channel, "vectors_per_channel": self.vectors,
                "amortized_per_vector": self.amortized}


def multiplications(detector: str, nr: int, nt: int, modulation: int, vectors: int, *, layers: int = 10,
                    kbest_k: int = 32, training_iterations: float = 0.0, batch: int = 500,
                    sphere_nodes: float = 0.0) -> Complexity:
    """Complex multiplications for ``detector`` on an ``nr x nt`` channel shared by ``vectors`` vectors.

    ``training_iterations`` (online MMNet, OAMPNet-online): Adam iterations spent per channel; each costs
    about 3 forward passes (forward + backward) of ``batch`` vectors. OAMPNet-online is counted as it runs
    (:func:`edgert.mimo.detectors.iterative.oamp_train_forward`: ``H^H y`` and one Nt x Nt rotation per
    vector, two rotations per layer, one eigendecomposition ~Nt^3 per channel); the ``oamp`` row counts
    the textbook form with an Nt x Nt inverse per vector and layer (same math, more work).
    ``sphere_nodes``: measured nodes per vector (ML).
    """
    den = 2 * math.sqrt(modulation) * nt
    gram = nr * nt * nt
    inv = nt ** 3
    mf = nr * nt
    if detector == "mf":
        return Complexity(mf, mf, vectors)
    if detector in ("zf", "mmse"):
        return Complexity(mf, 2 * gram + inv, vectors)
    if detector == "amp":
        return Complexity(layers * (2 * mf + den), 0, vectors)
    if detector in ("oamp", "oampnet"):
        return Complexity(layers * (3 * inv + 2 * mf + den), gram, vectors)
    if detector == "oampnet_online":
        forward = mf + nt * nt + layers * (2 * nt * nt + den)
        return Complexity(forward, gram + inv + training_iterations * batch * 3 * forward, vectors)
    if detector in ("ep", "ep64", "ep64_wide"):  # precision and the denoiser's variance scale cost nothing
        return Complexity(mf + layers * (inv + nt * nt + den), gram, vectors)
    if detector == "vblast":
        per_ch = sum(k * k * nr + k ** 3 + k * nr for k in range(1, nt + 1))
        return Complexity(2 * mf, per_ch, vectors)
    if detector == "kbest":
        tree = sum(kbest_k * (nt - 1 - i) + kbest_k * modulation for i in range(nt))
        return Complexity(mf + tree, 2 * gram, vectors)
    if detector == "ml":
        # each visited node of the real-valued tree computes its centre: ~ 2nt/2 real = nt/2 complex mults
        return Complexity(mf + sphere_nodes * nt / 2, 2 * gram, vectors)
    if detector == "mmnet_iid":
        return Complexity(layers * (2 * mf + den + nr), gram, vectors)
    if detector == "mmnet":
        forward = layers * (2 * mf + den + nr)
        per_ch = layers * gram + training_iterations * batch * 3 * forward
        return Complexity(forward, per_ch, vectors)
    raise ValueError(f"unknown detector {detector!r}")
