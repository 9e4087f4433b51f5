"""OneAdapt's controller: gradient ascent on accuracy minus lambda x resource, one input-only backward per interval.

Every adaptation interval ``t`` (1 s of input by default) the controller

1. renders the interval with the current knobs (encode/filter/resample on the CPU) and measures its resource
   directly (bytes of the encoded stream, frames sent to the DNN, ...) and its accuracy against the ground truth
   (the DNN on the original input);
2. computes **DNNGrad** once: the gradient of the output utility with respect to the DNN *input* only (parameters
   frozen, no weight gradients), on a few of the interval's frames;
3. computes each knob's **InputGrad** by rendering again at ``k + dk`` -- one render per global knob, and one for
   all region knobs at once (their regions do not overlap, so each region's input change is attributed to its
   knob) -- and multiplies: ``AccGrad_i = sum_f |<DNNGrad_f, InputGrad_i,f>|`` (or the signed inner product,
   :attr:`AdaptConfig.gain`); region knobs use the per-macroblock means of
   ``|DNNGrad|`` and ``|InputGrad|`` from :func:`edgert.ops.block_average` (AccMPEG's first-order magnitude),
   scaled so that they sum to the probe's exact first-order change;
4. measures ``ResourceGrad_i`` by the same renders (by definition: resource at ``k + dk`` minus at ``k``);
5. steps ``k <- k + alpha (AccGrad - lambda ResourceGrad)`` and applies it to the next interval.

Accuracy gradients are per frame of utility, resource gradients a fraction of the resource the starting
configuration used on the first interval, so lambda is dimensionless: 0 spends everything, larger
values trade accuracy for resource. The step is ``alpha`` times that difference divided by a running mean of
``|AccGrad|`` (so ``alpha`` is a fraction of the knob range whatever the pipeline's utility scale) and clipped to
``max_step``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence

import numpy as np
import torch

from edgert.adapt.knobs import KnobSpace

log = logging.getLogger(__name__)


class AdaptError(RuntimeError):
    """A render (encode, filter, resample) that failed; the controller keeps its previous configuration."""


@dataclass
class Rendered:
    """One interval rendered with one configuration.

    Attributes:
        inputs: what the DNN sees for each of the interval's frames, at a shape that does not depend on the knobs
            (decoded frames scaled back to the source size ``[N, C, H, W]``; audio ``[N, L]``); a frame the
            pipeline skips holds the input whose result it reuses.
        resource: the resource the interval used, measured (bytes sent, DNN frames x per-frame cost, ...).
        dnn_frames: frames that actually went through the DNN.
        info: pipeline-specific details (e.g. indices of the frames sent).
    """

    inputs: torch.Tensor
    resource: float
    dnn_frames: int
    info: dict[str, Any] = field(default_factory=dict)


class Pipeline(Protocol):
    """A streaming-media analytics pipeline with knobs (what :class:`OneAdapt` adapts)."""

    name: str
    knobs: KnobSpace
    resource_unit: str

    def num_intervals(self) -> int:
        """Adaptation intervals the input holds."""

    def render(self, interval: int, k: np.ndarray) -> Rendered:
        """Process the interval's input with normalised knobs ``k``; raises :class:`AdaptError` on failure."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The DNN on inputs as held by :attr:`Rendered.inputs` (differentiable with respect to ``inputs``)."""

    def utility(self, output: torch.Tensor) -> torch.Tensor:
        """Output utility (scalar, summed over frames) of :meth:`forward`'s output."""

    def outputs(self, rendered: Rendered) -> torch.Tensor:
        """The DNN's outputs for every frame of a rendered interval (no gradient; skipped frames reuse)."""

    def truth(self, interval: int) -> torch.Tensor:
        """The DNN's outputs on the original input of the interval: the ground truth."""

    def score(self, output: torch.Tensor, reference: torch.Tensor) -> float:
        """Accuracy (``[0, 1]``, mean over frames) of outputs against reference outputs."""

    def region_masks(self, height: int, width: int) -> Optional[torch.Tensor]:
        """Bool ``[R, ceil(H/16), ceil(W/16)]``: the macroblocks of each region knob, in knob order; None if the
        pipeline has no region knobs."""


GAINS = ("magnitude", "signed")


@dataclass(frozen=True)
class AdaptConfig:
    """OneAdapt's controller settings.

    Attributes:
        lam: lambda, the accuracy/resource trade-off (dimensionless, see the module docstring).
        alpha: step size as a fraction of the knob range per unit of normalised gradient.
        max_step: largest change of one knob per interval.
        dk: finite-difference step of continuous knobs (discrete knobs move to the next allowed value).
        grad_frames: frames of each interval used for DNNGrad (evenly spaced; 0 = all, the default: with 4 of 10
            the gradient's noise cost 2 points of saving on iscc-demo).
        block: macroblock side for the region knobs' block averaging (16: H.264's).
        scale_decay: decay of the running mean of ``|AccGrad|`` that normalises the step.
        scale_by: ``"accuracy"`` (default): the step is normalised by the running mean of ``max |AccGrad|``;
            ``"both"``: by that of ``max(max |AccGrad|, lambda max |ResourceGrad|)``, so a saturated utility (tiny
            AccGrad) no longer turns the resource term into a full ``max_step`` per interval (measured in
            docs/results/adapt.md: it stops the face detector's collapse on carphone, and removes bikes' saving).
        initial: starting knob vector (None: every knob at 1, the most resource).
        gain: ``"magnitude"`` (default): a knob's AccGrad is the sum over frames of ``|<DNNGrad_f, InputGrad_f>|``,
            AccMPEG's first-order magnitude -- moving towards more resource is taken never to lower accuracy, and
            how much it raises it is the size of the first-order change; ``"signed"``: the plain inner product
            ``<DNNGrad, InputGrad>``. The sign of the inner product is unreliable for codec, filtering and
            sampling changes (docs/design/adapt.md has the measurements).
        momentum: weight of the previous intervals in the ascent direction (an exponential average of
            ``AccGrad - lambda ResourceGrad``; 0 is plain gradient ascent, the paper's). 0.5 by default: one
            interval's gradient is noisy, and the knobs' random walk around the optimum costs accuracy
            (measurements in docs/results/adapt.md).
    """

    lam: float = 0.1
    alpha: float = 0.1
    max_step: float = 0.25
    dk: float = 0.1
    grad_frames: int = 0
    block: int = 16
    scale_decay: float = 0.8
    initial: Optional[tuple[float, ...]] = None
    gain: str = "magnitude"
    momentum: float = 0.5
    scale_by: str = "accuracy"

    def validate(self) -> None:
        if self.gain not in GAINS:
            raise ValueError(f"gain: expected one of {GAINS}, got {self.gain!r}")
        if not self.lam >= 0.0:
            raise ValueError(f"lam: expected >= 0, got {self.lam}")
        if not self.alpha > 0.0:
            raise ValueError(f"alpha: expected > 0, got {self.alpha}")
        if not 0.0 < self.max_step <= 1.0:
            raise ValueError(f"max_step: expected in (0, 1], got {self.max_step}")
        if not 0.0 < self.dk <= 0.5:
            raise ValueError(f"dk: expected in (0, 0.5], got {self.dk}")
        if self.grad_frames < 0:
            raise ValueError(f"grad_frames: expected >= 0, got {self.grad_frames}")
        if self.block <= 0:
            raise ValueError(f"block: expected > 0, got {self.block}")
        if self.scale_by not in ("accuracy", "both"):
            raise ValueError(f"scale_by: expected 'accuracy' or 'both', got {self.scale_by!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum: expected in [0, 1), got {self.momentum}")
        if not 0.0 <= self.scale_decay < 1.0:
            raise ValueError(f"scale_decay: expected in [0, 1), got {self.scale_decay}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class IntervalRecord:
    """What happened in one interval (one row of a knob trace)."""

    interval: int
    knobs: dict[str, float]
    accuracy: float
    resource: float
    dnn_frames: int
    backward_passes: int = 0
    renders: int = 1
    acc_grad: list[float] = field(default_factory=list)
    resource_grad: list[float] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""


@dataclass
class SchemeResult:
    """One scheme's run over a clip: mean accuracy, total resource, the trace and the overhead."""

    scheme: str
    accuracy: float
    resource: float
    dnn_frames: int
    trace: list[IntervalRecord]
    overhead: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def grad_indices(n: int, count: int) -> list[int]:
    """``count`` evenly spaced frame indices of ``n`` (all when ``count`` is 0 or at least ``n``)."""
    if count <= 0 or count >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, count)})


def dnn_grad(pipeline: Pipeline, inputs: torch.Tensor) -> torch.Tensor:
    """DNNGrad: d utility / d input by exactly one backward pass; no parameter gradient is formed."""
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        utility = pipeline.utility(pipeline.forward(x))
        (grad,) = torch.autograd.grad(utility, x)
    return grad


def _region_gains(grad: torch.Tensor, delta: torch.Tensor, masks: torch.Tensor, block: int) -> torch.Tensor:
    """Per region: sum over its macroblocks of mean|DNNGrad| x mean|input change| x pixels (AccMPEG's magnitude)."""
    from edgert.ops import block_average  # noqa: PLC0415  (keeps the import of edgert.adapt light)

    g = block_average(grad.float().contiguous(), block)
    d = block_average(delta.float().contiguous(), block)
    h, w = grad.shape[-2:]
    rows, cols = g.shape[-2:]
    valid_h = torch.clamp(h - torch.arange(rows, device=g.device) * block, max=block)
    valid_w = torch.clamp(w - torch.arange(cols, device=g.device) * block, max=block)
    pixels = (valid_h[:, None] * valid_w[None, :]).to(torch.float32) * grad.shape[1]
    per_block = (g * d).sum(dim=0) * pixels
    return (masks.to(per_block.device, per_block.dtype) * per_block[None]).sum(dim=(1, 2)).cpu()


class OneAdapt:
    """Runs OneAdapt over a pipeline's intervals (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, config: Optional[AdaptConfig] = None) -> None:
        self.pipeline = pipeline
        self.config = config or AdaptConfig()
        self.config.validate()
        space = pipeline.knobs
        initial = self.config.initial if self.config.initial is not None else (1.0,) * len(space)
        self.k = space.check(initial)
        self._scale: Optional[float] = None
        self._direction: Optional[np.ndarray] = None
        self.resource_ref: Optional[float] = None

    def _reference(self, rendered: Rendered) -> float:
        """The starting configuration's resource on the first interval adapted (normalises ResourceGrad)."""
        if self.resource_ref is None:
            self.resource_ref = max(float(rendered.resource), 1e-12)
        return self.resource_ref

    def gradients(self, interval: int, rendered: Rendered) -> tuple[np.ndarray, np.ndarray, int, str]:
        """AccGrad and ResourceGrad of every knob at the current configuration.

        Returns ``(acc_grad, resource_grad, renders, note)``; a probe render that fails leaves its knobs' gradients
        at zero and says so in ``note``.
        """
        pipe, cfg, space = self.pipeline, self.config, self.pipeline.knobs
        n = rendered.inputs.shape[0]
        sel = grad_indices(n, cfg.grad_frames)
        base = rendered.inputs[sel]
        grad = dnn_grad(pipe, base)
        ref = self._reference(rendered)
        here = space.snapped(self.k)
        acc_grad = np.zeros(len(space))
        res_grad = np.zeros(len(space))
        renders, notes = 0, []
        for i in space.globals():
            probe = self.k.copy()
            probe[i] = space.knobs[i].probe(self.k[i], cfg.dk)
            dk = float(probe[i] - here[i])
            if dk == 0.0:
                continue
            try:
                moved = pipe.render(interval, probe)
            except AdaptError as exc:
                notes.append(f"probe of {space.names[i]} failed: {exc}")
                continue
            renders += 1
            delta = moved.inputs[sel] - base
            acc_grad[i] = self._first_order(grad, delta) / (abs(dk) if cfg.gain == "magnitude" else dk) / len(sel)
            res_grad[i] = (moved.resource - rendered.resource) / dk / ref
        regions = space.regions()
        if regions:
            probe = self.k.copy()
            for i in regions:
                probe[i] = space.knobs[i].probe(self.k[i], cfg.dk)
            dks = np.array([probe[i] - here[i] for i in regions])
            try:
                moved = pipe.render(interval, probe)
            except AdaptError as exc:
                notes.append(f"probe of the region knobs failed: {exc}")
                return acc_grad, res_grad, renders, "; ".join(notes)
            renders += 1
            delta = moved.inputs[sel] - base
            h, w = base.shape[-2:]
            masks = pipe.region_masks(h, w)
            if masks is None or masks.shape[0] != len(regions):
                raise AdaptError(f"{pipe.name}: region_masks must give one mask per region knob ({len(regions)})")
            gains = _region_gains(grad, delta, masks, cfg.block).numpy().astype(np.float64)
            # The block magnitudes attribute the probe's change among the regions; their sum bounds the exact
            # first-order change <DNNGrad, delta> from above, so they are scaled to it, which puts region and
            # global knobs on one scale.
            if gains.sum() > 0:
                gains *= abs(self._first_order(grad, delta)) / gains.sum()
            change = _region_gains(torch.ones_like(delta), delta, masks, cfg.block).numpy().astype(np.float64)
            share = change / change.sum() if change.sum() > 0 else np.full(len(regions), 1.0 / len(regions))
            d_res = (moved.resource - rendered.resource) / ref
            for j, i in enumerate(regions):
                if dks[j] == 0.0:
                    continue
                # The magnitudes carry no sign: moving a region towards quality is taken to raise utility, so
                # the gain is divided by |dk| while the resource change keeps its direction.
                acc_grad[i] = gains[j] / abs(dks[j]) / len(sel)
                res_grad[i] = d_res * share[j] / dks[j]
        return acc_grad, res_grad, renders, "; ".join(notes)

    def _first_order(self, grad: torch.Tensor, delta: torch.Tensor) -> float:
        """The first-order utility change of an input change: summed per frame in magnitude, or signed."""
        per_frame = (grad * delta).flatten(1).sum(1)
        return float(per_frame.abs().sum() if self.config.gain == "magnitude" else per_frame.sum())

    def step(self, acc_grad: np.ndarray, res_grad: np.ndarray) -> np.ndarray:
        """``k <- clip(k + alpha (AccGrad - lambda ResGrad) / scale, +-max_step)`` into ``[0, 1]``."""
        cfg = self.config
        magnitude = float(np.max(np.abs(acc_grad))) if acc_grad.size else 0.0
        if cfg.scale_by == "both" and res_grad.size:
            magnitude = max(magnitude, cfg.lam * float(np.max(np.abs(res_grad))))
        if magnitude > 0.0:
            self._scale = magnitude if self._scale is None else (
                cfg.scale_decay * self._scale + (1.0 - cfg.scale_decay) * magnitude)
        scale = self._scale if self._scale else 1.0
        direction = (acc_grad - cfg.lam * res_grad) / scale
        if cfg.momentum > 0.0:
            if self._direction is not None:
                direction = cfg.momentum * self._direction + (1.0 - cfg.momentum) * direction
            self._direction = direction
        move = np.clip(cfg.alpha * direction, -cfg.max_step, cfg.max_step)
        self.k = np.clip(self.k + move, 0.0, 1.0)
        return self.k

    def run(self, intervals: Optional[Sequence[int]] = None, *, on_interval: Optional[Any] = None) -> SchemeResult:
        """Adapt over the intervals (default: all), returning accuracy, resource, trace and overhead."""
        pipe, space = self.pipeline, self.pipeline.knobs
        todo = list(range(pipe.num_intervals())) if intervals is None else list(intervals)
        trace: list[IntervalRecord] = []
        rendered: Optional[Rendered] = None
        for t in todo:
            t0 = time.perf_counter()
            note = ""
            try:
                rendered = pipe.render(t, self.k)
            except AdaptError as exc:
                raise AdaptError(f"{pipe.name}: interval {t} cannot be rendered with "
                                 f"{space.values(self.k)}: {exc}") from exc
            accuracy = pipe.score(pipe.outputs(rendered), pipe.truth(t))
            applied = space.values(self.k)
            acc_grad, res_grad, renders, note = self.gradients(t, rendered)
            if note:
                log.warning("%s interval %d: %s; keeping the configuration", pipe.name, t, note)
            else:
                self.step(acc_grad, res_grad)
            trace.append(IntervalRecord(t, applied, accuracy, float(rendered.resource), rendered.dnn_frames,
                                        backward_passes=1, renders=1 + renders, acc_grad=acc_grad.tolist(),
                                        resource_grad=res_grad.tolist(), seconds=time.perf_counter() - t0,
                                        note=note))
            if on_interval is not None:
                on_interval(trace[-1])
        return summarise(f"oneadapt(lam={self.config.lam:g})", trace, {"lam": self.config.lam,
                                                                        "alpha": self.config.alpha})


def summarise(scheme: str, trace: list[IntervalRecord], params: Optional[dict[str, Any]] = None,
              extra_dnn_frames: int = 0) -> SchemeResult:
    """Aggregate a trace: mean accuracy over intervals, total resource, overhead per interval."""
    n = max(1, len(trace))
    overhead = {"backward_per_interval": sum(r.backward_passes for r in trace) / n,
                "renders_per_interval": sum(r.renders for r in trace) / n,
                "extra_dnn_frames": float(extra_dnn_frames),
                "seconds_per_interval": sum(r.seconds for r in trace) / n}
    return SchemeResult(scheme, float(np.mean([r.accuracy for r in trace])) if trace else 0.0,
                        float(sum(r.resource for r in trace)), sum(r.dnn_frames for r in trace) + extra_dnn_frames,
                        trace, overhead, dict(params or {}))
