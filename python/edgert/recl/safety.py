"""RECL's safety checker: measure the shortlisted experts and the device's own models on the window's frames
against the teacher, and hand out the best one that can be served (Khani et al., NSDI 2023, Sec. 4.1).

The gating network only *predicts* accuracy; before a model reaches a device the safety checker labels the
window's sampled frames with the task's teacher and measures every candidate on them: the gating network's top-K
experts, the model the device runs now and the device's last retrained model (which has not been deployed yet).
The most accurate wins, so a device never receives a model that did worse on its own fresh frames than the one it
has. Ties go to the device's current model (nothing to send), then to its last retrained model, then to the
experts in the gating network's order.

Experts are read through the zoo, which checks every file against its checksums: an expert whose file is missing or
damaged is quarantined by the zoo and skipped here. The winner is read (and checked) once more right before it is
handed out (:meth:`SafetyChecker.select`); if it fails then, the next best is taken, so a damaged file is never
served. The checker records each expert's measured accuracy in the zoo's accuracy table (sample key
``"<device>/<window>"``, source ``"safety"``) and, when the model handed out is a zoo expert, the selection in the
zoo's history (which pruning counts).

Weights everywhere are the experts' parameters by name (float32 arrays, ``named_parameters()`` order), the unit the
zoo stores and the update packets carry.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
from torch import nn

from edgert.recl.gating import check_frames
from edgert.recl.task import Task
from edgert.recl.zoo import ModelZoo, ZooError
from edgert.updates.weights import load_weights

Weights = Mapping[str, np.ndarray]

CURRENT = "current"
"""Candidate key of the model the device runs now (when it is not an active zoo expert)."""
RETRAINED = "retrained"
"""Candidate key of the device's last retrained model (trained in an earlier window, not deployed yet)."""


def expert_key(expert_id: int) -> str:
    """Candidate key of zoo expert ``expert_id``."""
    return f"expert:{int(expert_id)}"


def sample_key(device: str, window: int) -> str:
    """The zoo's accuracy-table key of one device window's frames."""
    return f"{device}/{int(window)}"


@dataclass(frozen=True)
class OwnModel:
    """A model of the device's own lineage: its weights and, when they are a zoo expert's, that expert's id."""

    weights: Weights
    expert_id: Optional[int] = None


@dataclass
class Choice:
    """The model handed out for a device window.

    Attributes:
        key: its candidate key (:func:`expert_key`, :data:`CURRENT` or :data:`RETRAINED`).
        expert_id: the zoo expert (None for the device's own models).
        weights: its parameters, as read (and checked) right before being handed out.
        accuracy: its mean accuracy on the window's frames.
        fallbacks: better-ranked experts that failed their check at hand-out time (now quarantined), by id.
        selection_id: the zoo's selection-history row (None when the model is not a zoo expert).
    """

    key: str
    expert_id: Optional[int]
    weights: dict[str, np.ndarray]
    accuracy: float
    fallbacks: dict[int, str] = field(default_factory=dict)
    selection_id: Optional[int] = None


@dataclass
class SafetyResult:
    """The safety check of one device window.

    Attributes:
        device, window: whose frames.
        labels: the teacher's labels of the frames.
        candidates: the experts that were shortlisted (ids, the selector's order).
        accuracy: mean accuracy per measured candidate key (the accuracy table of this window).
        per_frame: per-frame accuracy (float ``[N]``) per measured candidate key.
        ranking: measured candidate keys, best first (ties as in the module docstring).
        skipped: shortlisted experts that could not be read (missing/damaged file, no longer active), with why.
        choice: what :meth:`SafetyChecker.select` handed out (None before, or when nothing could be served).
        label_s, eval_s, select_s: seconds spent labelling, measuring and handing out.
    """

    device: str
    window: int
    labels: np.ndarray
    candidates: list[int]
    accuracy: dict[str, float] = field(default_factory=dict)
    per_frame: dict[str, np.ndarray] = field(default_factory=dict)
    ranking: list[str] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    choice: Optional[Choice] = None
    label_s: float = 0.0
    eval_s: float = 0.0
    select_s: float = 0.0

    @property
    def best(self) -> Optional[str]:
        """The best measured candidate's key (before any hand-out fallback)."""
        return self.ranking[0] if self.ranking else None

    def expert_accuracy(self) -> dict[int, float]:
        """Mean accuracy of every measured zoo expert, by id."""
        return {int(k.split(":", 1)[1]): v for k, v in self.accuracy.items() if k.startswith("expert:")}


class SafetyChecker:
    """Measures candidates against the teacher and hands out the best servable one (see the module docstring).

    Args:
        task: labels frames, builds the experts' architecture and measures per-frame accuracy.
        zoo: where the experts live (read with checksum checks; accuracies and selections are recorded there).
        record: False measures without writing to the zoo (no accuracy rows, no selection history).

    Not thread-safe (one scratch module is reused for every measurement).
    """

    def __init__(self, task: Task, zoo: ModelZoo, record: bool = True) -> None:
        self.task = task
        self.zoo = zoo
        self.record = record
        self._scratch: Optional[nn.Module] = None

    def module(self, weights: Weights) -> nn.Module:
        """The task's expert architecture holding ``weights`` (one scratch module, reloaded on every call)."""
        if self._scratch is None:
            self._scratch = self.task.new_expert()
        load_weights(self._scratch, weights)
        return self._scratch

    def measure(self, weights: Weights, frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per-frame accuracy (float ``[N]`` in [0, 1]) of the model with ``weights``."""
        acc = np.asarray(self.task.accuracy(self.module(weights), frames, labels), dtype=np.float64).reshape(-1)
        if acc.shape[0] != frames.shape[0] or not np.all((acc >= 0) & (acc <= 1)):
            raise ValueError(f"task {self.task.name!r}: accuracy() returned {acc.shape[0]} values "
                             f"(range [{acc.min(initial=0):.3g}, {acc.max(initial=0):.3g}]) for {frames.shape[0]} "
                             f"frames, expected one per frame in [0, 1]")
        return acc

    def evaluate(self, device: str, window: int, frames: np.ndarray, candidates: Sequence[int],
                 current: Optional[OwnModel] = None, retrained: Optional[Weights] = None,
                 labels: Optional[np.ndarray] = None) -> SafetyResult:
        """Labels ``frames`` (unless ``labels`` are given) and measures the shortlisted experts, the device's
        ``current`` model and its last ``retrained`` model on them.

        When ``current`` is an active zoo expert it is measured as that expert (its key is :func:`expert_key`, and
        it joins the candidates if the selector left it out); otherwise under :data:`CURRENT`.

        Raises:
            ValueError: malformed frames, labels of another length, or a task returning bad accuracies.
        """
        frames = check_frames(frames)
        t0 = time.perf_counter()
        if labels is None:
            labels = np.asarray(self.task.label(frames))
        label_s = time.perf_counter() - t0
        if len(labels) != frames.shape[0]:
            raise ValueError(f"labels: expected one per frame ({frames.shape[0]}), got {len(labels)}")
        ids = [int(e) for e in candidates]
        current_id = current.expert_id if current is not None else None
        if current_id is not None and current_id not in ids:
            if self.zoo.expert(current_id).status == "active":
                ids.append(current_id)
            else:
                current_id = None  # pruned/quarantined meanwhile: the device's copy is measured as its own model
        result = SafetyResult(device, int(window), labels, ids, label_s=label_s)
        t0 = time.perf_counter()
        order: list[str] = []
        if current is not None:
            key = expert_key(current_id) if current_id is not None else CURRENT
            if current_id is None:
                result.per_frame[key] = self.measure(current.weights, frames, labels)
            order.append(key)
        if retrained is not None:
            result.per_frame[RETRAINED] = self.measure(retrained, frames, labels)
            order.append(RETRAINED)
        for e in ids:
            key = expert_key(e)
            try:
                weights = self.zoo.weights(e)
            except ZooError as exc:  # quarantined by the zoo if its file is bad; never measured nor served
                result.skipped[e] = str(exc)
                if key in order:
                    order.remove(key)
                if e == current_id and current is not None:  # the device's own copy is still what it runs
                    result.per_frame[CURRENT] = self.measure(current.weights, frames, labels)
                    order.insert(0, CURRENT)
                continue
            result.per_frame[key] = self.measure(weights, frames, labels)
            if key not in order:
                order.append(key)
        result.accuracy = {k: float(np.mean(v)) for k, v in result.per_frame.items()}
        rank = {k: i for i, k in enumerate(order)}
        result.ranking = sorted(result.accuracy, key=lambda k: (-result.accuracy[k], rank[k]))
        if self.record:
            skey = sample_key(device, window)
            for e, acc in result.expert_accuracy().items():
                self.zoo.record_accuracy(e, skey, min(1.0, max(0.0, acc)), source="safety")
        result.eval_s = time.perf_counter() - t0
        return result

    def select(self, result: SafetyResult, current: Optional[OwnModel] = None,
               retrained: Optional[Weights] = None) -> Optional[Choice]:
        """Hands out the best servable candidate of ``result``: experts are read from the zoo again (checked), and
        one that fails now is quarantined and passed over for the next best. Records the selection in the zoo's
        history when the model is an expert; sets and returns ``result.choice`` (None: nothing measured could be
        served, e.g. no own model and every expert damaged)."""
        t0 = time.perf_counter()
        fallbacks: dict[int, str] = {}
        choice: Optional[Choice] = None
        for key in result.ranking:
            acc = result.accuracy[key]
            if key == CURRENT and current is not None:
                choice = Choice(key, None, _copy(current.weights), acc)
            elif key == RETRAINED and retrained is not None:
                choice = Choice(key, None, _copy(retrained), acc)
            elif key.startswith("expert:"):
                e = int(key.split(":", 1)[1])
                try:
                    choice = Choice(key, e, self.zoo.weights(e), acc)
                except ZooError as exc:
                    fallbacks[e] = str(exc)
                    if current is not None and current.expert_id == e:
                        # the device's copy of this expert is still what it runs: keeping it sends nothing
                        choice = Choice(CURRENT, None, _copy(current.weights), acc)
                    else:
                        continue
            if choice is not None:
                break
        if choice is not None:
            choice.fallbacks = fallbacks
            if choice.expert_id is not None and self.record:
                ids = [e for e in result.candidates if expert_key(e) in result.accuracy and e not in fallbacks]
                if choice.expert_id not in ids:
                    ids.append(choice.expert_id)
                choice.selection_id = self.zoo.record_selection(result.window, result.device, choice.expert_id, ids)
        result.skipped.update(fallbacks)
        result.choice = choice
        result.select_s = time.perf_counter() - t0
        return choice

    def check(self, device: str, window: int, frames: np.ndarray, candidates: Sequence[int],
              current: Optional[OwnModel] = None, retrained: Optional[Weights] = None,
              labels: Optional[np.ndarray] = None) -> SafetyResult:
        """:meth:`evaluate` then :meth:`select`: the accuracy table and the model to hand out (``result.choice``)."""
        result = self.evaluate(device, window, frames, candidates, current, retrained, labels)
        self.select(result, current, retrained)
        return result


def _copy(weights: Weights) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.float32, copy=True) for k, v in weights.items()}


__all__ = ["CURRENT", "RETRAINED", "Choice", "OwnModel", "SafetyChecker", "SafetyResult", "expert_key", "sample_key"]
