"""Realistic 3GPP TR 38.901 UMa NLOS uplink channels via the optional ``sionna-no-rt`` (extra ``[mimo]``).

Parameters follow ``shared/data/mimo/README.md``: one BS sector at 25 m facing +x with an 8 (vertical)
x 4 (horizontal) dual-polarised (+-45 deg) panel = 64 ports, single V-pol omni users at 1.5 m, outdoor,
uniform in area over a 120-degree sector at 35-500 m, random heading at 1 m/s, 2.53 GHz, 20 MHz with
1024 subcarriers of which every 4th is kept (256), path loss and shadow fading off, delays relative to
each user's first path, and perfect power control (each user's mean |h|^2 over ports and kept
subcarriers = 1). Output: ``H`` complex64 ``[drops, 256, 64, users]`` with ``axes = (drop, subcarrier)``,
readable by :func:`edgert.mimo.channels.load_channels`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from edgert.mimo.channels import save_channels


@dataclass
class UMaConfig:
    """Generation parameters (defaults: the sample sets' values)."""

    drops: int = 1
    users: int = 32
    carrier_hz: float = 2.53e9
    fft_size: int = 1024
    keep_every: int = 4
    subcarrier_spacing_hz: float = 20e6 / 1024
    bs_height_m: float = 25.0
    ut_height_m: float = 1.5
    min_distance_m: float = 35.0
    max_distance_m: float = 500.0
    sector_deg: float = 120.0
    speed_mps: float = 1.0
    seed: int = 20240601


def _sionna():
    try:
        import sionna.phy  # noqa: F401
        from sionna.phy.channel import cir_to_ofdm_channel
        from sionna.phy.channel.tr38901 import UMa, PanelArray
    except ImportError as exc:
        raise RuntimeError("3GPP channel generation needs the optional 'sionna-no-rt' package "
                           "(pip install 'edgert[mimo]' after torch, or pip install sionna-no-rt==2.2.0); "
                           "load a cached .npz with edgert.mimo.channels.load_channels instead") from exc
    return UMa, PanelArray, cir_to_ofdm_channel


def generate_uma(cfg: UMaConfig, out: Union[str, Path]) -> np.ndarray:
    """Generates ``cfg.drops`` drops, writes them to ``out`` (``.npz``) and returns ``H``."""
    if cfg.drops <= 0 or cfg.users <= 0:
        raise ValueError(f"drops and users must be > 0, got {cfg.drops}, {cfg.users}")
    UMa, PanelArray, cir_to_ofdm_channel = _sionna()
    import torch

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    bs = PanelArray(num_rows_per_panel=8, num_cols_per_panel=4, polarization="dual", polarization_type="cross",
                    antenna_pattern="38.901", carrier_frequency=cfg.carrier_hz)
    ut = PanelArray(num_rows_per_panel=1, num_cols_per_panel=1, polarization="single", polarization_type="V",
                    antenna_pattern="omni", carrier_frequency=cfg.carrier_hz)
    model = UMa(cfg.carrier_hz, "low", ut, bs, "uplink", enable_pathloss=False, enable_shadow_fading=False)
    kept = np.arange(0, cfg.fft_size, cfg.keep_every)
    freqs = torch.tensor((-cfg.fft_size // 2 + kept) * cfg.subcarrier_spacing_hz, dtype=torch.float32)
    drops = []
    for _ in range(cfg.drops):
        u = cfg.users
        # uniform in area over the annular sector
        r = np.sqrt(rng.uniform(cfg.min_distance_m ** 2, cfg.max_distance_m ** 2, u))
        phi = np.deg2rad(rng.uniform(-cfg.sector_deg / 2, cfg.sector_deg / 2, u))
        heading = rng.uniform(0, 2 * math.pi, u)
        ut_loc = np.stack([r * np.cos(phi), r * np.sin(phi), np.full(u, cfg.ut_height_m)], -1)[None]
        vel = np.stack([cfg.speed_mps * np.cos(heading), cfg.speed_mps * np.sin(heading), np.zeros(u)], -1)[None]
        t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        model.set_topology(ut_loc=t(ut_loc), bs_loc=t([[[0.0, 0.0, cfg.bs_height_m]]]),
                           ut_orientations=t(np.zeros((1, u, 3))), bs_orientations=t(np.zeros((1, 1, 3))),
                           ut_velocities=t(vel), in_state=torch.zeros(1, u, dtype=torch.bool), los=False)
        a, tau = model(1, 1.0)
        # delays relative to each user's first path (as after timing advance)
        tau = tau - tau.clamp_min(0).amin(dim=-1, keepdim=True)
        h = cir_to_ofdm_channel(freqs, a, tau, normalize=False)  # [1, 1, 64, U, 1, 1, F]
        H = h[0, 0, :, :, 0, 0, :].permute(2, 0, 1).cpu().numpy().astype(np.complex64)  # [F, 64, U]
        H /= np.sqrt((np.abs(H) ** 2).mean(axis=(0, 1), keepdims=True))
        drops.append(H)
    H = np.stack(drops).astype(np.complex64)
    save_channels(out, H, ("drop", "subcarrier"), seed=np.array(cfg.seed))
    return H
