"""Per-layer noise analysis of MMNet: is the denoiser told the right noise level, and is the noise Gaussian?

For each layer t of a trained MMNet (full ``A_t`` and ``theta2_t``), on vectors with known symbols:

* ``linear_mse``: the measured ``E|z_t - x|^2`` per symbol after the linear stage
  ``z_t = x_t + A_t (y - H x_t)`` (what the denoiser sees),
* ``estimated_var``: the mean of the layer's own estimate ``v_t`` (module docstring of
  :mod:`edgert.ops.mmnet`) that the denoiser uses as that variance,
* ``denoiser_mse``: ``E|x_{t+1} - x|^2`` after the denoiser.

A ratio ``estimated_var / linear_mse`` far below 1 means an over-confident denoiser (hard decisions
too early, errors propagate); far above 1 an over-cautious one.

The denoiser is the posterior mean for ``z_t = x + e_t`` with ``e_t ~ CN(0, v_t)``. :func:`layer_gaussianity`
measures how Gaussian ``e_t = z_t - x`` is (excess kurtosis, Kolmogorov-Smirnov distance and
Anderson-Darling statistic against N(0, 1)) for
any detector that exposes its per-layer denoiser inputs; :func:`mmnet_denoiser_inputs` gives them for
MMNet-style parameters. :func:`run_analysis` (``edgert mimo analyze``) puts both together on a channel set.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from edgert.harness import RunFolder
from edgert.harness.plots import pyplot, save_figure
from edgert.mimo.channels import ChannelSet, sample_batch
from edgert.mimo.evaluate import SweepConfig, load_set, prepare_detector, snr_generator, snr_key
from edgert.mimo.online import OnlineResult
from edgert.ops.mmnet import MMNetLayer, hard_decision, mmnet_layers_reference

Log = Callable[[str], None]


def _check_mmnet_inputs(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, A: torch.Tensor,
                        theta2: torch.Tensor) -> None:
    if H.dim() != 3:
        raise ValueError(f"H: expected [G, Nr, Nt], got {list(H.shape)}")
    g, nr, nt = H.shape
    if y.dim() != 3 or y.shape[0] != g or y.shape[2] != nr:
        raise ValueError(f"y: expected [G={g}, B, Nr={nr}], got {list(y.shape)}")
    if sigma2.shape != (g,):
        raise ValueError(f"sigma2: expected [G={g}], got {list(sigma2.shape)}")
    if A.dim() != 4 or A.shape[1:] != (g, nt, nr):
        raise ValueError(f"A: expected [T, G={g}, Nt={nt}, Nr={nr}], got {list(A.shape)}")
    if theta2.shape != (A.shape[0], g, nt):
        raise ValueError(f"theta2: expected [T={A.shape[0]}, G={g}, Nt={nt}], got {list(theta2.shape)}")


def _mmnet_layers(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, A: torch.Tensor, theta2: torch.Tensor,
                  modulation: int) -> Iterator[MMNetLayer]:
    """Per layer ``(z_t, v_t, x_{t+1})`` of the MMNet reference (:func:`edgert.ops.mmnet.mmnet_layers_reference`),
    without gradients, after checking the shapes."""
    _check_mmnet_inputs(H, y, sigma2, A, theta2)
    with torch.no_grad():
        yield from mmnet_layers_reference(H, y, sigma2, theta2, A=A, modulation=modulation)


def layer_noise(H: torch.Tensor, y: torch.Tensor, x: torch.Tensor, sigma2: torch.Tensor, A: torch.Tensor,
                theta2: torch.Tensor, modulation: int) -> dict[str, list[float]]:
    """Per-layer ``linear_mse``, ``estimated_var`` and ``denoiser_mse`` (lists of T floats), averaged over all
    channels, vectors and users.

    Shapes as :func:`edgert.ops.mmnet_detect`: ``H`` ``[G, Nr, Nt]``, ``y`` ``[G, B, Nr]``, ``x`` (sent symbols)
    ``[G, B, Nt]``, ``sigma2`` ``[G]``, ``A`` ``[T, G, Nt, Nr]``, ``theta2`` ``[T, G, Nt]``.
    """
    _check_mmnet_inputs(H, y, sigma2, A, theta2)
    if x.shape != y.shape[:-1] + (H.shape[2],):
        raise ValueError(f"x: expected {list(y.shape[:-1]) + [H.shape[2]]}, got {list(x.shape)}")
    return _noise_power(_mmnet_layers(H, y, sigma2, A, theta2, modulation), x)


def _noise_power(layers: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                 x: torch.Tensor) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"linear_mse": [], "estimated_var": [], "denoiser_mse": []}
    for z, v, est in layers:
        out["linear_mse"].append(float(((z - x).abs() ** 2).mean()))
        out["estimated_var"].append(float(v.mean()))
        out["denoiser_mse"].append(float(((est - x).abs() ** 2).mean()))
    return out


def mmnet_denoiser_inputs(H: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, A: torch.Tensor,
                          theta2: torch.Tensor, modulation: int) -> torch.Tensor:
    """The denoiser input ``z_t`` of every MMNet layer: complex ``[T, G, B, Nt]`` (shapes as :func:`layer_noise`)."""
    return torch.stack([z for z, _, _ in _mmnet_layers(H, y, sigma2, A, theta2, modulation)])


def mmnet_iid_operators(theta1: torch.Tensor, theta2: torch.Tensor,
                        H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MMNet-iid's parameters (``theta1``, ``theta2`` ``[T]``) in the full form for channels ``H`` ``[G, Nr, Nt]``:
    ``A_t = theta1_t H^H`` complex ``[T, G, Nt, Nr]`` and ``theta2`` float32 ``[T, G, Nt]``."""
    if theta1.dim() != 1 or theta1.shape != theta2.shape:
        raise ValueError(f"theta1, theta2: expected two [T] tensors, got {list(theta1.shape)}, {list(theta2.shape)}")
    g, _, nt = H.shape
    A = theta1.detach()[:, None, None, None].to(H.dtype) * H.mH.unsqueeze(0)
    return A.contiguous(), theta2.detach()[:, None, None].expand(-1, g, nt).to(torch.float32).contiguous()


def ks_normal(samples: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance ``sup |F_n - Phi|`` of real ``samples`` (any shape) against N(0, 1)."""
    s = torch.sort(samples.reshape(-1).to(torch.float64)).values
    n = s.numel()
    if n == 0:
        raise ValueError("ks_normal: no samples")
    cdf = torch.special.ndtr(s)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


def ad_normal(samples: torch.Tensor) -> float:
    """Anderson-Darling statistic ``A^2`` of real ``samples`` (any shape) against N(0, 1).

    ``A^2 = -n - (1/n) sum_i (2i - 1) [ln Phi(s_i) + ln(1 - Phi(s_(n+1-i)))]`` over the sorted samples. It
    weighs the tails, where the KS distance is least sensitive. 5 % critical values: 2.49 when N(0, 1) is
    specified in advance (``w`` below); ``0.752 / (1 + 0.75/n + 2.25/n^2)`` when the samples were
    standardized with their own mean and standard deviation (the pooled statistics), as in
    ``scipy.stats.anderson``.
    """
    s = torch.sort(samples.reshape(-1).to(torch.float64)).values
    n = s.numel()
    if n == 0:
        raise ValueError("ad_normal: no samples")
    i = torch.arange(1, n + 1, dtype=torch.float64)
    terms = (2 * i - 1) * (torch.special.log_ndtr(s) + torch.special.log_ndtr(-s.flip(0)))
    return float(-n - terms.sum() / n)


def noise_stats(e: torch.Tensor, var: Optional[torch.Tensor] = None) -> dict[str, float]:
    """Gaussianity of complex noise samples ``e`` (any shape, at least 2 samples).

    Returns ``variance`` (``E|e|^2``, the mean removed), ``kurtosis_re`` / ``kurtosis_im`` (excess kurtosis
    ``m4 / m2^2 - 3`` of the real / imaginary parts: 0 for a Gaussian, -1.2 for a uniform, -1.36 for
    uniform 4-PAM), ``ks_re`` / ``ks_im`` (:func:`ks_normal` of the standardized parts) and ``ad_re`` /
    ``ad_im`` (:func:`ad_normal` of the same, the tail-weighted test). These pool all
    samples, so noise that is Gaussian with a variance varying from sample to sample (channels, users)
    shows a positive kurtosis too.

    With ``var`` (real, the shape of ``e``: the variance ``E|e|^2`` each sample is assumed to have, e.g. a
    denoiser's ``v_t``) also ``w = Re(e) / sqrt(var / 2)``: ``scaled_power_re`` (``E w^2``, 1 when ``var``
    is right on average), ``kurtosis_re_scaled``, ``ks_re_scaled`` and ``ad_re_scaled`` (``w`` against N(0, 1)
    as it is, not re-standardized): whether each sample is Gaussian with the variance it was assigned.
    """
    if not e.is_complex():
        raise ValueError(f"e: expected complex samples, got {e.dtype}")
    if e.numel() < 2:
        raise ValueError(f"e: expected at least 2 samples, got {e.numel()}")
    if var is not None and (var.shape != e.shape or var.is_complex() or not bool((var > 0).all())):
        raise ValueError(f"var: expected positive real values of shape {list(e.shape)}, got {var.dtype} "
                         f"{list(var.shape)}")
    e = e.reshape(-1).to(torch.complex128)
    out: dict[str, float] = {"variance": float(((e - e.mean()).abs() ** 2).mean())}
    for part, values in (("re", e.real), ("im", e.imag)):
        c = values - values.mean()
        m2 = float((c ** 2).mean())
        if m2 <= 0:
            out[f"kurtosis_{part}"] = out[f"ks_{part}"] = out[f"ad_{part}"] = math.nan
            continue
        out[f"kurtosis_{part}"] = float((c ** 4).mean()) / m2 ** 2 - 3.0
        out[f"ks_{part}"] = ks_normal(c / math.sqrt(m2))
        out[f"ad_{part}"] = ad_normal(c / math.sqrt(m2))
    if var is not None:
        w = e.real / torch.sqrt(var.reshape(-1).to(torch.float64) / 2)
        p2 = float((w ** 2).mean())
        out["scaled_power_re"] = p2
        out["kurtosis_re_scaled"] = float((w ** 4).mean()) / p2 ** 2 - 3.0 if p2 > 0 else math.nan
        out["ks_re_scaled"] = ks_normal(w)
        out["ad_re_scaled"] = ad_normal(w)
    return out


def layer_gaussianity(z: Union[torch.Tensor, Sequence[torch.Tensor]], x: torch.Tensor,
                      var: Optional[Union[torch.Tensor, Sequence[torch.Tensor]]] = None) -> dict[str, list[float]]:
    """:func:`noise_stats` of ``e_t = z_t - x`` per layer, for any detector exposing its denoiser inputs.

    Args:
        z: per-layer denoiser inputs, complex ``[T, G, B, Nt]`` or a sequence of T ``[G, B, Nt]`` tensors
            (e.g. :func:`mmnet_denoiser_inputs`).
        x: sent symbols ``[G, B, Nt]``.
        var: optional per-layer variances the denoiser assumed for ``z_t`` (same layout as ``z``, real).
    Returns:
        lists of T floats under the keys of :func:`noise_stats`.
    """
    layers = list(z.unbind(0)) if isinstance(z, torch.Tensor) else list(z)
    if not layers:
        raise ValueError("z: expected at least one layer")
    vs = [None] * len(layers) if var is None else (list(var.unbind(0)) if isinstance(var, torch.Tensor) else list(var))
    if len(vs) != len(layers):
        raise ValueError(f"var: expected {len(layers)} layers, got {len(vs)}")
    out: dict[str, list[float]] = {}
    for t, (z_t, v_t) in enumerate(zip(layers, vs)):
        if z_t.shape != x.shape:
            raise ValueError(f"z[{t}]: expected the shape of x {list(x.shape)}, got {list(z_t.shape)}")
        for k, v in noise_stats(z_t - x, v_t).items():
            out.setdefault(k, []).append(v)
    return out


# ---------------------------------------------------------------------------------------------
# ``edgert mimo analyze``: per-layer noise power and Gaussianity on a channel set.
# ---------------------------------------------------------------------------------------------

@dataclass
class AnalysisConfig:
    """One per-layer noise analysis of MMNet.

    Attributes:
        channels: ``"iid"`` (``matrices`` i.i.d. Rayleigh matrices from ``seed``) or a channel ``.npz``.
        snr_db: SNR points (dB), as in :class:`edgert.mimo.evaluate.SweepConfig`.
        vectors_per_matrix: vectors per matrix and SNR point.
        model: ``None`` (MMNet-iid, trained offline on fresh i.i.d. channels for ``offline_iterations`` over
            ``train_snr_db``, default the ``snr_db`` range) or an online MMNet saved by a sweep
            (``models/mmnet_online.pt``) trained on the same channel file.
        chunk_matrices: matrices per forward pass (bounds memory).
    """

    channels: str = "iid"
    nr: int = 64
    nt: int = 16
    modulation: int = 16
    snr_db: list[float] = field(default_factory=lambda: [12.0])
    matrices: int = 64
    vectors_per_matrix: int = 32
    layers: int = 10
    offline_iterations: int = 300
    train_snr_db: Optional[list[float]] = None
    model: Optional[str] = None
    seed: int = 0
    chunk_matrices: int = 64
    threads: int = 1

    def sweep_config(self) -> SweepConfig:
        """The equivalent one-detector sweep (shares channel loading, training and its validation)."""
        return SweepConfig(detectors=["mmnet_iid" if self.model is None else "mmnet"], channels=self.channels,
                           nr=self.nr, nt=self.nt, modulation=self.modulation, snr_db=list(self.snr_db),
                           matrices=self.matrices, vectors_per_matrix=self.vectors_per_matrix, seed=self.seed,
                           layers=self.layers, chunk_matrices=self.chunk_matrices, train_snr_db=self.train_snr_db,
                           offline_iterations=self.offline_iterations, threads=self.threads)

    def validate(self) -> None:
        """Rejects bad input before any work starts (ValueError naming the problem)."""
        self.sweep_config().validate()
        if self.offline_iterations <= 0 and self.model is None:
            raise ValueError(f"offline_iterations: expected > 0, got {self.offline_iterations}")
        if self.model is not None:
            if self.channels == "iid":
                raise ValueError("model: an online MMNet belongs to a channel file; pass channels=<the .npz>")
            if not Path(self.model).is_file():
                raise ValueError(f"model: expected an existing mmnet_online.pt, got {self.model!r}")


def _load_model(cfg: AnalysisConfig, sweep: SweepConfig, cs: ChannelSet, out: Path, training: dict,
                log: Log) -> tuple[Callable[[int, int], tuple[torch.Tensor, torch.Tensor]], str]:
    """``params(a, b)`` -> (A, theta2) for matrices ``a:b`` of ``H``, and the model's description."""
    H = cs.flat()
    if cfg.model is not None:
        det = OnlineResult.load(cfg.model).detector()
        if det.A.shape[1:] != (H.shape[0], cfg.nt, cfg.nr):
            raise ValueError(f"model {cfg.model}: A is [T, G, Nt, Nr] = {list(det.A.shape)}, the channel set has "
                             f"G={H.shape[0]}, Nt={cfg.nt}, Nr={cfg.nr}")
        return (lambda a, b: (det.A[:, a:b], det.theta2[:, a:b])), f"online MMNet from {cfg.model}"
    det = prepare_detector("mmnet_iid", sweep, cs, out / "models", training, log)
    return (lambda a, b: mmnet_iid_operators(det.theta1, det.theta2, H[a:b])), "MMNet-iid (offline, i.i.d.)"


def run_analysis(cfg: AnalysisConfig, out_dir: Union[str, Path], log: Log = print, plots: bool = True) -> dict:
    """Trains (or loads) the model, then per SNR point: SER of the last layer, :func:`layer_noise` and
    :func:`layer_gaussianity` over all matrices. Writes ``config.json``, ``results.json``, ``models/`` and
    ``noise.png`` into ``out_dir``; returns the results dictionary.

    Raises ValueError before any work when the config is invalid or ``out_dir`` holds a different analysis
    (``snr_db`` may change between runs; the trained model is reused).
    """
    cfg.validate()
    run = RunFolder(out_dir, asdict(cfg), free=("snr_db",), defaults=asdict(AnalysisConfig()))
    out = run.path
    sweep = cfg.sweep_config()
    cs = load_set(sweep)
    H = cs.flat()
    run.start()
    (out / "models").mkdir(exist_ok=True)
    results: dict = {"training": {}, "snr": {}}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        params, results["model"] = _load_model(cfg, sweep, cs, out, results["training"], log)
        g_total = H.shape[0]
        log(f"{results['model']}: {g_total} matrices {cfg.nr}x{cfg.nt}, QAM{cfg.modulation}, "
            f"{cfg.vectors_per_matrix} vectors per matrix")
        for snr in cfg.snr_db:
            t0 = time.perf_counter()
            # the same transmitted data as a sweep with the same seed and SNR
            gen = snr_generator(cfg.seed, snr)
            sums: dict[str, list[float]] = {}
            errors = 0
            z_chunks: list[list[torch.Tensor]] = []
            v_chunks: list[list[torch.Tensor]] = []
            x_chunks: list[torch.Tensor] = []
            for a in range(0, g_total, cfg.chunk_matrices):
                b = min(g_total, a + cfg.chunk_matrices)
                batch = sample_batch(H[a:b], snr, cfg.modulation, cfg.vectors_per_matrix, gen)
                A, theta2 = params(a, b)
                layers = list(_mmnet_layers(H[a:b], batch.y, batch.sigma2, A, theta2, cfg.modulation))
                for k, v in _noise_power(layers, batch.x).items():  # chunk means, weighted by matrices
                    sums[k] = [s + (b - a) * u for s, u in zip(sums.get(k, [0.0] * len(v)), v)]
                z_chunks.append([z for z, _, _ in layers])
                v_chunks.append([v for _, v, _ in layers])
                x_chunks.append(batch.x)
                errors += int((hard_decision(layers[-1][2], cfg.modulation) != batch.indices).sum())
            stats = {k: [s / g_total for s in v] for k, v in sums.items()}
            stats["estimate_over_measured"] = [v / m for v, m in zip(stats["estimated_var"], stats["linear_mse"])]
            z_all = [torch.cat([chunk[t] for chunk in z_chunks]) for t in range(len(z_chunks[0]))]
            v_all = [torch.cat([chunk[t] for chunk in v_chunks]) for t in range(len(v_chunks[0]))]
            del z_chunks, v_chunks
            stats.update(layer_gaussianity(z_all, torch.cat(x_chunks), v_all))
            del z_all, v_all
            symbols = g_total * cfg.vectors_per_matrix * cfg.nt
            results["snr"][snr_key(snr)] = {"ser": errors / symbols, "errors": errors, "symbols": symbols,
                                            "samples_per_layer": symbols, "layers": stats,
                                            "seconds": time.perf_counter() - t0}
            log(f"SNR {snr:g} dB: SER {errors / symbols:.3e} ({errors} / {symbols} symbols)")
            log(format_layers(stats))
    finally:
        torch.set_num_threads(previous_threads)
    run.save_results(results)
    run.finish()
    if plots:
        plot_analysis(results, cfg, out)
    return results


def format_layers(stats: dict[str, list[float]]) -> str:
    """A markdown table of the per-layer statistics of :func:`run_analysis` (``w``: the real part of the
    noise divided by the denoiser's own standard deviation ``sqrt(v_t / 2)``)."""
    cols = [("linear_mse", "E|z-x|^2"), ("estimated_var", "v_t"), ("denoiser_mse", "E|x_t+1-x|^2"),
            ("kurtosis_re", "kurt Re"), ("kurtosis_im", "kurt Im"), ("ks_re", "KS Re"), ("ks_im", "KS Im"),
            ("ad_re", "AD Re"), ("scaled_power_re", "E w^2"), ("kurtosis_re_scaled", "kurt w"),
            ("ks_re_scaled", "KS w"), ("ad_re_scaled", "AD w")]
    lines = ["| layer | " + " | ".join(c for _, c in cols) + " |", "| ---: |" + " ---: |" * len(cols)]
    for t in range(len(stats["linear_mse"])):
        lines.append(f"| {t + 1} | " + " | ".join(f"{stats[k][t]:.3g}" for k, _ in cols) + " |")
    return "\n".join(lines)


def plot_analysis(results: dict, cfg: AnalysisConfig, out: Path) -> None:
    """``noise.png``: per layer, noise power (measured after the linear stage, the layer's estimate, after
    the denoiser) and the Gaussianity of the denoiser input noise (excess kurtosis, KS distance)."""
    plt = pyplot()

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (k, r) in enumerate(sorted(results["snr"].items(), key=lambda kv: float(kv[0]))):
        s = r["layers"]
        t = np.arange(1, len(s["linear_mse"]) + 1)
        color = f"C{i}"
        ax0.plot(t, s["linear_mse"], "-o", ms=3, color=color, label=f"{k} dB: E|z_t - x|^2")
        ax0.plot(t, s["estimated_var"], "--", color=color, label=f"{k} dB: estimate v_t")
        ax0.plot(t, s["denoiser_mse"], ":s", ms=3, color=color, label=f"{k} dB: after denoiser")
        ax1.plot(t, s["kurtosis_re"], "-o", ms=3, color=color, label=f"{k} dB: excess kurtosis (Re)")
        ax1.plot(t, s["ks_re"], "--s", ms=3, color=color, label=f"{k} dB: KS distance (Re)")
        ax1.plot(t, s["kurtosis_re_scaled"], ":^", ms=3, color=color,
                 label=f"{k} dB: excess kurtosis (Re / sqrt(v_t/2))")
    layers = np.arange(1, len(next(iter(results["snr"].values()))["layers"]["linear_mse"]) + 1)
    ax0.set_xticks(layers)
    ax1.set_xticks(layers)
    ax0.set_yscale("log")
    ax0.set_xlabel("layer t")
    ax0.set_ylabel("per-symbol noise power")
    ax0.grid(True, which="both", alpha=0.3)
    ax0.legend(fontsize=7)
    ax1.axhline(0.0, color="gray", lw=0.8)
    ax1.set_xlabel("layer t")
    ax1.set_ylabel("0 for Gaussian noise")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=7)
    src = "i.i.d." if cfg.channels == "iid" else Path(cfg.channels).stem
    fig.suptitle(f"{results['model']}: denoiser input noise, {src} {cfg.nr}x{cfg.nt} QAM{cfg.modulation}",
                 fontsize=10)
    save_figure(fig, out / "noise.png")
