"""Realistic 3GPP TR 38.901 UMa NLOS uplink channels via the optional ``sionna-no-rt`` (extra ``[mimo]``).

Parameters follow ``shared/data/mimo/README.md``: one BS sector at 25 m facing +x with an 8 (vertical)
x 4 (horizontal) dual-polarised (+-45 deg) panel = 64 ports, single V-pol omni users at 1.5 m, outdoor,
uniform in area over a 120-degree sector at 35-500 m, random heading at 1 m/s, 2.53 GHz, 20 MHz with
1024 subcarriers of which every 4th is kept (256), path loss and shadow fading off, delays relative to
each user's first path, and perfect power control (each user's mean |h|^2 over ports and kept
subcarriers = 1). Output: ``H`` complex64 ``[drops, 256, 64, users]`` with ``axes = (drop, subcarrier)``,
readable by :func:`edgert.mimo.channels.load_channels`.

Time sequences (``time_steps > 1``): the same drop sampled at ``time_steps`` instants ``time_step_s``
apart (sionna's ``model(num_time_samples, sampling_frequency)``: each ray keeps its gain, delay and
angles and rotates with its own Doppler shift, which is what moving at ``speed_mps`` does over a few
ms). Output ``H`` ``[drops, time, subcarrier, 64, users]`` with ``axes = (drop, time, subcarrier)``;
power control is then over the whole drop (all time steps and the saved subcarriers), so a user's
fading over time is kept. ``subcarrier_stride`` keeps every n-th of the kept subcarriers (e.g. 16:
16 subcarriers 1.25 MHz apart) to keep files small; the power normalisation uses the saved ones.
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
    #: samples per drop along time; 1 = one snapshot (the sample sets' format, axes (drop, subcarrier))
    time_steps: int = 1
    #: spacing of the time samples: 1 ms ~ one 14-symbol slot here (14 x 51.2 us + CP = 0.77 ms) rounded
    #: up; at 1 m/s and 2.53 GHz the maximum Doppler is 8.4 Hz, so H changes by ~4% per step
    time_step_s: float = 1e-3
    #: keep every n-th of the ``fft_size / keep_every`` kept subcarriers (1 = all of them)
    subcarrier_stride: int = 1

    def validate(self) -> None:
        """Raises ValueError naming the first bad parameter."""
        for name in ("drops", "users", "fft_size", "keep_every", "time_steps", "subcarrier_stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{name}: expected an integer > 0, got {v!r}")
        if self.fft_size % self.keep_every:
            raise ValueError(f"keep_every ({self.keep_every}) must divide fft_size ({self.fft_size})")
        kept = self.fft_size // self.keep_every
        if self.subcarrier_stride > kept:
            raise ValueError(f"subcarrier_stride: expected <= {kept} (the kept subcarriers), "
                             f"got {self.subcarrier_stride}")
        if not (math.isfinite(self.time_step_s) and self.time_step_s > 0):
            raise ValueError(f"time_step_s: expected a finite value > 0 s, got {self.time_step_s!r}")
        if not (math.isfinite(self.speed_mps) and self.speed_mps >= 0):
            raise ValueError(f"speed_mps: expected a finite value >= 0 m/s, got {self.speed_mps!r}")

    def subcarrier_indices(self) -> np.ndarray:
        """FFT indices (0..fft_size-1) of the saved subcarriers."""
        return np.arange(0, self.fft_size, self.keep_every)[::self.subcarrier_stride]

    def max_doppler_hz(self) -> float:
        return self.speed_mps * self.carrier_hz / 299_792_458.0


def _sionna():
    try:
        import sionna.phy
        from sionna.phy.channel import cir_to_ofdm_channel
        from sionna.phy.channel.tr38901 import PanelArray, UMa
    except ImportError as exc:
        raise RuntimeError("3GPP channel generation needs the optional 'sionna-no-rt' package "
                           "(pip install 'edgert[mimo]' after torch, or pip install sionna-no-rt==2.2.0); "
                           "load a cached .npz with edgert.mimo.channels.load_channels instead") from exc
    return sionna.phy.config, UMa, PanelArray, cir_to_ofdm_channel


def generate_uma(cfg: UMaConfig, out: Union[str, Path]) -> np.ndarray:
    """Generates ``cfg.drops`` drops, writes them to ``out`` (``.npz``) and returns ``H``.

    ``H`` is complex64 ``[drops, F, 64, users]`` (``time_steps == 1``) or ``[drops, time_steps, F, 64,
    users]``; the file also holds ``seed``, ``time_step_s`` and ``subcarrier_index`` (FFT indices).
    """
    cfg.validate()
    sionna_config, UMa, PanelArray, cir_to_ofdm_channel = _sionna()
    import torch

    torch.manual_seed(cfg.seed)
    # sionna draws from its own generators (sionna.phy.config), not torch's global one: without this the
    # output changed from run to run for the same seed
    sionna_config.seed = cfg.seed
    rng = np.random.default_rng(cfg.seed)
    bs = PanelArray(num_rows_per_panel=8, num_cols_per_panel=4, polarization="dual", polarization_type="cross",
                    antenna_pattern="38.901", carrier_frequency=cfg.carrier_hz)
    ut = PanelArray(num_rows_per_panel=1, num_cols_per_panel=1, polarization="single", polarization_type="V",
                    antenna_pattern="omni", carrier_frequency=cfg.carrier_hz)
    model = UMa(cfg.carrier_hz, "low", ut, bs, "uplink", enable_pathloss=False, enable_shadow_fading=False)
    kept = cfg.subcarrier_indices()
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
        a, tau = model(cfg.time_steps, 1.0 / cfg.time_step_s)
        # delays relative to each user's first path (as after timing advance)
        tau = tau - tau.clamp_min(0).amin(dim=-1, keepdim=True)
        h = cir_to_ofdm_channel(freqs, a, tau, normalize=False)  # [1, 1, 64, U, 1, K, F]
        H = h[0, 0, :, :, 0, :, :].permute(2, 3, 0, 1).cpu().numpy().astype(np.complex64)  # [K, F, 64, U]
        # perfect power control over the whole drop: every time step and saved subcarrier
        H /= np.sqrt((np.abs(H) ** 2).mean(axis=(0, 1, 2), keepdims=True))
        drops.append(H)
    H = np.stack(drops).astype(np.complex64)  # [D, K, F, 64, U]
    meta = dict(seed=np.array(cfg.seed), time_step_s=np.array(cfg.time_step_s), subcarrier_index=kept)
    if cfg.time_steps == 1:
        H = H[:, 0]
        save_channels(out, H, ("drop", "subcarrier"), **meta)
    else:
        save_channels(out, H, ("drop", "time", "subcarrier"), **meta)
    return H


def relative_change(H: np.ndarray, lag: int = 1) -> np.ndarray:
    """``||H[k+lag] - H[k]||_F / ||H[k]||_F`` per matrix along the time axis of ``[D, K, F, Nr, Nt]``.

    Returns float64 ``[D, K - lag, F]``.
    """
    if H.ndim != 5 or not 0 < lag < H.shape[1]:
        raise ValueError(f"relative_change: expected [D, K, F, Nr, Nt] with K > lag = {lag}, got {list(H.shape)}")
    H = H.astype(np.complex128)
    d = np.linalg.norm(H[:, lag:] - H[:, :-lag], axis=(-2, -1))
    return d / np.linalg.norm(H[:, :-lag], axis=(-2, -1))
