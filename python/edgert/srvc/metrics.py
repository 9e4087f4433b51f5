"""Quality and rate-distortion metrics: PSNR, SSIM, Bjontegaard BD-rate / BD-PSNR.

Conventions: frames are RGB ``uint8 [N, H, W, 3]`` (or one ``[H, W, 3]``), peak 255.
``psnr`` pools the squared error over **all pixels, channels and frames** before the log (so a
clip's PSNR is not the mean of per-frame PSNRs); ``psnr_per_frame`` gives the per-frame values.
``ssim`` is Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
population covariances, computed per channel over the valid region and averaged over channels
and frames (it equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)`` up to border
handling: skimage crops 5 pixels of its same-size filtered maps, this crops the same pixels).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {list(a.shape)} vs {list(b.shape)}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected [N, H, W, 3] or [H, W, 3] frames, got {list(a.shape)}")
    return a, b


def mse_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error per frame (over H, W and the 3 channels), float64 ``[N]``."""
    a, b = _pair(a, b)
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        d = a[i].astype(np.float64) - b[i].astype(np.float64)
        out[i] = np.mean(d * d)
    return out


def _psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB with the squared error pooled over all pixels, channels and frames."""
    return _psnr_from_mse(float(np.mean(mse_per_frame(a, b))))


def psnr_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB of every frame, float64 ``[N]``."""
    return np.array([_psnr_from_mse(m) for m in mse_per_frame(a, b)])


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of [H, W, C] float64 over H and W, valid region only."""
    from scipy.ndimage import correlate1d  # noqa: PLC0415

    r = g.size // 2
    y = correlate1d(correlate1d(x, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return y[r:-r, r:-r]


def ssim_per_frame(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM of every frame (mean over the valid region and the 3 channels), float64 ``[N]``."""
    a, b = _pair(a, b)
    if min(a.shape[1:3]) < 11:
        raise ValueError(f"SSIM needs frames of at least 11 x 11 pixels, got {a.shape[2]}x{a.shape[1]}")
    g = _gaussian_1d()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        x, y = a[i].astype(np.float64), b[i].astype(np.float64)
        mx, my = _filter(x, g), _filter(y, g)
        sxx = _filter(x * x, g) - mx * mx
        syy = _filter(y * y, g) - my * my
        sxy = _filter(x * y, g) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        out[i] = float(s.mean())
    return out


def ssim(a: np.ndarray, b: np.ndarray, every: int = 1) -> float:
    """Mean SSIM over frames 0, every, 2 * every, ... (see the module docstring)."""
    a, b = _pair(a, b)
    return float(np.mean(ssim_per_frame(a[::every], b[::every])))


# ---- Bjontegaard ---------------------------------------------------------------------


def _curve(rate: Sequence[float], quality: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    r, q = np.asarray(rate, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1 or r.size < 2:
        raise ValueError(f"{name}: expected >= 2 (rate, quality) points of equal length, got {r.shape} and {q.shape}")
    if np.any(r <= 0) or not np.all(np.isfinite(r)) or not np.all(np.isfinite(q)):
        raise ValueError(f"{name}: rates must be positive and finite, qualities finite")
    order = np.argsort(r)
    return r[order], q[order]


def _integral_mean(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Mean of the polynomial fit y(x) (degree min(3, points - 1)) over [lo, hi]."""
    deg = min(3, x.size - 1)
    poly = np.polyint(np.polyfit(x, y, deg))
    return (np.polyval(poly, hi) - np.polyval(poly, lo)) / (hi - lo)


def bd_rate(rate_ref: Sequence[float], psnr_ref: Sequence[float], rate_test: Sequence[float],
            psnr_test: Sequence[float]) -> Optional[float]:
    """Bjontegaard delta rate: the average bitrate change of ``test`` vs ``ref`` at equal quality, in percent.

    Fits log(rate) as a polynomial (cubic with >= 4 points, as VCEG-M33) of PSNR for each curve and
    averages the difference over the PSNR range both curves cover; returns ``100 * (exp(mean) - 1)``
    (negative = the test needs fewer bits). None when the PSNR ranges do not overlap.
    """
    r1, q1 = _curve(rate_ref, psnr_ref, "reference curve")
    r2, q2 = _curve(rate_test, psnr_test, "test curve")
    lo, hi = max(q1.min(), q2.min()), min(q1.max(), q2.max())
    if not hi > lo:
        return None
    diff = _integral_mean(q2, np.log(r2), lo, hi) - _integral_mean(q1, np.log(r1), lo, hi)
    return 100.0 * (math.exp(diff) - 1.0)


def bd_psnr(rate_ref: Sequence[float], psnr_ref: Sequence[float], rate_test: Sequence[float],
            psnr_test: Sequence[float]) -> Optional[float]:
    """Bjontegaard delta PSNR: the average quality change (dB) of ``test`` vs ``ref`` at equal bitrate.

    Fits PSNR as a polynomial of log(rate) and averages the difference over the overlapping
    log-rate range (positive = the test is better). None when the rate ranges do not overlap.
    """
    r1, q1 = _curve(rate_ref, psnr_ref, "reference curve")
    r2, q2 = _curve(rate_test, psnr_test, "test curve")
    l1, l2 = np.log(r1), np.log(r2)
    lo, hi = max(l1.min(), l2.min()), min(l1.max(), l2.max())
    if not hi > lo:
        return None
    return float(_integral_mean(l2, q2, lo, hi) - _integral_mean(l1, q1, lo, hi))
