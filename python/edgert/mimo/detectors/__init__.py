"""MIMO detectors with one call signature ``det(H, y, sigma2, modulation) -> (x_soft, indices)``.

See :mod:`edgert.mimo.detectors.base` for shapes and conventions. :func:`make_detector` builds the
untrained ones by name; trainable ones (``oampnet``, ``mmnet_iid``, ``mmnet``, ``oampnet_online``) are built
and trained by :mod:`edgert.mimo.evaluate` (or by hand with :mod:`edgert.mimo.training`,
:mod:`edgert.mimo.online` / :mod:`edgert.mimo.oampnet_online`).
"""
from __future__ import annotations

from edgert.mimo.detectors.base import Detector, check_inputs
from edgert.mimo.detectors.iterative import AMP, EP, OAMP, OAMPNetOnline, oamp_train_forward
from edgert.mimo.detectors.linear import MMSE, MatchedFilter, ZeroForcing
from edgert.mimo.detectors.mmnet import MMNet, MMNetIID, init_mmnet_params
from edgert.mimo.detectors.tree import VBLAST, KBest, SphereDecoder, SphereStats

#: every detector name the evaluation accepts
DETECTORS: tuple[str, ...] = ("mf", "zf", "mmse", "amp", "oamp", "oampnet", "ep", "ep64", "ep64_wide", "vblast",
                              "kbest", "ml", "mmnet_iid", "mmnet", "oampnet_online")
#: detectors with parameters learned before detection (``mmnet`` and ``oampnet_online`` per channel of the set)
TRAINABLE: tuple[str, ...] = ("oampnet", "mmnet_iid", "mmnet", "oampnet_online")


def make_detector(name: str, *, layers: int = 10, kbest_k: int = 32, ml_node_budget: int = 200_000,
                  fallback_k: int = 256):
    """An untrained detector by name (trainable ones start from their initial parameters)."""
    table = {
        "mf": lambda: MatchedFilter(),
        "zf": lambda: ZeroForcing(),
        "mmse": lambda: MMSE(),
        "amp": lambda: AMP(iterations=layers),
        "oamp": lambda: OAMP(iterations=layers),
        "oampnet": lambda: OAMP(iterations=layers, name="oampnet"),
        "ep": lambda: EP(iterations=layers),
        "ep64": lambda: EP(iterations=layers, float64=True, name="ep64"),
        "ep64_wide": lambda: EP(iterations=layers, float64=True, cavity_scale=(2.0, 1.0), name="ep64_wide"),
        "vblast": lambda: VBLAST(),
        "kbest": lambda: KBest(k=kbest_k),
        "ml": lambda: SphereDecoder(node_budget=ml_node_budget, fallback_k=fallback_k),
        "mmnet_iid": lambda: MMNetIID(layers=layers),
    }
    if name not in table:
        raise ValueError(f"unknown detector {name!r}; expected one of {list(table)} "
                         "(mmnet and oampnet_online are built by online training)")
    return table[name]()


__all__ = ["AMP", "DETECTORS", "Detector", "EP", "KBest", "MMNet", "MMNetIID", "MMSE", "MatchedFilter", "OAMP",
           "OAMPNetOnline", "SphereDecoder", "SphereStats", "TRAINABLE", "VBLAST", "ZeroForcing", "check_inputs",
           "init_mmnet_params", "make_detector", "oamp_train_forward"]
