"""Teachers: models that label frames for distillation, behind one interface (frames -> labels).

Every teacher takes RGB ``uint8 [N, H, W, 3]`` frames and returns

* ``scores(frames)``: float32 class probabilities, ``[N, C, H, W]`` at the frames' size (segmentation) or
  ``[N, C]`` (classification);
* ``label(frames)``: int64 argmax labels, ``[N, H, W]`` or ``[N]``.

Built in (:func:`load_teacher` specs), all from files that ship inside installed packages:

* ``mediapipe-selfie``: MediaPipe 0.10.21's selfie/person segmentation (classes background, person), run
  from its ``.tflite`` by :mod:`edgert.vision.tflite` (no TensorFlow, no mediapipe import). ``variant``
  picks the general (256x256) or landscape (144x256) model, ``auto`` by frame aspect ratio;
  ``mediapipe-selfie-landscape`` / ``mediapipe-selfie-general`` force one.
* ``mobilenetv2-imagenet``: ImageNet MobileNetV2 (1000 classes), torchvision preprocessing (shorter side
  256, centre crop 224).

Any other PyTorch model: a TorchScript file (``.pt``, ``.pth``, ``.ts``, ``.torchscript``), a
``torch.export`` program (``.pt2``), an ``.onnx``
model (needs ``onnxruntime``, imported lazily), or an ``nn.Module`` object. These receive float
``[N, 3, H, W]`` RGB in ``[0, 1]`` (optionally resized to ``input_size`` and normalized with
``mean``/``std``) and must return logits ``[N, C]`` or ``[N, C, h, w]`` (upsampled bilinearly to the
frame size). A probe forward pass at load time fixes the task and class count, so a broken model fails
when it is loaded, not mid-run.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgert.vision.video import frames_to_tensor

SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"
TASKS = (SEGMENTATION, CLASSIFICATION)
BUILTIN_TEACHERS = ("mediapipe-selfie", "mediapipe-selfie-general", "mediapipe-selfie-landscape",
                    "mobilenetv2-imagenet")
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit", ".pt2")


class TeacherError(ValueError):
    """A teacher that cannot be loaded or run, or whose label space does not match what is expected."""


def check_frames(frames: Any) -> np.ndarray:
    """``frames`` as a C-contiguous ``uint8 [N, H, W, 3]`` array with N >= 1, or a ValueError saying what is wrong."""
    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [N, H, W, 3] RGB, got {arr.dtype} {list(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"frames: expected at least one non-empty frame, got {list(arr.shape)}")
    return np.ascontiguousarray(arr)


class Teacher(ABC):
    """Labels frames. Subclasses set :attr:`task`, :attr:`num_classes`, :attr:`class_names` and implement
    :meth:`scores`; :meth:`label` is the argmax."""

    task: str
    num_classes: int
    class_names: list[str]
    name: str = "teacher"
    batch_size: int = 8

    @abstractmethod
    def scores(self, frames: np.ndarray) -> np.ndarray:
        """Class probabilities: float32 ``[N, C, H, W]`` (segmentation, at the frames' size) or ``[N, C]``."""

    def label(self, frames: np.ndarray) -> np.ndarray:
        """Hard labels: int64 ``[N, H, W]`` (segmentation, at the frames' size) or ``[N]`` (classification)."""
        return self.scores(frames).argmax(axis=1).astype(np.int64)

    def check_compatible(self, num_classes: Optional[int] = None,
                         class_names: Optional[Sequence[str]] = None, task: Optional[str] = None) -> None:
        """Raise :class:`TeacherError` unless this teacher's label space matches the student's.

        Args:
            num_classes: the student's number of outputs.
            class_names: the student's class names, in index order (compared exactly).
            task: ``segmentation`` or ``classification``.
        """
        if task is not None and task != self.task:
            raise TeacherError(f"teacher {self.name!r} does {self.task}, the student expects {task}")
        if num_classes is not None and num_classes != self.num_classes:
            raise TeacherError(f"teacher {self.name!r} has {self.num_classes} classes, the student "
                               f"{num_classes}")
        if class_names is not None and list(class_names) != list(self.class_names):
            diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(self.class_names, class_names, strict=False))
                    if a != b]
            raise TeacherError(f"teacher {self.name!r} classes {list(self.class_names)[:8]} do not match the "
                               f"student's {list(class_names)[:8]}"
                               + (f" (first difference {diff[0]})" if diff else " (different lengths)"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, task={self.task!r}, num_classes={self.num_classes})"


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def _resize_float(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize float NCHW images: antialiased bilinear when shrinking, bilinear when growing."""
    if x.shape[-2:] == (height, width):
        return x
    shrink = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)


class MediaPipeSelfieTeacher(Teacher):
    """MediaPipe selfie (person) segmentation: classes ``background``, ``person``.

    Frames are resized (stretched, as MediaPipe's own graph does) to the model's input, scored in
    ``[0, 1]`` float input, and the person probability is resized back bilinearly to the frame size.
    A pixel is ``person`` when its probability exceeds ``threshold``.

    Args:
        variant: ``general`` (256x256), ``landscape`` (144x256) or ``auto`` (landscape for frames at
            least 1.4 times wider than tall).
        threshold: person-probability threshold for :meth:`label` (0.5: the argmax).
        model_dir: a folder holding the ``.tflite`` files (default: :func:`edgert.data.model_path`).
        batch_size: frames per forward pass.
        device: torch device to run on.
    """

    task = SEGMENTATION
    num_classes = 2
    class_names = ["background", "person"]

    def __init__(self, variant: str = "auto", threshold: float = 0.5, model_dir: Optional[Union[str, Path]] = None,
                 batch_size: int = 8, device: Union[str, torch.device] = "cpu") -> None:
        from edgert.data import MODELS, model_path  # noqa: PLC0415
        from edgert.vision import tflite  # noqa: PLC0415

        if variant not in ("auto", "general", "landscape"):
            raise ValueError(f"variant: expected auto, general or landscape, got {variant!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold: expected in (0, 1), got {threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.variant, self.threshold, self.batch_size = variant, float(threshold), int(batch_size)
        self.device = torch.device(device)
        self.name = "mediapipe-selfie" if variant == "auto" else f"mediapipe-selfie-{variant}"
        self._models: dict[str, Any] = {}
        for v in ("general", "landscape") if variant == "auto" else (variant,):
            key = "mediapipe-selfie" if v == "general" else "mediapipe-selfie-landscape"
            path = Path(model_dir) / MODELS[key].filename if model_dir is not None else model_path(key)
            try:
                self._models[v] = tflite.load(path).to(self.device)
            except (tflite.TFLiteError, FileNotFoundError) as exc:
                raise TeacherError(f"teacher {self.name!r}: cannot load {path}: {exc}") from exc

    def _variant_for(self, height: int, width: int) -> str:
        if self.variant != "auto":
            return self.variant
        return "landscape" if width >= 1.4 * height else "general"

    @torch.no_grad()
    def person_probability(self, frames: np.ndarray) -> np.ndarray:
        """Person probability, float32 ``[N, H, W]`` at the frames' size."""
        arr = check_frames(frames)
        n, h, w, _ = arr.shape
        model = self._models[self._variant_for(h, w)]
        _, mh, mw, _ = model.input_shape
        out = np.empty((n, h, w), np.float32)
        for sl in _batches(n, self.batch_size):
            x = _resize_float(frames_to_tensor(arr[sl]).to(self.device), mh, mw)
            p = model(x.permute(0, 2, 3, 1).contiguous())[0].permute(0, 3, 1, 2)
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
            out[sl] = p[:, 0].cpu().numpy()
        return out

    def scores(self, frames: np.ndarray) -> np.ndarray:
        p = self.person_probability(frames)
        return np.stack([1.0 - p, p], axis=1)

    def label(self, frames: np.ndarray) -> np.ndarray:
        return (self.person_probability(frames) > self.threshold).astype(np.int64)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in label order (bundled text file)."""
    path = Path(__file__).with_name("imagenet_classes.txt")
    names = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    if len(names) != 1000:
        raise RuntimeError(f"{path}: expected 1000 class names, found {len(names)}")
    return names


class ImageNetTeacher(Teacher):
    """ImageNet MobileNetV2 classifier (1000 classes) with torchvision's evaluation preprocessing."""

    task = CLASSIFICATION
    num_classes = 1000

    def __init__(self, batch_size: int = 8, device: Union[str, torch.device] = "cpu", resize: int = 256,
                 crop: int = 224) -> None:
        from edgert.vision.models import IMAGENET_MEAN, IMAGENET_STD, mobilenet_v2_imagenet  # noqa: PLC0415

        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if not 0 < crop <= resize:
            raise ValueError(f"crop: expected 0 < crop <= resize, got crop={crop} resize={resize}")
        self.name = "mobilenetv2-imagenet"
        self.batch_size, self.resize, self.crop = int(batch_size), int(resize), int(crop)
        self.device = torch.device(device)
        try:
            self.model = mobilenet_v2_imagenet().to(self.device)
        except (FileNotFoundError, RuntimeError, ValueError) as exc:
            raise TeacherError(f"teacher {self.name!r}: {exc}") from exc
        self.class_names = imagenet_class_names()
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """Shorter side to ``resize`` (antialiased bilinear), centre crop ``crop``, ImageNet normalization."""
        x = frames_to_tensor(check_frames(frames)).to(self.device)
        h, w = x.shape[-2:]
        scale = self.resize / min(h, w)
        nh, nw = max(self.crop, round(h * scale)), max(self.crop, round(w * scale))
        x = _resize_float(x, nh, nw)
        top, left = (nh - self.crop) // 2, (nw - self.crop) // 2
        x = x[:, :, top:top + self.crop, left:left + self.crop]
        return (x - self._mean) / self._std

    @torch.no_grad()
    def scores(self, frames: np.ndarray) -> np.ndarray:
        arr = check_frames(frames)
        outs = [torch.softmax(self.model(self.preprocess(arr[sl])), dim=1).cpu()
                for sl in _batches(arr.shape[0], self.batch_size)]
        return torch.cat(outs).numpy().astype(np.float32)


class ModelTeacher(Teacher):
    """A generic model as a teacher: ``forward`` maps float ``[N, 3, H, W]`` to logits ``[N, C]`` or
    ``[N, C, h, w]``. Use :class:`TorchTeacher` or :class:`OnnxTeacher`.

    Args:
        task: ``segmentation``/``classification``, or None to infer from the output's rank.
        class_names: names in index order (default ``class0``, ``class1``, ...).
        input_size: ``(width, height)`` frames are resized to before the forward pass (None: as they come).
        mean, std: per-channel normalization applied to the ``[0, 1]`` input (None: none).
        probe_size: ``(width, height)`` of the probe frame when ``input_size`` is None.
        outputs: ``logits`` (softmax applied) or ``probs`` (used as they are).
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], *, name: str, task: Optional[str] = None,
                 class_names: Optional[Sequence[str]] = None, input_size: Optional[tuple[int, int]] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 probe_size: tuple[int, int] = (224, 224), outputs: str = "logits", batch_size: int = 8) -> None:
        if task is not None and task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        if outputs not in ("logits", "probs"):
            raise ValueError(f"outputs: expected logits or probs, got {outputs!r}")
        if input_size is not None and (len(input_size) != 2 or min(input_size) <= 0):
            raise ValueError(f"input_size: expected (width, height) > 0, got {input_size!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self._forward = forward
        self.name = name
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.outputs = outputs
        self.batch_size = int(batch_size)
        self._mean = None if mean is None else torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self._std = None if std is None else torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        w, h = self.input_size or probe_size
        try:
            probe = self._run(torch.full((1, 3, h, w), 0.5))
        except Exception as exc:  # noqa: BLE001 - any failure of a user model is reported as a load failure
            raise TeacherError(f"teacher {name!r}: probe forward pass on float [1, 3, {h}, {w}] failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        inferred = {2: CLASSIFICATION, 4: SEGMENTATION}.get(probe.ndim)
        if inferred is None or probe.shape[0] != 1 or probe.shape[1] < 1:
            raise TeacherError(f"teacher {name!r}: expected logits [N, C] or [N, C, h, w], got {list(probe.shape)}")
        if task is not None and task != inferred:
            raise TeacherError(f"teacher {name!r}: task {task!r} but the model outputs {list(probe.shape)} "
                               f"({inferred})")
        self.task = inferred
        self.num_classes = int(probe.shape[1])
        if class_names is None:
            self.class_names = [f"class{i}" for i in range(self.num_classes)]
        else:
            self.class_names = list(class_names)
            if len(self.class_names) != self.num_classes:
                raise TeacherError(f"teacher {name!r}: {len(self.class_names)} class names for "
                                   f"{self.num_classes} model outputs")

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self._mean is not None and self._std is not None:  # both or neither (checked in __init__)
            x = (x - self._mean) / self._std
        y = self._forward(x)
        if isinstance(y, dict):  # torchvision-style segmentation models return {"out": ...}
            y = y["out"] if "out" in y else next(iter(y.values()))
        elif isinstance(y, (tuple, list)):
            y = y[0]
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"model returned {type(y).__name__}, expected a tensor")
        if not y.is_floating_point():
            raise TypeError(f"model returned {y.dtype} values, expected float logits")
        return y.float()

    @torch.no_grad()
    def scores(self, frames: np.ndarray) -> np.ndarray:
        arr = check_frames(frames)
        n, h, w, _ = arr.shape
        outs = []
        for sl in _batches(n, self.batch_size):
            x = frames_to_tensor(arr[sl])
            if self.input_size is not None:
                x = _resize_float(x, self.input_size[1], self.input_size[0])
            y = self._run(x)
            if y.ndim == 4 and y.shape[-2:] != (h, w):
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            if y.shape[1] != self.num_classes:
                raise TeacherError(f"teacher {self.name!r}: output {list(y.shape)} changed from "
                                   f"{self.num_classes} classes")
            p = torch.softmax(y, dim=1) if self.outputs == "logits" else y
            outs.append(p.cpu())
        return torch.cat(outs).numpy().astype(np.float32)


class TorchTeacher(ModelTeacher):
    """A PyTorch ``nn.Module``, TorchScript file or ``torch.export`` program (``.pt2``) as a teacher (see
    :class:`ModelTeacher` for options)."""

    def __init__(self, model: Union[nn.Module, str, Path], *, device: Union[str, torch.device] = "cpu",
                 **kwargs: Any) -> None:
        self.device = torch.device(device)
        module: nn.Module
        if isinstance(model, (str, Path)):  # TorchScript archive, or a torch.export program (.pt2)
            path = Path(model)
            if not path.is_file():
                raise TeacherError(f"teacher {str(path)!r}: no such file")
            try:
                if path.suffix.lower() == ".pt2":
                    module = torch.export.load(str(path)).module()
                else:
                    module = torch.jit.load(str(path), map_location=self.device)
            except Exception as exc:  # noqa: BLE001 - torch raises several unrelated types here
                raise TeacherError(f"teacher {str(path)!r}: not a loadable TorchScript archive or torch.export "
                                   f"program ({exc}); save models with torch.jit.script(model).save(path) or "
                                   "torch.export.save(torch.export.export(model, args), 'model.pt2')") from exc
            name = kwargs.pop("name", path.name)
        elif isinstance(model, nn.Module):
            module = model.to(self.device)
            name = kwargs.pop("name", type(model).__name__)
        else:
            raise TypeError(f"model: expected an nn.Module or a TorchScript path, got {type(model).__name__}")
        # exported programs are fixed in the mode they were exported in and refuse .eval()
        exported = isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".pt2"
        self.model = module if exported else module.eval()
        super().__init__(lambda x: self.model(x.to(self.device)), name=name, **kwargs)


class OnnxTeacher(ModelTeacher):
    """An ONNX model (first input float32 NCHW, first output logits) run with onnxruntime on the CPU."""

    def __init__(self, path: Union[str, Path], **kwargs: Any) -> None:
        p = Path(path)
        if not p.is_file():
            raise TeacherError(f"teacher {str(p)!r}: no such file")
        try:
            import onnxruntime as ort  # noqa: PLC0415 - optional
        except ImportError as exc:
            raise TeacherError(f"teacher {str(p)!r}: ONNX teachers need onnxruntime (pip install onnxruntime)") from exc
        try:
            self.session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise TeacherError(f"teacher {str(p)!r}: onnxruntime cannot load it ({exc})") from exc
        self._input_name = self.session.get_inputs()[0].name

        def forward(x: torch.Tensor) -> torch.Tensor:
            out = self.session.run(None, {self._input_name: x.numpy().astype(np.float32)})[0]
            return torch.from_numpy(np.asarray(out))

        super().__init__(forward, name=kwargs.pop("name", p.name), **kwargs)


def load_teacher(spec: Union[str, Path, nn.Module], *, num_classes: Optional[int] = None,
                 class_names: Optional[Sequence[str]] = None, expect_task: Optional[str] = None,
                 **kwargs: Any) -> Teacher:
    """Load a teacher by name, file or module, and check its label space.

    Args:
        spec: one of :data:`BUILTIN_TEACHERS`, a TorchScript/.onnx path, or an ``nn.Module``.
        num_classes, class_names, expect_task: if given, the teacher must match (see
            :meth:`Teacher.check_compatible`) or loading fails.
        kwargs: options of the teacher class (``variant``/``threshold`` for MediaPipe, ``input_size``,
            ``mean``/``std``, ``class_names`` for model files, ``batch_size``, ``device``, ...).

    Raises:
        TeacherError: unknown spec, a model that does not load or run, or a label-space mismatch.
    """
    teacher: Teacher
    if isinstance(spec, nn.Module):
        teacher = TorchTeacher(spec, class_names=class_names, **kwargs)
    else:
        text = str(spec)
        if text in ("mediapipe-selfie", "mediapipe-selfie-general", "mediapipe-selfie-landscape"):
            variant = {"mediapipe-selfie": kwargs.pop("variant", "auto"), "mediapipe-selfie-general": "general",
                       "mediapipe-selfie-landscape": "landscape"}[text]
            teacher = MediaPipeSelfieTeacher(variant=variant, **kwargs)
        elif text == "mobilenetv2-imagenet":
            teacher = ImageNetTeacher(**kwargs)
        elif text.lower().endswith(".onnx"):
            teacher = OnnxTeacher(text, class_names=class_names, **kwargs)
        elif text.lower().endswith(_TORCHSCRIPT_SUFFIXES):
            teacher = TorchTeacher(text, class_names=class_names, **kwargs)
        else:
            hint = "no such file; " if not Path(text).exists() else ""
            raise TeacherError(f"teacher {text!r}: {hint}expected one of {', '.join(BUILTIN_TEACHERS)}, a "
                               f"TorchScript file ({', '.join(_TORCHSCRIPT_SUFFIXES)}) or an .onnx file")
    teacher.check_compatible(num_classes=num_classes, class_names=class_names, task=expect_task)
    return teacher
