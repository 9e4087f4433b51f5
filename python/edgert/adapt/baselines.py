"""Baselines every pipeline shares: fixed configurations (the uniform sweep and its Pareto frontier) and
AWStream/Chameleon-style periodic profiling of the top-k configurations; plus the comparison at equal accuracy and
at equal resource that the evaluation reports.

Pipeline-specific baselines live with their pipelines (the region heuristic in :mod:`edgert.adapt.codec`,
Reducto in :mod:`edgert.adapt.filtering`, the voice-activity heuristic in :mod:`edgert.adapt.audio`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from edgert.adapt.ascent import IntervalRecord, Pipeline, SchemeResult, summarise


@dataclass(frozen=True)
class Measurement:
    accuracy: float
    resource: float
    dnn_frames: int


class Measurer:
    """Accuracy and resource of one interval at one configuration, memoised by the applied (snapped) knobs, so the
    sweep, the profiling baseline and the frontier share their renders."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._memo: dict[tuple[int, tuple[float, ...]], tuple[Measurement, torch.Tensor]] = {}

    def key(self, interval: int, k: np.ndarray) -> tuple[int, tuple[float, ...]]:
        return interval, tuple(np.round(self.pipeline.knobs.snapped(k), 9).tolist())

    def measure(self, interval: int, k: np.ndarray, reference: Optional[torch.Tensor] = None) -> Measurement:
        """Accuracy against the ground truth (or against ``reference`` outputs, for profiling) and resource."""
        pipe = self.pipeline
        key = self.key(interval, k)
        if key not in self._memo:
            rendered = pipe.render(interval, k)
            out = pipe.outputs(rendered)
            m = Measurement(pipe.score(out, pipe.truth(interval)), float(rendered.resource), rendered.dnn_frames)
            self._memo[key] = (m, out)
        m, out = self._memo[key]
        if reference is None:
            return m
        return Measurement(pipe.score(out, reference), m.resource, m.dnn_frames)

    def outputs(self, interval: int, k: np.ndarray) -> torch.Tensor:
        """The DNN's outputs of one interval at one configuration (memoised with :meth:`measure`)."""
        self.measure(interval, k)
        return self._memo[self.key(interval, k)][1]


def schedule(measurer: Measurer, choose: Callable[[int], np.ndarray], scheme: str,
             params: Optional[dict[str, Any]] = None) -> SchemeResult:
    """Every interval rendered with the knob vector ``choose(interval)`` and scored (no backward pass): the runner
    of the baselines that decide without gradients."""
    pipe = measurer.pipeline
    trace = []
    for t in range(pipe.num_intervals()):
        t0 = time.perf_counter()
        k = pipe.knobs.check(choose(t))
        m = measurer.measure(t, k)
        trace.append(IntervalRecord(t, pipe.knobs.values(k), m.accuracy, m.resource, m.dnn_frames,
                                    seconds=time.perf_counter() - t0))
    return summarise(scheme, trace, params)


def fixed(measurer: Measurer, k: np.ndarray, scheme: str = "uniform") -> SchemeResult:
    """One configuration for the whole clip."""
    return schedule(measurer, lambda _t: k, scheme, {"knobs": measurer.pipeline.knobs.values(k)})


def uniform_sweep(measurer: Measurer, grid: Sequence[np.ndarray],
                  on_config: Optional[Callable[[int, int], None]] = None) -> list[SchemeResult]:
    """Every configuration of ``grid`` fixed over the clip."""
    out = []
    for i, k in enumerate(grid):
        out.append(fixed(measurer, k))
        if on_config is not None:
            on_config(i + 1, len(grid))
    return out


def pareto(results: Sequence[SchemeResult]) -> list[SchemeResult]:
    """The results no other beats on both accuracy and resource, by increasing resource."""
    front: list[SchemeResult] = []
    for r in sorted(results, key=lambda r: (r.resource, -r.accuracy)):
        if not front or r.accuracy > front[-1].accuracy:
            front.append(r)
    return front


def periodic_profiling(measurer: Measurer, candidates: Sequence[np.ndarray], target: float, *,
                       period: int = 5, top_k: int = 5) -> SchemeResult:
    """AWStream/Chameleon: profile the top-k configurations every ``period`` intervals, use the cheapest that
    reaches ``target`` accuracy relative to the most expensive configuration (the "golden" one: no ground truth
    exists at run time).

    The first period profiles every candidate (a full profile) to find the top-k: the configurations on the
    profiled Pareto frontier, evenly spaced along it. The profiled configuration applies from the profiled interval
    on. Every profiling inference counts in ``extra_dnn_frames``; the bandwidth of getting the golden
    configuration to the profiler is not counted (in the baseline's favour).
    """
    pipe = measurer.pipeline
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target: expected in (0, 1], got {target}")
    if period < 1 or top_k < 1:
        raise ValueError(f"period and top_k must be >= 1, got {period} and {top_k}")
    n = pipe.num_intervals()
    extra = 0
    top: list[np.ndarray] = list(candidates)
    chosen = top[0]
    trace = []
    for t in range(n):
        t0 = time.perf_counter()
        if t % period == 0:
            resources = [measurer.measure(t, k).resource for k in top]
            golden = top[int(np.argmax(resources))]
            reference = measurer.outputs(t, golden)
            profiled = [measurer.measure(t, k, reference) for k in top]
            extra += sum(m.dnn_frames for m in profiled)
            ok = [i for i, m in enumerate(profiled) if m.accuracy >= target]
            pick = min(ok, key=lambda i: profiled[i].resource) if ok else int(np.argmax(resources))
            chosen = top[pick]
            if t == 0:
                order = sorted(range(len(top)), key=lambda i: (profiled[i].resource, -profiled[i].accuracy))
                front, best = [], -1.0
                for i in order:
                    if profiled[i].accuracy > best:
                        front.append(i)
                        best = profiled[i].accuracy
                keep = sorted({front[int(round(j))] for j in np.linspace(0, len(front) - 1, min(top_k, len(front)))})
                top = [top[i] for i in keep]
        m = measurer.measure(t, chosen)
        trace.append(IntervalRecord(t, pipe.knobs.values(chosen), m.accuracy, m.resource, m.dnn_frames,
                                    seconds=time.perf_counter() - t0))
    return summarise("profiling", trace, {"target": target, "period": period, "top_k": top_k},
                     extra_dnn_frames=extra)


@dataclass(frozen=True)
class Comparison:
    """One scheme's point against a frontier of baseline points."""

    accuracy: float
    resource: float
    frontier_resource_at_accuracy: Optional[float]
    saving: Optional[float]
    frontier_accuracy_at_resource: Optional[float]
    accuracy_gain: Optional[float]


def upper_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper concave hull of ``(resource, accuracy)`` points, rising part only, by increasing resource.

    Switching between two fixed configurations from interval to interval reaches every mix of their
    (resource, accuracy), so the hull -- not the points -- is what the baselines can deliver.
    """
    hull: list[tuple[float, float]] = []
    for r, a in sorted({(float(r), float(a)) for r, a in points}):
        if hull and a <= hull[-1][1]:
            continue  # costs more, reaches no more
        while len(hull) >= 2:
            (r0, a0), (r1, a1) = hull[-2], hull[-1]
            if (a1 - a0) * (r - r0) <= (a - a0) * (r1 - r0):  # hull[-1] lies on or under the chord
                hull.pop()
            else:
                break
        hull.append((r, a))
    return hull


def compare(accuracy: float, resource: float, frontier: Sequence[tuple[float, float]]) -> Comparison:
    """Resource saving at equal accuracy and accuracy gain at equal resource against baseline points.

    ``frontier`` holds ``(accuracy, resource)`` baseline points; both figures are read off their
    :func:`upper_hull` (linear between hull points): the resource the baselines need for ``accuracy`` (None when
    none reaches it) and the accuracy they reach with ``resource`` (None when every point costs more).
    """
    hull = upper_hull([(r, a) for a, r in frontier])
    need: Optional[float] = None
    reach: Optional[float] = None
    if hull and accuracy <= hull[0][1]:
        need = hull[0][0]
    for (r0, a0), (r1, a1) in zip(hull, hull[1:]):
        if need is None and a0 <= accuracy <= a1:
            need = r0 + (r1 - r0) * (accuracy - a0) / (a1 - a0)
        if reach is None and r0 <= resource <= r1:
            reach = a0 + (a1 - a0) * (resource - r0) / (r1 - r0)
    if hull and resource >= hull[-1][0]:
        reach = hull[-1][1]
    return Comparison(accuracy, resource, need, None if need is None or need <= 0 else 1.0 - resource / need,
                      reach, None if reach is None else accuracy - reach)
