"""Channels, symbols and noise for uplink massive MIMO: y = H x + n.

Convention (shared by every module of :mod:`edgert.mimo` and by the sample sets
in ``shared/data/mimo``):

* ``H`` is complex64 ``[..., Nr, Nt]`` (Nr base-station ports, Nt single-antenna
  users); each user's column has mean ``|h|^2 = 1`` over antennas (and, for
  realistic sets, over subcarriers), i.e. perfect power control.
* QAM symbols have unit average energy (``edgert.ops.qam_constellation``).
* ``SNR(dB) = 10 log10(E||Hx||^2 / E||n||^2)`` as an ensemble expectation, so the
  noise variance per receive antenna is ``sigma2 = Nt / 10**(SNR/10)`` for every
  matrix (no per-matrix rescaling); ``n ~ CN(0, sigma2 I)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from edgert.ops.mmnet import indices_to_symbols

MODULATIONS: tuple[int, ...] = (4, 16, 64)
AXIS_NAMES: tuple[str, ...] = ("drop", "time", "subcarrier", "matrix")
SnrLike = Union[float, Sequence[float], torch.Tensor]


def check_modulation(modulation: int) -> int:
    """Returns ``modulation`` if it is a supported QAM order (4, 16, 64); raises ValueError otherwise."""
    if (isinstance(modulation, bool) or not isinstance(modulation, (int, np.integer))
            or int(modulation) not in MODULATIONS):
        raise ValueError(f"modulation: expected one of {list(MODULATIONS)} (QAM order), got {modulation!r}")
    return int(modulation)


def noise_variance(snr_db: SnrLike, nt: int) -> torch.Tensor:
    """Noise variance per receive antenna, ``Nt / 10**(SNR/10)``, float32 with the shape of ``snr_db``."""
    snr = torch.as_tensor(snr_db, dtype=torch.float64)
    return (nt / torch.pow(10.0, snr / 10.0)).to(torch.float32)


def iid_rayleigh(num: int, nr: int, nt: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` i.i.d. Rayleigh matrices, entries CN(0, 1): complex64 ``[num, nr, nt]``."""
    if num < 0 or nr <= 0 or nt <= 0:
        raise ValueError(f"iid_rayleigh: expected num >= 0, nr > 0, nt > 0, got {num}, {nr}, {nt}")
    re = torch.randn(num, nr, nt, generator=generator)
    im = torch.randn(num, nr, nt, generator=generator)
    return torch.complex(re, im) * math.sqrt(0.5)


def imperfect_csi(H: torch.Tensor, sigma_c2: float, generator: torch.Generator) -> torch.Tensor:
    """Channel estimate ``H_hat = H + E``, ``E ~ CN(0, sigma_c2)`` entrywise; same shape/dtype as ``H``."""
    if sigma_c2 < 0 or not math.isfinite(sigma_c2):
        raise ValueError(f"sigma_c2: expected a finite value >= 0, got {sigma_c2!r}")
    re = torch.randn(H.shape, generator=generator, dtype=H.real.dtype)
    im = torch.randn(H.shape, generator=generator, dtype=H.real.dtype)
    return H + torch.complex(re, im) * math.sqrt(sigma_c2 / 2.0)


def validate_channels(H: np.ndarray, where: str = "H") -> None:
    """Raises ValueError naming the first problem: dtype, rank, Nr < Nt, NaN/inf or an all-zero column.

    ``H`` must be complex64 ``[..., Nr, Nt]`` with at least one leading axis allowed to be absent.
    """
    if not isinstance(H, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array, got {type(H).__name__}")
    if H.dtype != np.complex64:
        raise ValueError(f"{where}: expected dtype complex64, got {H.dtype}")
    if H.ndim < 2:
        raise ValueError(f"{where}: expected shape [..., Nr, Nt] with at least 2 axes, got {list(H.shape)}")
    nr, nt = H.shape[-2:]
    if nr == 0 or nt == 0 or H.size == 0:
        raise ValueError(f"{where}: empty channel set, shape {list(H.shape)}")
    if nr < nt:
        raise ValueError(f"{where}: expected Nr >= Nt (axes [..., Nr, Nt]), got Nr={nr}, Nt={nt}")
    finite = np.isfinite(H.real) & np.isfinite(H.imag)
    if not finite.all():
        first = np.argwhere(~finite)[0]
        raise ValueError(f"{where}: {int((~finite).sum())} NaN/inf entries, "
                         f"first at index {tuple(int(i) for i in first)}")
    power = (np.abs(H) ** 2).sum(axis=-2)
    if (power == 0).any():
        first = np.argwhere(power == 0)[0]
        raise ValueError(f"{where}: all-zero user column at index {tuple(int(i) for i in first)} (matrix..., user)")


@dataclass
class ChannelSet:
    """A set of channel matrices with its leading axes named.

    Attributes:
        H: complex64 ``[*lead, Nr, Nt]``.
        axes: names of the leading axes, e.g. ("drop", "subcarrier").
        source: where it came from (file path or generator description).
    """

    H: torch.Tensor
    axes: tuple[str, ...]
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def nr(self) -> int:
        return int(self.H.shape[-2])

    @property
    def nt(self) -> int:
        return int(self.H.shape[-1])

    def flat(self) -> torch.Tensor:
        """All matrices as ``[G, Nr, Nt]``."""
        return self.H.reshape(-1, self.nr, self.nt)

    def sequences(self) -> torch.Tensor:
        """Matrices as ``[S, K, F, Nr, Nt]``: S independent sequences of K time steps x F subcarriers.

        A trailing ``subcarrier`` axis is F and a ``time`` axis right before it (or trailing) is K; all
        other leading axes (drops, independent matrices) are flattened into S, in ``flat()`` order.
        """
        lead = list(self.H.shape[:-2])
        axes = list(self.axes)
        f = k = 1
        if axes and axes[-1] == "subcarrier":
            f = lead.pop()
            axes.pop()
        if axes and axes[-1] == "time":
            k = lead.pop()
        return self.H.reshape(-1, k, f, self.nr, self.nt)


def split_users(cs: ChannelSet, nt: int) -> ChannelSet:
    """Makes ``Nt=nt`` instances from a set with ``k*nt`` users: users ``[i*nt, (i+1)*nt)`` are instance i.

    Users are dropped independently, so each group is a valid ``nt``-user drop. The instances are
    stacked on the first leading axis (named "drop" when absent): ``[k*D, ..., Nr, nt]`` with instance
    ``i`` of drop ``d`` at ``i*D + d``.
    """
    total = cs.nt
    if nt <= 0 or total % nt != 0:
        raise ValueError(f"split_users: the set has {total} users, not a multiple of nt={nt}")
    k = total // nt
    if k == 1:
        return cs
    H = cs.H
    axes = cs.axes
    if not axes:
        H = H.unsqueeze(0)
        axes = ("drop",)
    lead = H.shape[:-2]
    parts = [H[..., i * nt:(i + 1) * nt] for i in range(k)]
    H = torch.cat(parts, dim=0).contiguous()
    assert H.shape[1:-2] == lead[1:]
    return ChannelSet(H, axes, cs.source + f" [users split into {k} x {nt}]", dict(cs.info, split=k))


def _default_axes(ndim_lead: int) -> tuple[str, ...]:
    return {0: (), 1: ("matrix",), 2: ("drop", "subcarrier"), 3: ("drop", "time", "subcarrier")}.get(ndim_lead, ())


def load_channels(path: Union[str, Path], nt: Optional[int] = None) -> ChannelSet:
    """Loads a channel set from ``.npz``.

    File format: ``H`` complex64 ``[*lead, Nr, Nt]`` with 0 to 3 leading axes; an optional ``axes``
    string array names them (each one of drop, time, subcarrier, matrix). Without ``axes``: 1 leading
    axis = ``matrix``, 2 = ``(drop, subcarrier)``, 3 = ``(drop, time, subcarrier)``. Other arrays are
    ignored. ``nt`` smaller than the file's user count splits users into groups (:func:`split_users`).

    Raises:
        ValueError: missing file/``H``, wrong dtype or shape, NaN/inf, all-zero columns, bad ``axes``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"channel file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "H" not in data.files:
                raise ValueError(f"{path}: no array 'H' (found {sorted(data.files)})")
            H = data["H"]
            axes_arr = data["axes"] if "axes" in data.files else None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    validate_channels(H, f"{path}: H")
    lead = H.ndim - 2
    if axes_arr is not None:
        axes = tuple(str(a) for a in np.atleast_1d(axes_arr))
        if len(axes) != lead or any(a not in AXIS_NAMES for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"{path}: 'axes' must name the {lead} leading axes of H with distinct names from "
                             f"{list(AXIS_NAMES)}, got {list(axes)}")
    else:
        if lead > 3:
            raise ValueError(f"{path}: H has {lead} leading axes; at most 3 without an 'axes' entry")
        axes = _default_axes(lead)
    cs = ChannelSet(torch.from_numpy(np.ascontiguousarray(H)), axes, str(path))
    if nt is not None and nt != cs.nt:
        if nt > cs.nt:
            raise ValueError(f"{path}: requested Nt={nt} but the file has only {cs.nt} users")
        cs = split_users(cs, nt)
    return cs


def save_channels(path: Union[str, Path], H: np.ndarray, axes: Sequence[str], **meta: np.ndarray) -> None:
    """Writes a channel set in the format :func:`load_channels` reads (compressed ``.npz``)."""
    validate_channels(H)
    np.savez_compressed(path, H=H, axes=np.array(list(axes)), **meta)


@dataclass
class Batch:
    """One batch of transmissions over G channels.

    Attributes:
        indices: int64 ``[G, B, Nt]`` transmitted constellation indices.
        x: complex64 ``[G, B, Nt]`` transmitted symbols (unit average energy).
        y: complex64 ``[G, B, Nr]`` received signals ``y = H x + n``.
        sigma2: float32 ``[G]`` noise variance per receive antenna.
    """

    indices: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    sigma2: torch.Tensor


def sample_batch(H: torch.Tensor, snr_db: SnrLike, modulation: int, batch: int, generator: torch.Generator) -> Batch:
    """Draws uniform QAM symbols and noise for ``batch`` vectors per channel.

    Args:
        H: complex64 ``[G, Nr, Nt]``.
        snr_db: a scalar (same SNR for all) or ``[G]`` (one SNR per channel, e.g. to train over an SNR range
            with a channel repeated G times).
        modulation: QAM order 4, 16 or 64.
        batch: vectors per channel B.
        generator: torch CPU generator (all randomness comes from it).
    """
    modulation = check_modulation(modulation)
    if H.dim() != 3:
        raise ValueError(f"H: expected [G, Nr, Nt], got {list(H.shape)}")
    g, nr, nt = H.shape
    sigma2 = (noise_variance(snr_db, nt).reshape(-1).expand(g).contiguous()
              if torch.as_tensor(snr_db).numel() in (1, g) else None)
    if sigma2 is None:
        raise ValueError(f"snr_db: expected a scalar or {g} values, got {torch.as_tensor(snr_db).numel()}")
    indices = torch.randint(0, modulation, (g, batch, nt), generator=generator)
    x = indices_to_symbols(indices, modulation).to(H.dtype)
    re = torch.randn(g, batch, nr, generator=generator)
    im = torch.randn(g, batch, nr, generator=generator)
    noise = torch.complex(re, im) * torch.sqrt(sigma2 / 2.0)[:, None, None]
    y = x @ H.transpose(1, 2) + noise.to(H.dtype)
    return Batch(indices, x, y, sigma2)


def column_power(H: torch.Tensor) -> torch.Tensor:
    """Mean ``|h|^2`` per user over antennas and all leading axes: float ``[Nt]`` (1 under the convention)."""
    return (H.abs() ** 2).reshape(-1, H.shape[-1]).mean(0)
