"""RECL's third vision task (:class:`edgert.recl.task.Task`): face detection, MTCNN teaching tiny CenterNets.

**Teacher.** MTCNN (:mod:`edgert.vision.mtcnn`) with the weights that ship in ``facenet-pytorch`` (install with
``--no-deps``), run on the frames at the camera's resolution with its standard settings (smallest face 20
pixels, thresholds 0.6 / 0.7 / 0.7, pyramid factor 0.709). A frame's label is the teacher's faces as boxes in the
*expert's* input pixels, float32 ``[M, 5]`` rows ``(x0, y0, x1, y1, valid)`` (clipped to the input, most
probable first, at most ``max_faces`` = 16, zero rows with ``valid = 0`` after them), so labels of any frames
stack into ``[N, M, 5]`` like the other tasks' labels.

**Experts** (:class:`TinyDetector`): a single-class CenterNet (Zhou et al. 2019, "Objects as Points") on a small
CNN of :class:`edgert.vision.models.ConvBNReLU` blocks: four stride-2 stages down to stride 16, a dilated
stage, two upsampling steps fused with the stride-8 and stride-4 features, and one head with five outputs per
stride-4 cell: the face-centre heatmap logit, ``log`` of the box width and height in cells, and the centre's
sub-cell offset. Trained (:class:`DetectionJob`) with the focal loss on a Gaussian heatmap around each face
centre (CenterNet's, alpha 2, beta 4, normalised by the number of faces) plus L1 losses on log-size and
offset at the centre cells. Decoding (:func:`decode`) keeps the 3x3 max-pool peaks of the sigmoid heatmap
above ``score_threshold`` (0.3), at most ``max_faces``.

**Accuracy** of a frame (:func:`frame_f1`, from :mod:`edgert.vision.metrics`, re-exported here with
:func:`match_count`): F1 of the expert's boxes against the teacher's at IoU >= 0.5, boxes matched greedily
(largest IoU first, each box at most once): ``2 TP / (2 TP + FP + FN)``. A frame where both the teacher and the
expert find no face scores 1 (nothing to find, nothing wrongly found), one where only one of them finds faces
scores 0. :class:`DetectionJob` reports the mean per-frame F1 on its held-out frames.

**BatchNorm** stays frozen as in the other tasks (:func:`edgert.recl.tasks.frozen_batchnorm`): a fresh expert's
statistics are the identity, so its BatchNorm layers act as learnt per-channel affine maps.

**Teacher on the bundled clips** at the RECL workload geometry (each clip scaled to cover 128x96 and centre
cropped, every frame; the native sizes are in :mod:`edgert.vision.mtcnn`): carphone has its driver's face in all
120 frames (sides 31-40 pixels), iscc-demo faces in 56 of 1441 frames (mostly three shots, around 30 s, 36-38 s and
48-49 s; sides ~19 pixels), bikes in 10 of 250, bigbuckbunny in 20 of 132 (the CG animals). Most workload frames
therefore have no face, and score 1 for an expert that finds none. The teacher takes 0.02-0.05 s per 128x96
frame on one core.

**Training settings** (measured on one thread at 128x96; a scene's frames every 2nd or 3rd, 25 % held out; held-out
accuracy is the mean per-frame F1; one micro-window = one epoch; fresh experts unless said):

* carphone 0-4 s (40 frames, one face each): Adam 3e-3, minibatch 4 goes 0 -> 1.0 after 4 micro-windows and
  stays >= 0.97 (10); minibatch 8: 0 until 7, 1.0 at 8; minibatch 2: 1.0 at 2 but 1.5x the cost per epoch;
  Adam 1e-3: 1.0 at 7; Adam 1e-2: 1.0 at 3, then 0.9-1.0; SGD 0.05: <= 0.35 in 10; heatmap threshold 0.2
  instead of 0.3: 0.93 at 3; width 24: 0.93 at 4 at 1.4x the cost. The fresh expert's F1 is 0 for the first
  micro-windows: its heatmap starts at probability 0.01 everywhere and must rise past the threshold.
* iscc-demo 35.5-39 s (42 frames, faces of ~19 pixels in 20): the empty prediction's 0.60 -> 0.77 after 7
  micro-windows (minibatch 4); minibatch 8, Adam 1e-3 and 1e-2 stay at 0.60-0.70 within 8; from the carphone
  expert 0.60 -> 0.67. Small faces are this expert's weak spot.
* scenes with few or no faces (iscc-demo 0-7.6 s: none in 61 frames; bikes 0-4 s: 4 of 34; iscc-demo 47.5-50 s:
  4 of 30): the F1 stays at the share of face-free frames (1.0, 0.88, 0.75) for 8 micro-windows: the expert
  keeps finding nothing rather than learning the rare small faces.

Defaults: Adam 3e-3, minibatch 4, width 16 (120 k parameters), threshold 0.3. A micro-window of 30 training
frames takes about 0.5 s (0.4-0.8 s on the shared 2-core machine).
"""
from __future__ import annotations

import functools
import hashlib
import math
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgert.recl.scheduler import JobData, TorchJob, torch_threads
from edgert.recl.tasks import _frozen_factory, _seeded, complete_state, split_holdout
from edgert.vision.metrics import check_boxes, frame_f1, match_count  # noqa: F401 (match_count: re-exported)
from edgert.vision.models import ConvBNReLU, Normalize, _init_weights
from edgert.vision.teachers import TeacherError, check_frames
from edgert.vision.video import frames_to_tensor, resize

#: rows of a frame's label (teacher faces beyond it are dropped, least probable first)
MAX_FACES = 16
_HEAT_PRIOR = 0.01  # initial face probability of every cell (CenterNet's bias init, -log(99))

# --------------------------------------------------------------------------------------------------- expert


class TinyDetector(nn.Module):
    """Single-class CenterNet at output stride 4 (see the module docstring).

    Input float ``[N, 3, H, W]`` RGB in ``[0, 1]`` (H, W multiples of 16); output float ``[N, 5, H/4, W/4]``:
    heatmap logit, ``log(w / 4)``, ``log(h / 4)``, centre offset x and y within the cell (in cells).
    """

    stride = 4

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width: expected >= 1, got {width}")
        c = width
        self.normalize = Normalize()
        self.stem = nn.Sequential(ConvBNReLU(3, c, stride=2), ConvBNReLU(c, 2 * c, stride=2))  # stride 4
        self.down8 = ConvBNReLU(2 * c, 4 * c, stride=2)
        self.down16 = nn.Sequential(ConvBNReLU(4 * c, 4 * c, stride=2), ConvBNReLU(4 * c, 4 * c, dilation=2))
        # fusions: 1x1 projection, then a depthwise 3x3 (a quarter of a dense 3x3's cost at these widths)
        self.up8 = nn.Sequential(ConvBNReLU(8 * c, 4 * c, kernel=1), ConvBNReLU(4 * c, 4 * c, groups=4 * c))
        self.up4 = nn.Sequential(ConvBNReLU(6 * c, 2 * c, kernel=1), ConvBNReLU(2 * c, 2 * c, groups=2 * c))
        self.head = nn.Sequential(ConvBNReLU(2 * c, 2 * c), nn.Conv2d(2 * c, 5, 1))
        _init_weights(self)
        last = self.head[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.normal_(last.weight, 0, 0.01)
        with torch.no_grad():
            last.bias.zero_()
            last.bias[0] = -math.log((1 - _HEAT_PRIOR) / _HEAT_PRIOR)
            last.bias[1:3] = math.log(8.0)  # 32-pixel boxes until trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 16 or x.shape[3] % 16:
            raise ValueError(f"x: expected float [N, 3, H, W] with H, W multiples of 16, got {x.dtype} "
                             f"{list(x.shape)}")
        s4 = self.stem(self.normalize(x))
        s8 = self.down8(s4)
        s16 = self.down16(s8)
        y = self.up8(torch.cat([F.interpolate(s16, size=s8.shape[-2:], mode="nearest"), s8], dim=1))
        y = self.up4(torch.cat([F.interpolate(y, size=s4.shape[-2:], mode="nearest"), s4], dim=1))
        return self.head(y)


def tiny_detector(width: int = 16) -> TinyDetector:
    """A randomly initialised :class:`TinyDetector` (about ``width**2 * 470`` parameters: 120 k at 16)."""
    return TinyDetector(width)


def decode(output: torch.Tensor, stride: int = TinyDetector.stride, score_threshold: float = 0.3,
           max_faces: int = MAX_FACES) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes from :class:`TinyDetector` outputs ``[N, 5, h, w]``: the cells that are the maximum of their 3x3
    neighbourhood in the sigmoid heatmap with a score >= ``score_threshold``, at most ``max_faces`` (the
    highest) per frame. Returns ``(boxes float32 [N, max_faces, 5], scores float32 [N, max_faces])``: label rows
    ``(x0, y0, x1, y1, valid)`` in input pixels, most confident first, zero rows (and scores) after them."""
    if output.ndim != 4 or output.shape[1] != 5:
        raise ValueError(f"output: expected [N, 5, h, w], got {list(output.shape)}")
    n, _, h, w = output.shape
    heat = torch.sigmoid(output[:, 0].float())
    peak = heat == F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0]
    scores = torch.where(peak, heat, torch.zeros_like(heat)).flatten(1)
    k = min(max_faces, h * w)
    top, idx = scores.topk(k, dim=1)
    ys, xs = (idx // w).float(), (idx % w).float()
    gather = output.flatten(2).float().gather(2, idx[:, None, :].expand(n, 5, k))  # [N, 5, k]
    cx = (xs + gather[:, 3]) * stride
    cy = (ys + gather[:, 4]) * stride
    bw = torch.exp(gather[:, 1].clamp(max=8.0)) * stride
    bh = torch.exp(gather[:, 2].clamp(max=8.0)) * stride
    keep = (top >= score_threshold).float()
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, torch.ones_like(cx)], dim=2)
    boxes = (boxes * keep[..., None]).clamp_(min=0)
    x = torch.zeros(n, max_faces, 5)
    s = torch.zeros(n, max_faces)
    x[:, :k] = boxes
    s[:, :k] = top * keep
    x[..., [0, 2]] = x[..., [0, 2]].clamp(max=w * stride)
    x[..., [1, 3]] = x[..., [1, 3]].clamp(max=h * stride)
    return x, s


def centernet_targets(boxes: torch.Tensor, height: int, width: int,
                      stride: int = TinyDetector.stride) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training targets of label boxes ``[B, M, 5]`` for an output grid ``height`` x ``width``:

    * ``heat [B, h, w]``: the maximum over faces of a Gaussian around the face's centre cell (exactly 1 there),
      with standard deviations ``max(0.5, side / 6)`` cells along each axis;
    * ``reg [B, 4, h, w]``: ``log(w / stride)``, ``log(h / stride)`` and the centre's offset in its cell;
    * ``mask [B, h, w]``: True at the centre cells (where ``reg`` is trained).
    """
    b = boxes.shape[0]
    heat = torch.zeros(b, height, width)
    reg = torch.zeros(b, 4, height, width)
    mask = torch.zeros(b, height, width, dtype=torch.bool)
    gy = torch.arange(height, dtype=torch.float32)[:, None]
    gx = torch.arange(width, dtype=torch.float32)[None, :]
    for i, j in torch.nonzero(boxes[..., 4] == 1).tolist():
        x0, y0, x1, y1 = (float(v) / stride for v in boxes[i, j, :4])
        bw, bh = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(width - 1, max(0, int(cx))), min(height - 1, max(0, int(cy)))
        sx, sy = max(0.5, bw / 6), max(0.5, bh / 6)
        g = torch.exp(-((gx - ix) ** 2) / (2 * sx * sx) - ((gy - iy) ** 2) / (2 * sy * sy))
        heat[i] = torch.maximum(heat[i], g)
        reg[i, :, iy, ix] = torch.tensor([math.log(bw), math.log(bh), cx - ix, cy - iy])
        mask[i, iy, ix] = True
    return heat, reg, mask


def detection_loss(output: torch.Tensor, boxes: torch.Tensor, stride: int = TinyDetector.stride) -> torch.Tensor:
    """CenterNet's loss of outputs ``[B, 5, h, w]`` against label boxes ``[B, M, 5]``: focal loss (alpha 2,
    beta 4) on the heatmap plus L1 on log-size and offset at the centre cells, each normalised by the number
    of faces in the batch (at least 1)."""
    heat, reg, mask = centernet_targets(boxes, output.shape[2], output.shape[3], stride)
    p = torch.sigmoid(output[:, 0]).clamp(1e-4, 1 - 1e-4)
    pos = heat == 1
    pos_loss = -(torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - heat) ** 4)[~pos].sum()
    faces = max(1, int(mask.sum()))
    reg_loss = (output[:, 1:].permute(0, 2, 3, 1)[mask] - reg.permute(0, 2, 3, 1)[mask]).abs().sum()
    return (pos_loss + neg_loss + reg_loss) / faces


class DetectionJob(TorchJob):
    """:class:`~edgert.recl.scheduler.TorchJob` for face detection: the same serialisable state and
    deterministic batch schedule (seed, pass and cursor as in ``TorchJob``), trained with
    :func:`detection_loss`; ``data.train_y``/``val_y`` are label boxes float32 ``[N, M, 5]``. :meth:`evaluate`
    decodes the held-out frames (:func:`decode`) and :meth:`frame_scores` are their per-frame F1s
    (:func:`frame_f1`)."""

    def __init__(self, job_id: str, model_factory: Callable[[], nn.Module],
                 data: Union[JobData, Callable[[], JobData]], *, score_threshold: float = 0.3,
                 iou_threshold: float = 0.5, max_faces: int = MAX_FACES, **kwargs: Any) -> None:
        super().__init__(job_id, model_factory, data, **kwargs)
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold: expected in (0, 1), got {score_threshold}")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold: expected in (0, 1], got {iou_threshold}")
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.max_faces = int(max_faces)

    def _stride(self, model: nn.Module) -> int:
        return int(getattr(model, "stride", TinyDetector.stride))

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:func:`detection_loss` of the minibatch against its label boxes."""
        return detection_loss(model(x), y, self._stride(model))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded boxes ``[N, max_faces, 5]`` of the current model on preprocessed frames ``x``."""
        with torch_threads(self.num_threads), torch.no_grad():
            model, _ = self._live()
            model.eval()
            stride = self._stride(model)
            outs = [decode(model(x[i:i + self.eval_batch_size]), stride, self.score_threshold, self.max_faces)[0]
                    for i in range(0, int(x.shape[0]), self.eval_batch_size)]
        return torch.cat(outs) if outs else torch.zeros(0, self.max_faces, 5)

    def frame_scores(self, predicted: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """Per-frame F1 (IoU >= ``iou_threshold``) of the decoded boxes against the teacher's."""
        return frame_f1(labels.numpy(), predicted.numpy(), self.iou_threshold)


# ----------------------------------------------------------------------------------------------------- task


class DetectionTask:
    """Face detection with MTCNN as the teacher and :class:`TinyDetector` experts (see the module docstring).

    Args:
        input_size: ``(width, height)`` the expert runs at (multiples of 16); label boxes are in its pixels.
        width: :class:`TinyDetector` width.
        max_faces: rows of a frame's label and of an expert's decoded output.
        score_threshold: the experts' heatmap threshold (:func:`decode`).
        iou_threshold: IoU at which an expert's box matches a teacher's (:func:`frame_f1`).
        min_face_size: the teacher's smallest face, in camera pixels (MTCNN's 20).
        optimizer, lr, momentum, weight_decay, batch_size: the retraining jobs' settings (see "Training
            settings" in the module docstring).
        teacher_batch_size: frames per teacher PNet pass.
        num_threads: torch threads of the retraining jobs (``None``: leave as is).

    Not thread-safe (the teacher is loaded lazily and cached on the object).
    """

    name = "detection"
    num_classes = 1

    def __init__(self, input_size: tuple[int, int] = (128, 96), width: int = 16, max_faces: int = MAX_FACES, *,
                 score_threshold: float = 0.3, iou_threshold: float = 0.5, min_face_size: float = 20.0,
                 optimizer: str = "adam", lr: float = 3e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 batch_size: int = 4, teacher_batch_size: int = 16, num_threads: Optional[int] = 1) -> None:
        w, h = (int(v) for v in input_size)
        if w <= 0 or h <= 0 or w % 16 or h % 16:
            raise ValueError(f"input_size: expected (width, height), positive multiples of 16, got {input_size}")
        if width < 1 or max_faces < 1:
            raise ValueError(f"width and max_faces: expected >= 1, got {width} and {max_faces}")
        if not 0.0 < score_threshold < 1.0 or not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"score_threshold: expected in (0, 1) and iou_threshold in (0, 1], got "
                             f"{score_threshold} and {iou_threshold}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")
        if not lr > 0 or weight_decay < 0:
            raise ValueError(f"lr: expected > 0 and weight_decay >= 0, got {lr} and {weight_decay}")
        if batch_size < 1 or teacher_batch_size < 1:
            raise ValueError(f"batch_size and teacher_batch_size must be >= 1, got {batch_size}, {teacher_batch_size}")
        self.input_size = (w, h)
        self.width, self.max_faces = int(width), int(max_faces)
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.min_face_size = float(min_face_size)
        self.optimizer, self.lr, self.momentum = optimizer, float(lr), float(momentum)
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        self.teacher_batch_size, self.num_threads = int(teacher_batch_size), num_threads
        self.tag = f"recl-det-centernet{self.width}-{w}x{h}-1c"
        self._teacher: Optional[Any] = None
        self._generic: dict[int, dict[str, torch.Tensor]] = {}
        self._last_input: Optional[tuple[bytes, torch.Tensor]] = None

    @property
    def class_names(self) -> list[str]:
        return ["face"]

    @property
    def teacher(self) -> Any:
        """The :class:`~edgert.vision.mtcnn.MTCNN` teacher, loaded on first use and kept.

        Raises:
            TeacherError: facenet-pytorch (which holds its weights) is not installed; the message names it.
        """
        if self._teacher is None:
            from edgert.vision.mtcnn import MTCNN  # noqa: PLC0415

            try:
                self._teacher = MTCNN(self.min_face_size, batch_size=self.teacher_batch_size)
            except (FileNotFoundError, OSError, TeacherError) as exc:
                raise TeacherError(f"the detection task cannot load its teacher 'mtcnn': {exc}") from exc
        return self._teacher

    # ---- labels

    def label(self, frames: np.ndarray) -> np.ndarray:
        """Teacher labels float32 ``[N, max_faces, 5]``: MTCNN's faces on the frames at their own resolution,
        scaled to ``input_size`` and clipped to it, most probable first (``valid`` 1), then zero rows. Boxes
        that clipping leaves without area are dropped."""
        arr = check_frames(frames)
        fh, fw = arr.shape[1:3]
        w, h = self.input_size
        scale = np.array([w / fw, h / fh, w / fw, h / fh], np.float32)
        out = np.zeros((arr.shape[0], self.max_faces, 5), np.float32)
        for i, faces in enumerate(self.teacher.detect(arr)):
            b = faces[:, :4] * scale
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
            b = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])][:self.max_faces]
            out[i, :len(b), :4] = b
            out[i, :len(b), 4] = 1.0
        return out

    def _checked(self, labels: Any, n: int) -> np.ndarray:
        arr = check_boxes("labels", labels, n)
        if arr.shape[1] != self.max_faces:
            raise ValueError(f"labels: expected float boxes [N, {self.max_faces}, 5] with N={n}, got {arr.dtype} "
                             f"{list(arr.shape)}")
        return arr.astype(np.float32, copy=False)

    # ---- experts

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """The expert's input: frames area-resized to ``input_size``, float32 ``[N, 3, h, w]`` in ``[0, 1]``."""
        arr = check_frames(frames)
        w, h = self.input_size
        return frames_to_tensor(arr if arr.shape[1:3] == (h, w) else resize(arr, (w, h)))

    def _factory(self) -> Callable[[], nn.Module]:
        return functools.partial(tiny_detector, self.width)

    def new_expert(self, seed: int = 0) -> nn.Module:
        """A randomly initialised :class:`TinyDetector` (seeded), in eval mode."""
        return _seeded(self._factory(), seed)

    def _input(self, frames: np.ndarray) -> torch.Tensor:
        """:meth:`preprocess` of ``frames``, kept for the last frames seen (keyed by their content): the safety
        check measures every candidate on the same window. Shared: callers must not modify it."""
        arr = check_frames(frames)
        h = hashlib.blake2b(str(arr.shape).encode(), digest_size=16)
        h.update(arr.data)
        key = h.digest()
        if self._last_input is None or self._last_input[0] != key:
            self._last_input = (key, self.preprocess(arr))
        return self._last_input[1]

    def predict(self, expert: nn.Module, frames: np.ndarray) -> np.ndarray:
        """The expert's decoded boxes, float32 ``[N, max_faces, 5]`` in input pixels (label rows)."""
        x = self._input(frames)
        stride = int(getattr(expert, "stride", TinyDetector.stride))
        was = expert.training
        expert.eval()
        try:
            with torch.no_grad():
                outs = [decode(expert(x[i:i + 32]), stride, self.score_threshold, self.max_faces)[0]
                        for i in range(0, x.shape[0], 32)]
        finally:
            expert.train(was)
        return torch.cat(outs).numpy()

    def accuracy(self, expert: nn.Module, frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per-frame F1 at IoU >= ``iou_threshold`` against ``labels`` (float ``[N, max_faces, 5]``): float64
        ``[N]``; 1 where neither finds a face."""
        y = self._checked(labels, check_frames(frames).shape[0])
        return frame_f1(y, self.predict(expert, frames), self.iou_threshold)

    # ---- retraining

    def _start_state(self, start: Optional[Mapping[str, Any]], seed: int) -> dict[str, torch.Tensor]:
        """``start`` completed by :meth:`new_expert`'s state (the zoo stores parameters only)."""
        if seed not in self._generic:
            self._generic[seed] = {k: v.detach().clone() for k, v in self.new_expert(seed).state_dict().items()}
        return complete_state(self._generic[seed], start, f"{self.name} expert ({self.tag})")

    def retraining_job(self, job_id: str, start: Optional[dict[str, torch.Tensor]], frames: np.ndarray,
                       labels: np.ndarray, holdout: float = 0.25, seed: int = 0) -> DetectionJob:
        """A :class:`DetectionJob` from ``start`` (``None``: :meth:`new_expert` of ``seed``) on the preprocessed
        frames; a seeded ``holdout`` fraction of the frames is its held-out set. BatchNorm stays frozen."""
        x = self.preprocess(frames)
        y = torch.from_numpy(self._checked(labels, x.shape[0]).copy())
        train, val = (torch.from_numpy(i) for i in split_holdout(x.shape[0], holdout, seed))
        data = JobData(x[train].contiguous(), y[train].contiguous(), x[val].contiguous(), y[val].contiguous())
        return DetectionJob(job_id, functools.partial(_frozen_factory, self._factory()), data,
                            score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
                            max_faces=self.max_faces, state_dict=self._start_state(start, seed),
                            optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
                            weight_decay=self.weight_decay, batch_size=self.batch_size, seed=seed,
                            num_threads=self.num_threads, eval_batch_size=32)
