"""SER-vs-SNR sweeps with confidence intervals, SNR at a target SER, gap to ML, plots, resumable runs.

SER here is by default the true QAM symbol error rate: a symbol is wrong when its detected constellation
index differs from the transmitted one. The MMNet authors' code counts errors per real component, i.e. per
PAM decision (two per complex symbol), which gives a lower number for the same detector:
``SweepConfig(count="real")`` (``edgert mimo sweep --count real``) counts that way, for comparison with the
paper's curves.

A run folder holds ``config.json`` (the :class:`SweepConfig`), ``results.json`` (one entry per
finished (detector, SNR) point plus summaries, including ``ser_by_condition``), ``per_matrix.npz``
(symbol errors per detector, SNR and channel matrix, and each matrix's condition number; see
:func:`save_per_matrix`), ``models/`` (trained detectors) and ``ser.png`` / ``gap.png`` /
``ser_vs_condition.png``. Re-running into the same folder skips finished points; their per-matrix
errors are read back from ``per_matrix.npz``, which is rewritten (atomically) after every SNR point.

Channel-estimation error (``SweepConfig.csi_error`` = sigma_c2 > 0): the data is always sent over the true
channels, while every detector, and the training of the per-channel ones (``mmnet``, ``oampnet_online``),
sees the estimate ``H_hat = H + E``, ``E ~ CN(0, sigma_c2)`` per entry (:func:`estimated_set`): one draw
per matrix for the whole sweep, from a generator of its own (:func:`csi_generator`), so the transmitted
data is the same with and without the error and the same for every detector.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from edgert.harness import Progress, RunFolder
from edgert.harness.plots import pyplot, save_figure
from edgert.mimo.channels import (
    ChannelSet,
    check_modulation,
    iid_rayleigh,
    imperfect_csi,
    load_channels,
    sample_batch,
)
from edgert.mimo.complexity import multiplications
from edgert.mimo.detectors import DETECTORS, OAMP, MMNetIID, SphereDecoder, make_detector
from edgert.mimo.oampnet_online import OAMPNetOnlineConfig, OAMPNetOnlineResult, train_oampnet_online
from edgert.mimo.online import LINEAR_STAGES, ORDERS, WARM_STARTS, OnlineConfig, OnlineResult, train_online
from edgert.mimo.training import OfflineConfig, train_offline

Log = Callable[[str], None]
#: how errors are counted: QAM symbols, or real components (the MMNet authors' counting)
COUNTS = ("symbol", "real")


def wilson_interval(errors: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) for a binomial proportion ``errors / trials``."""
    if trials <= 0:
        return (0.0, 1.0)
    p = errors / trials
    den = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / den
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def snr_at_ser(snr_db: list[float], ser: list[float], target: float = 1e-3) -> Optional[float]:
    """SNR where the SER curve crosses ``target``, interpolating log10(SER) linearly in SNR (dB).

    Uses the first crossing from above; returns None when the curve never reaches ``target`` or when the
    first point below it has SER 0 (no log-interpolation possible; see :func:`snr_upper_bound`).
    """
    pts = sorted(zip(snr_db, ser))
    for (s0, e0), (s1, e1) in zip(pts, pts[1:]):
        if e0 >= target > e1:
            if e1 <= 0:
                return None
            a, b = math.log10(e0), math.log10(e1)
            return s0 + (math.log10(target) - a) * (s1 - s0) / (b - a)
    return None


def snr_upper_bound(snr_db: list[float], ser: list[float], target: float = 1e-3) -> Optional[float]:
    """Lowest SNR whose measured SER is below ``target`` (bounds the crossing when SER hits 0 there)."""
    below = [s for s, e in zip(snr_db, ser) if e < target]
    return min(below) if below else None


@dataclass
class SweepConfig:
    """One SER sweep: detectors x SNRs on one channel set, system size and modulation.

    Attributes:
        detectors: names from :data:`edgert.mimo.detectors.DETECTORS`.
        channels: ``"iid"`` or a path to a channel ``.npz`` (:func:`edgert.mimo.channels.load_channels`).
        snr_db: SNR points (dB), SNR = 10 log10(E||Hx||^2 / E||n||^2).
        matrices: i.i.d. matrices to draw (ignored for files, which use every matrix).
        vectors_per_matrix: transmitted vectors per channel matrix and SNR point.
        train_snr_db: SNR range for training (default: the sweep's range).
        online_order: ``"paper"`` (Algorithm 1: ``online_psi`` on the first subcarrier, ``online_phi`` per next
            one, ``online_psi`` again on the first subcarrier of a later time step) or ``"time"`` (``online_psi``
            on every subcarrier of the first time step, ``online_phi_time`` per later time step, warm-started
            from the same subcarrier); see :class:`edgert.mimo.online.OnlineConfig`.
        online_linear_stage, online_lr_scalars: MMNet's linear stage (``"free"``: the paper's learned ``A_t``;
            ``"regularised"`` / ``"corrected"``: an explicit regularised inverse with learned per-layer scalars)
            and the Adam step of those scalars; see :class:`edgert.mimo.online.OnlineConfig`.
        count: ``"symbol"`` (QAM symbol errors) or ``"real"`` (errors per real component, two PAM decisions
            per symbol, the MMNet authors' counting).
        csi_error: variance sigma_c2 of the channel-estimation error per entry, relative to the channels'
            ``E|h|^2 = 1``; detectors see ``H + E``, ``E ~ CN(0, sigma_c2)`` (module docstring). 0 = perfect CSI.
            The offline-trained ``mmnet_iid`` / ``oampnet`` are still trained on exact i.i.d. channels.
        oampnet_online_iterations: Adam iterations per channel for ``oampnet_online`` (every channel from
            OAMP's ``gamma = theta = 1``, no warm start; :mod:`edgert.mimo.oampnet_online`), with the online
            MMNet recipe (``online_batch`` vectors, SNR uniform in :meth:`training_range`, lr 1e-3), trained
            ``chunk_matrices`` channels per batched graph (~25 MB each at batch 500, 64x16, 10 layers).
    """

    detectors: list[str] = field(default_factory=lambda: ["mmse", "ep"])
    channels: str = "iid"
    nr: int = 64
    nt: int = 16
    modulation: int = 16
    snr_db: list[float] = field(default_factory=lambda: [8.0, 10.0, 12.0, 14.0])
    matrices: int = 256
    vectors_per_matrix: int = 32
    seed: int = 0
    layers: int = 10
    kbest_k: int = 32
    ml_node_budget: int = 200_000
    chunk_matrices: int = 64
    target_ser: float = 1e-3
    train_snr_db: Optional[list[float]] = None
    offline_iterations: int = 2000
    online_psi: int = 1000
    online_phi: int = 5
    online_batch: int = 500
    online_warm_start: str = "copy"
    online_order: str = "paper"
    online_phi_time: int = 3
    online_parallel: int = 0
    online_lr_time: Optional[float] = None
    online_linear_stage: str = "free"
    online_lr_scalars: float = 0.02
    threads: int = 1
    count: str = "symbol"
    csi_error: float = 0.0
    oampnet_online_iterations: int = 100

    def validate(self) -> None:
        """Rejects bad input before any work starts (ValueError naming the problem)."""
        check_modulation(self.modulation)
        if not self.detectors:
            raise ValueError("detectors: expected at least one detector")
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; expected names from {list(DETECTORS)}")
        if len(set(self.detectors)) != len(self.detectors):
            raise ValueError(f"detectors: duplicates in {self.detectors}")
        if not self.snr_db:
            raise ValueError("snr_db: empty SNR list")
        bad = [s for s in self.snr_db if not isinstance(s, (int, float)) or not math.isfinite(s) or not -20 <= s <= 60]
        if bad:
            raise ValueError(f"snr_db: values must be finite and within [-20, 60] dB, got {bad}")
        if len(set(self.snr_db)) != len(self.snr_db):
            raise ValueError(f"snr_db: duplicate SNR points in {self.snr_db}")
        if self.channels != "iid" and not Path(self.channels).is_file():
            raise ValueError(f"channels: expected 'iid' or an existing .npz file, got {self.channels!r}")
        for name in ("nr", "nt", "matrices", "vectors_per_matrix", "layers", "kbest_k", "chunk_matrices", "threads"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        if self.nr < self.nt:
            raise ValueError(f"expected nr >= nt, got nr={self.nr}, nt={self.nt}")
        if not 0 < self.target_ser < 1:
            raise ValueError(f"target_ser: expected in (0, 1), got {self.target_ser}")
        if self.online_warm_start not in WARM_STARTS:
            raise ValueError(f"online_warm_start: expected one of {WARM_STARTS}, got {self.online_warm_start!r}")
        if self.online_linear_stage not in LINEAR_STAGES:
            raise ValueError(f"online_linear_stage: expected one of {LINEAR_STAGES}, got {self.online_linear_stage!r}")
        if "mmnet" in self.detectors:
            self.online_config().validate()
        if self.count not in COUNTS:
            raise ValueError(f"count: expected one of {COUNTS}, got {self.count!r}")
        if self.online_order not in ORDERS:
            raise ValueError(f"online_order: expected one of {ORDERS}, got {self.online_order!r}")
        for name in ("online_psi", "online_phi", "online_phi_time", "online_parallel", "oampnet_online_iterations"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        c = self.csi_error
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
            raise ValueError(f"csi_error: expected a finite variance >= 0 (relative to E|h|^2 = 1), got {c!r}")
        if self.online_lr_time is not None and not (math.isfinite(self.online_lr_time) and self.online_lr_time > 0):
            raise ValueError(f"online_lr_time: expected None or a finite value > 0, got {self.online_lr_time!r}")
        if self.train_snr_db is not None and (len(self.train_snr_db) != 2
                                              or self.train_snr_db[0] > self.train_snr_db[1]):
            raise ValueError(f"train_snr_db: expected [lo, hi], got {self.train_snr_db}")

    def online_config(self) -> OnlineConfig:
        """The :class:`OnlineConfig` that trains ``mmnet`` for this sweep."""
        return OnlineConfig(modulation=self.modulation, snr_db=self.training_range(), layers=self.layers,
                            psi=self.online_psi, psi_time=self.online_psi, phi=self.online_phi,
                            batch=self.online_batch, seed=self.seed + 29, threads=self.threads,
                            warm_start=self.online_warm_start, order=self.online_order,
                            phi_time=self.online_phi_time, parallel=self.online_parallel,
                            lr_time=self.online_lr_time, linear_stage=self.online_linear_stage,
                            lr_scalars=self.online_lr_scalars)

    def training_range(self) -> tuple[float, float]:
        if self.train_snr_db is not None:
            return (float(self.train_snr_db[0]), float(self.train_snr_db[1]))
        return (float(min(self.snr_db)), float(max(self.snr_db)))


def count_errors(detected: torch.Tensor, sent: torch.Tensor, modulation: int, count: str = "symbol") -> torch.Tensor:
    """Errors per channel matrix (int64 ``[G]``) between constellation indices ``[G, B, Nt]``: wrong symbols
    (``count="symbol"``) or wrong real components (``"real"``: each axis of a symbol is one PAM decision)."""
    if count == "symbol":
        return (detected != sent).sum((1, 2))
    if count != "real":
        raise ValueError(f"count: expected one of {COUNTS}, got {count!r}")
    k = math.isqrt(modulation)
    d, t = detected.long(), sent.long()
    return ((d // k != t // k).long() + (d % k != t % k).long()).sum((1, 2))


def snr_key(snr: float) -> str:
    return f"{float(snr):g}"


def snr_generator(seed: int, snr: float) -> torch.Generator:
    """The generator of the transmitted data at one SNR point (the same for every detector of a sweep)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + int(round(float(snr) * 1000)) + 7)


def csi_generator(seed: int) -> torch.Generator:
    """The generator of the channel-estimation error (independent of the data's :func:`snr_generator`)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + 500_009)


def estimated_set(cs: ChannelSet, csi_error: float, seed: int) -> ChannelSet:
    """What the receiver knows of ``cs``: ``cs`` itself for ``csi_error == 0``, else the same set (axes
    kept) with ``H + E``, ``E ~ CN(0, csi_error)`` per entry drawn from :func:`csi_generator` (``seed``)."""
    if csi_error == 0:
        return cs
    H = imperfect_csi(cs.H, float(csi_error), csi_generator(seed))
    return ChannelSet(H, cs.axes, f"{cs.source} (estimated, csi_error={csi_error:g})", dict(cs.info))


def load_set(cfg: SweepConfig) -> ChannelSet:
    """The sweep's channel set (i.i.d. matrices are drawn from ``cfg.seed``)."""
    if cfg.channels == "iid":
        gen = torch.Generator().manual_seed(cfg.seed)
        return ChannelSet(iid_rayleigh(cfg.matrices, cfg.nr, cfg.nt, gen), ("matrix",), "iid")
    cs = load_channels(cfg.channels, nt=cfg.nt)
    if cs.nr != cfg.nr:
        raise ValueError(f"{cfg.channels}: the file has Nr={cs.nr}, the sweep asks for nr={cfg.nr}")
    return cs


# ---------------------------------------------------------------------------------------------
# SER vs channel condition number: per-matrix errors, kept across resumed runs.
# ---------------------------------------------------------------------------------------------

PER_MATRIX_FILE = "per_matrix.npz"

#: condition-number bins as (name, lower quantile, upper quantile): the quartiles, then the worst 10% and
#: the worst 1% (overlapping the last quartile). A matrix is in a bin when
#: ``quantile(lo) < cond <= quantile(hi)`` (the lowest bin also takes ``cond == min``).
CONDITION_BINS: tuple[tuple[str, float, float], ...] = (
    ("q0-25", 0.0, 0.25), ("q25-50", 0.25, 0.5), ("q50-75", 0.5, 0.75), ("q75-100", 0.75, 1.0),
    ("top10", 0.9, 1.0), ("top1", 0.99, 1.0))


def condition_numbers(H: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    """2-norm condition number ``sigma_max / sigma_min`` of each matrix: float64 ``[G]`` for ``H``
    ``[G, Nr, Nt]`` (computed in float64; ``inf`` where a matrix is rank-deficient)."""
    if H.dim() != 3 or H.shape[0] == 0:
        raise ValueError(f"H: expected a non-empty [G, Nr, Nt], got {list(H.shape)}")
    wide = H.to(torch.complex128 if H.is_complex() else torch.float64)
    s = torch.cat([torch.linalg.svdvals(wide[a:a + chunk]) for a in range(0, H.shape[0], chunk)]).numpy()
    with np.errstate(divide="ignore"):
        return s[:, 0] / s[:, -1]


def condition_bins(condition: np.ndarray) -> list[dict]:
    """The :data:`CONDITION_BINS` of ``condition`` ``[G]``: per bin its name, quantiles, condition-number
    edges and a boolean mask ``[G]`` of the matrices in it."""
    c = np.asarray(condition, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or np.isnan(c).any():
        raise ValueError(f"condition: expected a non-empty 1-D array without NaN, got shape {list(c.shape)}")
    finite = np.nan_to_num(c, posinf=np.finfo(np.float64).max)
    bins = []
    for name, q_lo, q_hi in CONDITION_BINS:
        lo, hi = (float(v) for v in np.quantile(finite, [q_lo, q_hi]))
        mask = (finite > lo) & (finite <= hi)
        if q_lo == 0.0:
            mask |= finite == lo
        bins.append({"name": name, "quantiles": [q_lo, q_hi], "condition": [lo, hi], "mask": mask})
    return bins


def ser_by_condition(errors: dict[str, dict[str, np.ndarray]], condition: np.ndarray,
                     symbols_per_matrix: int) -> dict:
    """SER per :data:`CONDITION_BINS` bin for each detector and SNR.

    Args:
        errors: ``errors[detector][snr_key]`` = symbol errors per matrix, int ``[G]``.
        condition: condition number per matrix ``[G]`` (:func:`condition_numbers`).
        symbols_per_matrix: symbols sent per matrix and SNR point (vectors x Nt).
    Returns:
        ``{"bins": [{name, quantiles, condition, matrices}], "ser": {det: {snr: [SER per bin]}},
        "error_share": {det: {snr: [fraction of that point's errors in the bin, None without errors]}}}``;
        a bin without matrices (small sets: the worst 1 % of 3 matrices) has SER None.
    """
    if symbols_per_matrix <= 0:
        raise ValueError(f"symbols_per_matrix: expected > 0, got {symbols_per_matrix}")
    bins = condition_bins(condition)
    out: dict = {"bins": [{k: v for k, v in b.items() if k != "mask"} | {"matrices": int(b["mask"].sum())}
                          for b in bins],
                 "ser": {}, "error_share": {}}
    for det, pts in errors.items():
        for snr, e in pts.items():
            e = np.asarray(e, dtype=np.int64)
            if e.shape != condition.shape:
                raise ValueError(f"errors[{det!r}][{snr!r}]: expected {list(condition.shape)} matrices, "
                                 f"got {list(e.shape)}")
            total = int(e.sum())
            out["ser"].setdefault(det, {})[snr] = [
                float(e[b["mask"]].sum() / (b["mask"].sum() * symbols_per_matrix)) if b["mask"].any() else None
                for b in bins]
            out["error_share"].setdefault(det, {})[snr] = [
                float(e[b["mask"]].sum() / total) if total else None for b in bins]
    return out


def save_per_matrix(path: Path, errors: dict[str, dict[str, np.ndarray]], condition: np.ndarray,
                    symbols_per_matrix: int) -> None:
    """Writes ``per_matrix.npz`` atomically.

    Arrays: ``detectors`` (str ``[D]``), ``snr_db`` (float64 ``[S]``, ascending), ``errors`` (int32
    ``[D, S, G]``: symbol errors per matrix, -1 where that (detector, SNR) point was not run),
    ``condition`` (float64 ``[G]``) and ``symbols_per_matrix`` (int64 scalar).
    """
    dets = list(errors)
    snrs = sorted({float(k) for pts in errors.values() for k in pts})
    grid = np.full((len(dets), len(snrs), condition.shape[0]), -1, dtype=np.int32)
    for i, det in enumerate(dets):
        for j, snr in enumerate(snrs):
            if snr_key(snr) in errors[det]:
                grid[i, j] = errors[det][snr_key(snr)]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, detectors=np.array(dets, dtype=str), snr_db=np.array(snrs, dtype=np.float64),
                            errors=grid, condition=condition.astype(np.float64),
                            symbols_per_matrix=np.int64(symbols_per_matrix))
    os.replace(tmp, path)


def load_per_matrix(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray, int]:
    """Reads :func:`save_per_matrix`'s file: (``errors[detector][snr_key]`` int64 ``[G]``, condition
    ``[G]``, symbols per matrix); points stored as -1 are left out."""
    with np.load(path) as d:
        dets, snrs, grid = [str(v) for v in d["detectors"]], d["snr_db"], d["errors"]
        condition, spm = d["condition"], int(d["symbols_per_matrix"])
    if grid.shape != (len(dets), len(snrs), condition.shape[0]):
        raise ValueError(f"{path}: errors has shape {list(grid.shape)}, expected "
                         f"[{len(dets)}, {len(snrs)}, {condition.shape[0]}]")
    errors: dict[str, dict[str, np.ndarray]] = {}
    for i, det in enumerate(dets):
        for j, snr in enumerate(snrs):
            if (grid[i, j] >= 0).all():
                errors.setdefault(det, {})[snr_key(snr)] = grid[i, j].astype(np.int64)
    return errors, condition, spm


def prepare_detector(name: str, cfg: SweepConfig, cs: ChannelSet, models: Path, training: dict, log: Log):
    """Builds detector ``name`` for the sweep ``cfg`` on channel set ``cs``.

    Trainable detectors are trained (MMNet-iid / OAMPNet offline on fresh i.i.d. channels, MMNet and
    OAMPNet-online per channel of ``cs``, the channels the detectors will see) and saved under ``models``,
    or loaded from there when a previous run saved them; what the training cost is added to
    ``training[name]``.
    """
    if name in ("mmnet_iid", "oampnet"):
        det = MMNetIID(layers=cfg.layers, nr=cfg.nr) if name == "mmnet_iid" else OAMP(iterations=cfg.layers,
                                                                                        name="oampnet")
        path = models / f"{name}.pt"
        if path.is_file():
            state = torch.load(path)
            if name == "mmnet_iid":
                det.load_state_dict(state)
            else:
                det.gamma, det.theta = state["gamma"], state["theta"]
            return det
        ocfg = OfflineConfig(nr=cfg.nr, nt=cfg.nt, modulation=cfg.modulation, snr_db=cfg.training_range(),
                             iterations=cfg.offline_iterations, seed=cfg.seed + 17)
        t0 = time.perf_counter()
        losses = train_offline(det, ocfg)
        training[name] = {"iterations": cfg.offline_iterations, "seconds": time.perf_counter() - t0,
                          "final_loss": float(np.mean(losses[-50:])), "snr_db": list(ocfg.snr_db),
                          "channels": "fresh i.i.d. Rayleigh per iteration"}
        log(f"  trained {name}: {cfg.offline_iterations} iterations, loss {training[name]['final_loss']:.4f}, "
            f"{training[name]['seconds']:.1f} s")
        torch.save(det.state_dict() if name == "mmnet_iid" else {"gamma": det.gamma, "theta": det.theta}, path)
        return det
    if name == "mmnet":
        path = models / "mmnet_online.pt"
        if path.is_file():
            return OnlineResult.load(path).detector()
        seq = cs.sequences()  # [S, K, F, Nr, Nt]
        ocfg = cfg.online_config()
        res = train_online(seq, ocfg)
        res.save(path)
        channel_iterations = int(res.iterations.sum()) * int(seq.shape[0])
        training["mmnet"] = {"iterations_per_channel": res.iterations_per_channel, "seconds": res.seconds,
                             "sequences": int(seq.shape[0]), "time_steps": int(seq.shape[1]),
                             "subcarriers": int(seq.shape[2]),
                             "psi": cfg.online_psi, "phi": cfg.online_phi, "batch": cfg.online_batch,
                             "warm_start": cfg.online_warm_start, "order": cfg.online_order,
                             "phi_time": cfg.online_phi_time, "lr_time": cfg.online_lr_time,
                             "linear_stage": cfg.online_linear_stage, "lr_scalars": cfg.online_lr_scalars,
                             "ms_per_channel_iteration": (1e3 * res.seconds / channel_iterations
                                                         if channel_iterations else None),
                             "snr_db": list(ocfg.snr_db), "final_loss_mean": float(res.final_loss.mean())}
        log(f"  trained mmnet online: {res.iterations_per_channel:.2f} iterations per channel, {res.seconds:.1f} s")
        return res.detector()
    if name == "oampnet_online":
        path = models / "oampnet_online.pt"
        if path.is_file():
            return OAMPNetOnlineResult.load(path).detector()
        ocfg = OAMPNetOnlineConfig(modulation=cfg.modulation, snr_db=cfg.training_range(), layers=cfg.layers,
                                   iterations=cfg.oampnet_online_iterations, batch=cfg.online_batch,
                                   seed=cfg.seed + 31, threads=cfg.threads, parallel=cfg.chunk_matrices)
        H = cs.flat()
        ores = train_oampnet_online(H, ocfg)
        ores.save(path)
        g = H.shape[0]
        training[name] = {"iterations_per_channel": ores.iterations_per_channel, "seconds": ores.seconds,
                          "ms_per_channel_iteration": 1e3 * ores.seconds / max(1, g * ocfg.iterations),
                          "channels": g, "batch": ocfg.batch, "snr_db": list(ocfg.snr_db), "lr": ocfg.lr,
                          "start": "OAMP (gamma = theta = 1) on every channel",
                          "channels_per_graph": min(g, ocfg.parallel),
                          # over the first / last (up to) 10 iterations: one batch is noisy
                          "initial_loss_mean": float(ores.loss[:10].mean()) if ocfg.iterations else None,
                          "final_loss_mean": float(ores.loss[-10:].mean()) if ocfg.iterations else None}
        log(f"  trained oampnet online: {ocfg.iterations} iterations per channel, {ores.seconds:.1f} s")
        return ores.detector()
    return make_detector(name, layers=cfg.layers, kbest_k=cfg.kbest_k, ml_node_budget=cfg.ml_node_budget)


def run_sweep(cfg: SweepConfig, out_dir: Union[str, Path], log: Log = print, plots: bool = True,
              redo: Sequence[str] = ()) -> dict:
    """Runs (or resumes) the sweep into ``out_dir``; returns the results dictionary.

    ``redo`` names detectors whose finished points are dropped and measured again (after a detector's code
    changed); the other detectors' points stay, and the data is the same (it depends on the seed and SNR only).

    Raises ValueError before any work when the config is invalid, ``out_dir`` holds a different sweep or a
    ``redo`` name is not one of ``cfg.detectors``.
    """
    cfg.validate()
    unknown = [n for n in redo if n not in cfg.detectors]
    if unknown:
        raise ValueError(f"redo: {unknown} are not detectors of this sweep ({cfg.detectors})")
    run = RunFolder(out_dir, asdict(cfg), free=("detectors", "snr_db"), defaults=asdict(SweepConfig()))
    out, pm_path = run.path, run.file(PER_MATRIX_FILE)
    cs = load_set(cfg)
    cs_known = estimated_set(cs, cfg.csi_error, cfg.seed)  # what the detectors see (cs itself without error)
    run.start()
    (out / "models").mkdir(exist_ok=True)
    results = run.load_results()
    results.setdefault("points", {})
    results.setdefault("training", {})
    for name in redo:
        dropped = results["points"].pop(name, None)
        if dropped:
            log(f"re-measuring {name}: dropped its {len(dropped)} finished point(s)")
    H = cs.flat()  # the data goes over the true channels
    H_known = cs_known.flat()
    g_total = H.shape[0]
    seq_shape = tuple(cs.sequences().shape[:3])  # (S, K, F) in flat() order
    per_matrix_symbols = cfg.vectors_per_matrix * cfg.nt * (2 if cfg.count == "real" else 1)
    condition = condition_numbers(H)
    per_matrix: dict[str, dict[str, np.ndarray]] = {}
    if pm_path.is_file():
        per_matrix, old_condition, old_spm = load_per_matrix(pm_path)
        if old_spm != per_matrix_symbols or not np.allclose(old_condition, condition, rtol=1e-6):
            raise ValueError(f"{pm_path} belongs to other channels or another vector count; use another folder")
        for name in redo:
            per_matrix.pop(name, None)
    log(f"channel set {cs.source}: {g_total} matrices {cs.nr}x{cs.nt}, QAM{cfg.modulation}, "
        f"{cfg.vectors_per_matrix} vectors per matrix"
        + (f", detectors see H + E with E ~ CN(0, {cfg.csi_error:g})" if cfg.csi_error else ""))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        dets = {}
        for name in cfg.detectors:
            pending = [s for s in cfg.snr_db if snr_key(s) not in results["points"].get(name, {})]
            if pending:
                dets[name] = prepare_detector(name, cfg, cs_known, out / "models", results["training"], log)
        run.save_results(results)
        work = sum(1 for s in cfg.snr_db for n in dets if snr_key(s) not in results["points"].get(n, {}))
        bar = Progress("SER sweep", work * g_total, "matrices")
        for snr in cfg.snr_db:
            todo = [n for n in dets if snr_key(snr) not in results["points"].get(n, {})]
            if not todo:
                continue
            gen = snr_generator(cfg.seed, snr)
            errs = {n: torch.zeros(g_total, dtype=torch.long) for n in todo}
            secs = {n: 0.0 for n in todo}
            for a in range(0, g_total, cfg.chunk_matrices):
                b = min(g_total, a + cfg.chunk_matrices)
                batch = sample_batch(H[a:b], snr, cfg.modulation, cfg.vectors_per_matrix, gen)
                for n in todo:
                    det = dets[n].for_channels(a, b) if hasattr(dets[n], "for_channels") else dets[n]
                    t0 = time.perf_counter()
                    _, idx = det(H_known[a:b], batch.y, batch.sigma2, cfg.modulation)
                    secs[n] += time.perf_counter() - t0
                    errs[n][a:b] = count_errors(idx, batch.indices, cfg.modulation, cfg.count)
                    bar.advance(b - a, f"{n} @ {snr:g} dB")
            for n in todo:
                e = int(errs[n].sum())
                sym = g_total * per_matrix_symbols
                pm = errs[n].double().numpy() / per_matrix_symbols
                point = {"errors": e, "symbols": sym, "vectors": g_total * cfg.vectors_per_matrix, "ser": e / sym,
                         "ci95": list(wilson_interval(e, sym)), "seconds": secs[n],
                         "us_per_vector": 1e6 * secs[n] / (g_total * cfg.vectors_per_matrix),
                         "per_matrix_ser_p50": float(np.percentile(pm, 50)),
                         "per_matrix_ser_p90": float(np.percentile(pm, 90)),
                         "per_matrix_ser_p99": float(np.percentile(pm, 99)),
                         "matrices_with_errors": int((errs[n] > 0).sum())}
                if seq_shape[1] > 1:  # SER per time-step index (over sequences and subcarriers)
                    per_k = errs[n].reshape(seq_shape).sum((0, 2)).double() / (per_matrix_symbols * seq_shape[0]
                                                                                * seq_shape[2])
                    point["ser_per_time_step"] = [float(v) for v in per_k]
                if isinstance(dets[n], SphereDecoder):
                    st = dets[n].stats
                    point.update(ml_fallbacks=st.fallbacks, ml_nodes_per_vector=st.nodes / max(st.vectors, 1))
                    dets[n].stats = type(st)()
                results["points"].setdefault(n, {})[snr_key(snr)] = point
                per_matrix.setdefault(n, {})[snr_key(snr)] = errs[n].numpy().astype(np.int64)
                log(f"  {n:10s} SNR {snr:5.1f} dB  SER {e / sym:.3e}  ({e} / {sym} symbols, "
                    f"{point['us_per_vector']:.1f} us/vector)")
            # per-matrix errors first: a point in results.json always has them on disk
            save_per_matrix(pm_path, _finished(per_matrix, results), condition, per_matrix_symbols)
            run.save_results(results)
        bar.close()
    finally:
        torch.set_num_threads(previous_threads)
    results["summary"] = summarize(results, cfg)
    finished = _finished(per_matrix, results)
    results["ser_by_condition"] = ser_by_condition(finished, condition, per_matrix_symbols)
    missing = sorted(f"{n}@{k}" for n, pts in results["points"].items() for k in pts
                     if k not in finished.get(n, {}))
    if missing:  # points of a run made before per-matrix errors were kept
        results["ser_by_condition"]["points_without_per_matrix_errors"] = missing
    if finished:
        save_per_matrix(pm_path, finished, condition, per_matrix_symbols)
    run.save_results(results)
    run.finish()
    if plots:
        plot_results(results, cfg, out)
        plot_condition(results, cfg, out)
    return results


def _finished(per_matrix: dict[str, dict[str, np.ndarray]], results: dict) -> dict[str, dict[str, np.ndarray]]:
    """The per-matrix errors of the points that ``results`` lists as finished."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for n, pts in results["points"].items():
        for k in pts:
            if k in per_matrix.get(n, {}):
                out.setdefault(n, {})[k] = per_matrix[n][k]
    return out


def summarize(results: dict, cfg: SweepConfig) -> dict:
    """Per detector: SNR at ``cfg.target_ser``, gap to ML (or to the best detector), complexity."""
    summary: dict = {}
    for name, pts in results["points"].items():
        snrs = [float(k) for k in pts]
        sers = [pts[k]["ser"] for k in pts]
        summary[name] = {"snr_at_target": snr_at_ser(snrs, sers, cfg.target_ser), "target_ser": cfg.target_ser,
                         "snr_below_target": snr_upper_bound(snrs, sers, cfg.target_ser),
                         "symbols_per_point": max(p["symbols"] for p in pts.values())}
    ref_name = "ml" if summary.get("ml", {}).get("snr_at_target") is not None else None
    reached = {n: s["snr_at_target"] for n, s in summary.items() if s["snr_at_target"] is not None}
    ref = reached.get("ml") if ref_name else (min(reached.values()) if reached else None)
    for name, s in summary.items():
        s["gap_reference"] = ref_name or "best detector in this sweep"
        s["gap_db"] = None if ref is None or s["snr_at_target"] is None else s["snr_at_target"] - ref
        train = results.get("training", {}).get(name, {})
        nodes = [p.get("ml_nodes_per_vector", 0.0) for p in results["points"][name].values()]
        c = multiplications(name, cfg.nr, cfg.nt, cfg.modulation, cfg.vectors_per_matrix,
                            layers=cfg.layers, kbest_k=cfg.kbest_k,
                            training_iterations=train.get("iterations_per_channel", 0.0), batch=cfg.online_batch,
                            sphere_nodes=float(np.mean(nodes)) if nodes else 0.0)
        s["complexity"] = c.as_dict()
    return summary


def plot_results(results: dict, cfg: SweepConfig, out: Path) -> None:
    """``ser.png`` (SER vs SNR with 95% intervals) and ``gap.png`` (SNR gap at the target SER)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, pts in results["points"].items():
        items = sorted((float(k), v) for k, v in pts.items())
        s = [k for k, _ in items]
        e = np.array([max(v["ser"], 1e-7) for _, v in items])
        lo = np.array([v["ci95"][0] for _, v in items])
        hi = np.array([v["ci95"][1] for _, v in items])
        ax.errorbar(s, e, yerr=[np.clip(e - lo, 0, None), np.clip(hi - e, 0, None)], marker="o", ms=3, capsize=2,
                    label=name)
    ax.axhline(cfg.target_ser, color="gray", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("symbol error rate")
    src = "i.i.d." if cfg.channels == "iid" else Path(cfg.channels).stem
    ax.set_title(f"{src} {cfg.nr}x{cfg.nt} QAM{cfg.modulation}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out / "ser.png")
    summary = results.get("summary", {})
    gaps = {n: s["gap_db"] for n, s in summary.items() if s.get("gap_db") is not None}
    if gaps:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(list(gaps), list(gaps.values()))
        ax.set_ylabel(f"gap at SER {cfg.target_ser:g} (dB)")
        ax.set_title(f"gap to {next(iter(summary.values()))['gap_reference']}")
        save_figure(fig, out / "gap.png")


def condition_plot_snrs(results: dict, target: float, count: int = 2) -> list[str]:
    """Up to ``count`` SNR keys of ``results["ser_by_condition"]`` whose SER (geometric mean over the
    detectors with errors there) is closest to ``target`` in log10, in ascending SNR order."""
    sbc = results.get("ser_by_condition", {}).get("ser", {})
    keys = sorted({k for pts in sbc.values() for k in pts}, key=float)
    score = {}
    for k in keys:
        sers = [results["points"][n][k]["ser"] for n in sbc if k in sbc[n]]
        logs = [math.log10(e) for e in sers if e > 0]
        if logs:
            score[k] = abs(float(np.mean(logs)) - math.log10(target))
    best = sorted(score, key=score.get)[:count]
    return sorted(best, key=float)


def plot_condition(results: dict, cfg: SweepConfig, out: Path) -> None:
    """``ser_vs_condition.png``: SER per condition-number bin, one line per detector, at the (up to two)
    SNRs whose SER is nearest ``cfg.target_ser``; nothing when no point has errors."""
    snrs = condition_plot_snrs(results, cfg.target_ser)
    if not snrs:
        return
    plt = pyplot()

    sbc = results["ser_by_condition"]
    labels = [f"{b['name']}\n{b['condition'][0]:.3g}-{b['condition'][1]:.3g}" for b in sbc["bins"]]
    fig, axes = plt.subplots(1, len(snrs), figsize=(5.5 * len(snrs), 4.2), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], snrs):
        for n, pts in sbc["ser"].items():
            if k in pts:
                ax.plot(range(len(labels)), [v if v is not None and v > 0 else np.nan for v in pts[k]], marker="o",
                        ms=3, label=n)
        ax.axhline(cfg.target_ser, color="gray", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlabel("condition-number bin (quantiles of the set; values)")
        ax.set_title(f"SNR {k} dB")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("symbol error rate (0: not drawn)")
    axes[0][0].legend(fontsize=8)
    src = "i.i.d." if cfg.channels == "iid" else Path(cfg.channels).stem
    fig.suptitle(f"SER vs condition number, {src} {cfg.nr}x{cfg.nt} QAM{cfg.modulation}", fontsize=10)
    save_figure(fig, out / "ser_vs_condition.png")
