"""AMS settings: the server's (:class:`AMSConfig`, the paper's defaults) and the edge's (:class:`EdgeConfig`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from edgert.ams.sampling import ASRConfig, ATRConfig
from edgert.updates import AdamConfig, SelectionConfig
from edgert.updates.packet import VALUE_CODINGS

TRAINERS = ("ams", "jit", "remote")
EXECUTORS = ("thread", "ray")


@dataclass
class AMSConfig:
    """Server-side AMS settings; defaults are the paper's (T_update in :attr:`atr`, rates in :attr:`asr`).

    Attributes:
        trainer: the server's policy for an upload (:mod:`edgert.ams.policies`): ``ams`` (K iterations over
            the horizon per phase), ``jit`` (Just-In-Time baseline) or ``remote`` (remote inference: no
            training; the teacher's label map of every uploaded frame goes back in a LABELS frame).
        t_horizon_s: training samples are drawn from the last T_horizon seconds (240 s).
        iterations: K, Adam iterations per phase (20).
        batch_size: minibatch size (8).
        selection: which coordinates a phase changes (gradient-guided, gamma = 5 %).
        adam: optimizer settings (lr 1e-3).
        asr, atr: adaptive sampling and training rate.
        value_coding: update values on the wire, ``fp16`` (default), ``fp32``, ``int8`` (per-tensor scale), or
            the lossy block codings ``int8b`` / ``int4b`` (one fp16 scale per 64 values; only for devices whose
            libedgert decodes them). Lossy values do not drift: each phase trains from the device's exact
            weights (the server's mirror), so later phases correct the rounding of earlier ones.
        size_codings: also encode every published update in these value codings (not sent) and record the
            bytes per update in the device report (``coding_sizes``, with format 1 and with ``packet_format``),
            for comparisons on identical updates.
        packet_format: newest update-packet format the server writes (2: range-coded when smaller;
            devices announcing format 1 get transcoded packets).
        jit_target_miou: JIT trains on a frame until the student's mIoU on it reaches this.
        jit_max_iterations: ... or this many iterations per frame.
        queue_depth: uploads queued per device before new ones are refused (BUSY).
        session_ttl_s: training state of a device disconnected this long is freed (its model stream is kept).
        max_upload_bytes: largest SAMPLES frame accepted.
        seed: minibatch sampling, random coordinate sets and each phase's torch seed.
        executor: where phases train. ``thread`` (default): the server's compute worker trains each phase
            itself, one at a time. ``ray``: the worker still decodes, labels (teacher), selects coordinates,
            computes and publishes the updates, but sends each phase's training (the student copy, its
            optimizer state, the phase's frames and labels) as a Ray task
            (:class:`edgert.harness.executors.RayExecutor`), up to ``max_parallel_phases`` devices at once;
            a device never has two phases in flight, so its phases stay in order. The weights are
            bit-identical to ``thread`` when torch runs on as many threads (``ray_cpus_per_phase``).
        ray_address: ``None`` starts a local Ray; otherwise the cluster to join (``"auto"``,
            ``"ray://head:10001"``).
        ray_num_cpus: CPUs of the local Ray (``None``: all of this machine's).
        ray_cpus_per_phase: CPUs (and torch threads) each phase's task gets.
        max_parallel_phases: phases in flight at once (``None``: as many as the executor has slots).
    """

    trainer: str = "ams"
    t_horizon_s: float = 240.0
    iterations: int = 20
    batch_size: int = 8
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    adam: AdamConfig = field(default_factory=AdamConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    atr: ATRConfig = field(default_factory=ATRConfig)
    value_coding: str = "fp16"
    size_codings: tuple[str, ...] = ()
    packet_format: int = 2
    jit_target_miou: float = 0.8
    jit_max_iterations: int = 20
    queue_depth: int = 4
    session_ttl_s: float = 60.0
    max_upload_bytes: int = 32 << 20
    seed: int = 0
    executor: str = "thread"
    ray_address: Optional[str] = None
    ray_num_cpus: Optional[int] = None
    ray_cpus_per_phase: int = 1
    max_parallel_phases: Optional[int] = None

    def validate(self) -> None:
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer: expected one of {TRAINERS}, got {self.trainer!r}")
        if not self.t_horizon_s > 0:
            raise ValueError(f"t_horizon_s: expected > 0, got {self.t_horizon_s}")
        if self.iterations < 1 or self.batch_size < 1 or self.jit_max_iterations < 1:
            raise ValueError("iterations, batch_size and jit_max_iterations must be >= 1")
        for coding in (self.value_coding, *self.size_codings):
            if coding not in VALUE_CODINGS:
                raise ValueError(f"value_coding: expected one of {', '.join(VALUE_CODINGS)}, got {coding!r}")
        if self.packet_format not in (1, 2):
            raise ValueError(f"packet_format: expected 1 or 2, got {self.packet_format}")
        if self.queue_depth < 1:
            raise ValueError(f"queue_depth: expected >= 1, got {self.queue_depth}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor: expected one of {EXECUTORS}, got {self.executor!r}")
        if self.ray_num_cpus is not None and self.ray_num_cpus < 1:
            raise ValueError(f"ray_num_cpus: expected >= 1 or None, got {self.ray_num_cpus}")
        if self.ray_cpus_per_phase < 1:
            raise ValueError(f"ray_cpus_per_phase: expected >= 1, got {self.ray_cpus_per_phase}")
        if self.max_parallel_phases is not None and self.max_parallel_phases < 1:
            raise ValueError(f"max_parallel_phases: expected >= 1 or None, got {self.max_parallel_phases}")
        self.selection.validate()
        self.adam.validate()
        self.asr.validate()
        self.atr.validate()

    def scaled(self, factor: float) -> "AMSConfig":
        """Every time constant times ``factor`` and every rate divided by it (short clips: ``factor`` 0.1
        plays a 10 s clip as 100 s of the paper's clock). Iterations per phase are unchanged."""
        if not factor > 0:
            raise ValueError(f"time scale: expected > 0, got {factor}")
        return dataclasses.replace(self, t_horizon_s=self.t_horizon_s * factor, asr=self.asr.scaled(factor),
                                   atr=self.atr.scaled(factor))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AMSConfig":
        d = dict(d)
        nested = {"selection": SelectionConfig, "adam": AdamConfig, "asr": ASRConfig, "atr": ATRConfig}
        for key, kind in nested.items():
            if key in d and isinstance(d[key], Mapping):
                sub = dict(d[key])
                if key == "adam" and "betas" in sub:
                    sub["betas"] = tuple(sub["betas"])
                d[key] = kind(**sub)
        if "size_codings" in d:
            d["size_codings"] = tuple(d["size_codings"])
        return cls(**d)


@dataclass
class EdgeConfig:
    """Edge-side settings.

    Attributes:
        uplink_kbps: libx264 target bitrate of the sample buffers in kbit per second of stream time
            (paper: ~200 kbps).
        preset: libx264 preset (the paper allows ``slow``).
        lockstep: evaluation mode: after uploading a buffer, the edge blocks at stream time
            ``t_end + apply_lag_s`` until the server's answer (and its model) arrived, so results do not
            depend on how fast a shared CPU trains. False: never wait (live operation).
        apply_lag_s: the modelled delay between the end of a buffer and its update taking effect.
        lockstep_timeout_s: the longest a lockstep wait lasts (then the edge goes on with its current model).
        first_model_timeout_s: how long :meth:`AMSEdge.run` waits for the server's first model (lockstep).
        pace: sleep so frames are processed no faster than the source frame rate (live camera behaviour).
    """

    uplink_kbps: float = 200.0
    preset: str = "slow"
    lockstep: bool = True
    apply_lag_s: float = 2.0
    lockstep_timeout_s: float = 300.0
    first_model_timeout_s: float = 60.0
    pace: bool = False

    def validate(self) -> None:
        if not self.uplink_kbps > 0:
            raise ValueError(f"uplink_kbps: expected > 0, got {self.uplink_kbps}")
        if self.apply_lag_s < 0:
            raise ValueError(f"apply_lag_s: expected >= 0, got {self.apply_lag_s}")

    def scaled(self, factor: float) -> "EdgeConfig":
        """Bitrate per stream second divided by ``factor`` (same bits per sample), lag times ``factor``."""
        return dataclasses.replace(self, uplink_kbps=self.uplink_kbps / factor, apply_lag_s=self.apply_lag_s * factor)
