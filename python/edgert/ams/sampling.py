"""Adaptive sampling rate (ASR) and adaptive training rate (ATR) of AMS.

**ASR.** The server scores how fast the scene changes by the phi-score of consecutive samples: the
fraction of pixels whose teacher label differs between two consecutively sampled frames. Every
``period_s`` of stream time it moves the device's sampling rate toward the rate that would give
``phi_target``: because phi grows about linearly with the time between samples (phi ~ c / r), the
rate that hits the target is ``r * mean(phi) / phi_target``; the result is clipped to
``[r_min, r_max]`` (paper: 0.1 to 1 frame per second).

**ATR.** When the sampling rate stays low the scene is nearly static and training every
``t_update`` wastes compute: the server enters *slowdown* when ``r < enter_below`` (0.25 fps) and leaves
it when ``r > exit_above`` (0.35 fps); the hysteresis keeps it from flapping. In slowdown each phase
lengthens ``t_update`` by ``step_s`` (2 s), up to ``t_update_max_s``; leaving slowdown resets it to
the base ``t_update_s`` (10 s).

Time constants are in seconds of the video's own clock (frame timestamps), so a clip replayed
faster or slower than real time behaves the same. :meth:`ASRConfig.scaled` / :meth:`ATRConfig.scaled`
compress every time constant by a factor (rates grow by its inverse) for clips much shorter than the
paper's 10-minute videos.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class ASRConfig:
    """Adaptive sampling rate. Defaults: the paper's range and period; phi_target is edgert's choice.

    Attributes:
        r_min, r_max: sampling-rate bounds in frames per second (paper: 0.1 and 1).
        r_init: the rate before the first update.
        period_s: how often the rate is updated (paper: 10 s).
        phi_target: the wanted fraction of changed labels between consecutive samples.
        enabled: False keeps ``r_init`` forever (fixed-rate ablation).
    """

    r_min: float = 0.1
    r_max: float = 1.0
    r_init: float = 1.0
    period_s: float = 10.0
    phi_target: float = 0.05
    enabled: bool = True

    def validate(self) -> None:
        if not 0 < self.r_min <= self.r_max:
            raise ValueError(f"sampling rate: expected 0 < r_min <= r_max, got [{self.r_min}, {self.r_max}]")
        if not self.r_min <= self.r_init <= self.r_max:
            raise ValueError(f"r_init {self.r_init} outside [{self.r_min}, {self.r_max}]")
        if not self.period_s > 0:
            raise ValueError(f"period_s: expected > 0, got {self.period_s}")
        if not 0 < self.phi_target < 1:
            raise ValueError(f"phi_target: expected in (0, 1), got {self.phi_target}")

    def scaled(self, factor: float) -> "ASRConfig":
        """Time constants times ``factor``, rates divided by it (``factor`` 0.1: a 10x faster clock)."""
        return dataclasses.replace(self, r_min=self.r_min / factor, r_max=self.r_max / factor,
                                   r_init=self.r_init / factor, period_s=self.period_s * factor)


@dataclass
class ATRConfig:
    """Adaptive training rate (paper: 10 s base period, +2 s per phase in slowdown, 0.25/0.35 fps hysteresis).

    ``t_update_max_s`` (60 s) bounds how long slowdown may stretch a phase (edgert's choice).
    """

    t_update_s: float = 10.0
    step_s: float = 2.0
    enter_below: float = 0.25
    exit_above: float = 0.35
    t_update_max_s: float = 60.0
    enabled: bool = True

    def validate(self) -> None:
        if not self.t_update_s > 0 or self.step_s < 0:
            raise ValueError(f"t_update_s must be > 0 and step_s >= 0, got {self.t_update_s}, {self.step_s}")
        if not 0 < self.enter_below <= self.exit_above:
            raise ValueError(f"hysteresis: expected 0 < enter_below <= exit_above, got "
                             f"{self.enter_below}, {self.exit_above}")
        if self.t_update_max_s < self.t_update_s:
            raise ValueError(f"t_update_max_s {self.t_update_max_s} < t_update_s {self.t_update_s}")

    def scaled(self, factor: float) -> "ATRConfig":
        """Time constants times ``factor``, rate thresholds divided by it."""
        return dataclasses.replace(self, t_update_s=self.t_update_s * factor, step_s=self.step_s * factor,
                                   enter_below=self.enter_below / factor, exit_above=self.exit_above / factor,
                                   t_update_max_s=self.t_update_max_s * factor)


def phi_score(previous: np.ndarray, current: np.ndarray) -> float:
    """Fraction of pixels whose label differs between two label maps ``int [H, W]`` (same shape)."""
    a, b = np.asarray(previous), np.asarray(current)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"phi_score: expected two label maps of one [H, W] shape, "
                         f"got {list(a.shape)} and {list(b.shape)}")
    return float(np.count_nonzero(a != b)) / max(1, a.size)


class SamplingController:
    """The server's per-device ASR + ATR state, driven by teacher labels of the received samples.

    Feed every labelled sample in time order with :meth:`observe`; call :meth:`end_phase` once per
    training phase to advance ATR. :attr:`rate` and :attr:`t_update` are what the device is told.
    """

    def __init__(self, asr: Optional[ASRConfig] = None, atr: Optional[ATRConfig] = None) -> None:
        self.asr = asr or ASRConfig()
        self.atr = atr or ATRConfig()
        self.asr.validate()
        self.atr.validate()
        self.rate = self.asr.r_init
        self.t_update = self.atr.t_update_s
        self.slowdown = False
        self._last_label: Optional[np.ndarray] = None
        self._last_time: Optional[float] = None
        self._period_start: Optional[float] = None
        self._phis: list[float] = []
        self.history: list[dict[str, float]] = []

    def observe(self, time_s: float, label: np.ndarray) -> Optional[float]:
        """Adds one labelled sample; returns its phi-score against the previous one (None for the first).

        Samples older than the previous one are ignored for phi (out-of-order uploads).
        """
        phi = None
        if self._period_start is None:
            self._period_start = time_s
        if self._last_label is not None and self._last_time is not None and time_s > self._last_time:
            if self._last_label.shape == label.shape:
                phi = phi_score(self._last_label, label)
                self._phis.append(phi)
        if self._last_time is None or time_s > self._last_time:
            self._last_label, self._last_time = np.asarray(label), time_s
        if self.asr.enabled and time_s - self._period_start >= self.asr.period_s:
            self._update_rate(time_s)
        return phi

    def _update_rate(self, time_s: float) -> None:
        if self._phis:
            mean_phi = float(np.mean(self._phis))
            target = self.rate * mean_phi / self.asr.phi_target
            self.rate = float(np.clip(target, self.asr.r_min, self.asr.r_max))
            self.history.append({"time_s": time_s, "phi": mean_phi, "rate": self.rate})
        self._phis = []
        self._period_start = time_s

    def end_phase(self) -> float:
        """Advances ATR after a training phase; returns the next phase's T_update in seconds."""
        if not self.atr.enabled:
            return self.t_update
        if self.slowdown and self.rate > self.atr.exit_above:
            self.slowdown = False
            self.t_update = self.atr.t_update_s
        elif not self.slowdown and self.rate < self.atr.enter_below:
            self.slowdown = True
        if self.slowdown:
            self.t_update = min(self.t_update + self.atr.step_s, self.atr.t_update_max_s)
        return self.t_update
