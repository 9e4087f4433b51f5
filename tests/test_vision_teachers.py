"""Teachers on real data: MediaPipe selfie segmentation (PyTorch TFLite executor, parity with MediaPipe's
own runtime), ImageNet MobileNetV2 on a real photo, generic PyTorch/TorchScript/ONNX teachers, bad input."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import DATA_DIR, needs_av, needs_imagenet, needs_mediapipe_model, needs_skimage
from edgert.data import model_path
from edgert.vision import tflite
from edgert.vision.teachers import (
    MediaPipeSelfieTeacher,
    TeacherError,
    TorchTeacher,
    check_frames,
    imagenet_class_names,
    load_teacher,
)

REF = DATA_DIR / "vision" / "mediapipe_selfie_ref.npz"


pytestmark = pytest.mark.usefixtures("one_thread")


def _bikes(start_s: float, n: int = 1, size: tuple[int, int] | None = None) -> np.ndarray:
    from edgert.data import clip_path
    from edgert.vision.video import read_clip

    frames, _ = read_clip(clip_path("bikes"), size, start_s=start_s, max_frames=n)
    return frames


@needs_mediapipe_model
@needs_av
@needs_skimage
def test_tflite_executor_matches_mediapipe_runtime() -> None:
    """Person probabilities equal MediaPipe 0.10.21's own TFLite/XNNPACK outputs (recorded in tests/data)."""
    import skimage.data

    from edgert.data import clip_path
    from edgert.vision.video import read_clip, resize

    ref = np.load(REF)
    astronaut = resize(skimage.data.astronaut()[None], (256, 256))
    carphone = resize(read_clip(clip_path("carphone"), max_frames=1)[0], (256, 256))
    bikes = resize(_bikes(5.0), (256, 144))
    for name, frames, want in (("mediapipe-selfie", np.concatenate([astronaut, carphone]), ref["general"]),
                               ("mediapipe-selfie-landscape", bikes, ref["landscape"])):
        module = tflite.load(model_path(name))
        with torch.no_grad():
            got = module(torch.from_numpy(frames).float() / 255)[0][..., 0].numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want.astype(np.float32), atol=2e-3)
        assert (got > 0.5).mean() > 0.05  # the references are not trivially empty


@needs_mediapipe_model
@needs_av
@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None, reason="ai-edge-litert not installed")
def test_tflite_executor_matches_litert() -> None:
    """Cross-check on live frames against Google's LiteRT runtime (which also runs on numpy 2)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgert.vision.video import resize

    frames = resize(_bikes(4.5, 2), (256, 144))
    x = frames.astype(np.float32) / 255
    interpreter = Interpreter(model_path=str(model_path("mediapipe-selfie-landscape")))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    want = []
    for image in x:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        want.append(interpreter.get_tensor(out["index"])[0, ..., 0].copy())
    module = tflite.load(model_path("mediapipe-selfie-landscape"))
    xt = torch.from_numpy(x).requires_grad_(True)
    got = module(xt)[0][..., 0]
    np.testing.assert_allclose(got.detach().numpy(), np.stack(want), atol=2e-3)
    got.sum().backward()  # the executor is differentiable (input gradients for OneAdapt-style uses)
    assert xt.grad is not None and torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0


@needs_mediapipe_model
@needs_av
def test_selfie_teacher_finds_the_cyclist() -> None:
    teacher = load_teacher("mediapipe-selfie", num_classes=2, class_names=["background", "person"])
    assert teacher.task == "segmentation" and teacher.num_classes == 2
    cyclist = _bikes(5.0)  # a cyclist rides through the frame at t = 5 s
    road = _bikes(0.0)  # top view of a road marking, nobody in it
    labels = teacher.label(np.concatenate([cyclist, road]))
    assert labels.shape == (2, 272, 640) and labels.dtype == np.int64
    assert set(np.unique(labels)) <= {0, 1}
    person = labels[0] == 1
    assert 0.03 < person.mean() < 0.5
    ys, xs = np.nonzero(person)
    # the person region is one compact blob in the right half of the frame, not scattered noise
    assert xs.mean() > 320 and np.percentile(xs, 95) - np.percentile(xs, 5) < 320
    assert labels[1].mean() < 0.005
    scores = teacher.scores(cyclist)
    assert scores.shape == (1, 2, 272, 640) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-6)


@needs_mediapipe_model
def test_selfie_teacher_variants_and_bad_input(tmp_path: Path) -> None:
    teacher = MediaPipeSelfieTeacher(variant="general")
    frame = np.zeros((1, 50, 70, 3), np.uint8)
    assert teacher.label(frame).shape == (1, 50, 70)
    with pytest.raises(ValueError, match=r"expected uint8 \[N, H, W, 3\]"):
        teacher.label(np.zeros((50, 70, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected uint8"):
        teacher.label(np.zeros((1, 50, 70, 3), np.float32))
    with pytest.raises(ValueError, match="at least one"):
        teacher.label(np.zeros((0, 50, 70, 3), np.uint8))
    with pytest.raises(ValueError, match="variant"):
        MediaPipeSelfieTeacher(variant="portrait")
    (tmp_path / "selfie_segmentation.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(TeacherError, match="not a TFLite model"):
        MediaPipeSelfieTeacher(variant="general", model_dir=tmp_path)


@needs_mediapipe_model
def test_tflite_rejects_malformed_files(tmp_path: Path) -> None:
    data = model_path("mediapipe-selfie").read_bytes()
    with pytest.raises(tflite.TFLiteError, match="file identifier"):
        tflite.parse(data[:4] + b"XXXX" + data[8:])
    for cut in (6, 100, 4096, len(data) // 2):
        with pytest.raises(tflite.TFLiteError):
            tflite.TFLiteModule(tflite.parse(data[:cut]))
    with pytest.raises(FileNotFoundError):
        tflite.load(tmp_path / "absent.tflite")
    module = tflite.load(model_path("mediapipe-selfie"))
    with pytest.raises(ValueError, match=r"expected float32 \[N, 256, 256, 3\]"):
        module(torch.zeros(1, 3, 256, 256))


@needs_mediapipe_model
def test_tflite_mutations_fail_cleanly() -> None:
    """Bounded fuzzing: random byte changes either load or raise TFLiteError, never another exception."""
    data = model_path("mediapipe-selfie").read_bytes()
    rng = np.random.default_rng(7)
    rejected = 0
    for _ in range(120):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            mutated[int(rng.integers(len(data) - 60000, len(data)))] = int(rng.integers(0, 256))
        try:
            tflite.TFLiteModule(tflite.parse(bytes(mutated)))
        except tflite.TFLiteError:
            rejected += 1
    assert rejected > 10  # the table region was really hit


def test_tflite_resize_conventions() -> None:
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    # half-pixel centres equal PyTorch's align_corners=False; align_corners equals PyTorch's True
    torch.testing.assert_close(tflite.resize_bilinear(x, 8, 6, half_pixel_centers=True),
                               torch.nn.functional.interpolate(x, (8, 6), mode="bilinear", align_corners=False))
    torch.testing.assert_close(tflite.resize_bilinear(x, 7, 5, align_corners=True),
                               torch.nn.functional.interpolate(x, (7, 5), mode="bilinear", align_corners=True))
    # legacy TFLite: src = dst * in/out, no offset
    legacy = tflite.resize_bilinear(x, 8, 8)
    assert legacy[0, 0, 0, 0] == 0 and legacy[0, 0, 0, 1] == pytest.approx(0.5)
    assert legacy[0, 0, 7, 7] == 15  # clamped at the last row/column


@needs_imagenet
@needs_skimage
def test_imagenet_teacher_classifies_a_real_photo() -> None:
    import skimage.data

    teacher = load_teacher("mobilenetv2-imagenet", expect_task="classification", num_classes=1000)
    chelsea = skimage.data.chelsea()[None]  # a tabby cat
    coffee = skimage.data.coffee()[None]  # a cup of coffee
    scores = teacher.scores(np.concatenate([chelsea, chelsea]))  # same size in one batch
    assert scores.shape == (2, 1000)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    top5 = np.argsort(-scores[0])[:5]
    cats = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cats & set(top5.tolist()), [teacher.class_names[i] for i in top5]
    assert teacher.label(chelsea)[0] in cats
    assert "espresso" in teacher.class_names[int(teacher.label(coffee)[0])]
    assert len(imagenet_class_names()) == 1000


class _TinySeg(nn.Module):
    """Outputs 3-class logits at half resolution: class 2 where the red channel dominates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.avg_pool2d(x, 2)
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        return torch.cat([g, b, r], dim=1) * 10


def test_torch_and_torchscript_teachers(tmp_path: Path) -> None:
    frames = np.zeros((2, 20, 30, 3), np.uint8)
    frames[:, :, 15:, 0] = 255  # right half red
    frames[:, :, :15, 1] = 255  # left half green
    teacher = load_teacher(_TinySeg(), class_names=["green", "blue", "red"])
    assert teacher.task == "segmentation" and teacher.num_classes == 3
    labels = teacher.label(frames)
    assert labels.shape == (2, 20, 30)
    assert (labels[:, :, :14] == 0).all() and (labels[:, :, 16:] == 2).all()
    path = tmp_path / "seg.pt"
    torch.jit.script(_TinySeg()).save(str(path))
    scripted = load_teacher(str(path), num_classes=3)
    np.testing.assert_array_equal(scripted.label(frames), labels)
    exported = tmp_path / "seg.pt2"
    n = torch.export.Dim("n", min=1, max=64)
    torch.export.save(torch.export.export(_TinySeg(), (torch.zeros(2, 3, 20, 30),), dynamic_shapes=({0: n},)),
                      str(exported))
    from_export = load_teacher(str(exported), input_size=(30, 20))
    np.testing.assert_array_equal(from_export.label(frames), labels)
    clf = load_teacher(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)), input_size=(16, 16))
    assert clf.task == "classification" and clf.label(frames).shape == (2,)


def test_teacher_errors(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="expected one of mediapipe-selfie"):
        load_teacher("no-such-teacher")
    with pytest.raises(TeacherError, match="no such file"):
        load_teacher(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(TeacherError, match="TorchScript"):
        load_teacher(str(bad))
    with pytest.raises(TeacherError, match="probe forward pass"):
        load_teacher(nn.Linear(5, 2))  # cannot take images
    with pytest.raises(TeacherError, match=r"expected logits \[N, C\] or \[N, C, h, w\]"):
        load_teacher(nn.Flatten(0))
    with pytest.raises(TeacherError, match="has 3 classes, the student 2"):
        load_teacher(_TinySeg(), num_classes=2)
    with pytest.raises(TeacherError, match="2 class names for 3 model outputs"):
        TorchTeacher(_TinySeg(), class_names=["a", "b"])
    with pytest.raises(TeacherError, match="does segmentation, the student expects classification"):
        load_teacher(_TinySeg(), expect_task="classification")
    teacher = load_teacher(_TinySeg())
    with pytest.raises(TeacherError, match="do not match"):
        teacher.check_compatible(class_names=["x", "y", "z"])
    with pytest.raises(ValueError, match="frames"):
        check_frames(np.zeros((1, 4, 4, 4), np.uint8))


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
                    reason="onnxruntime/onnx not installed")
def test_onnx_teacher(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # a 1x1 convolution mapping (r, g, b) to logits (g, b, r) * 10: the same rule as _TinySeg, at full size
    weight = np.zeros((3, 3, 1, 1), np.float32)
    weight[0, 1] = weight[1, 2] = weight[2, 0] = 10.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "seg.onnx"
    onnx.save(model, str(path))
    teacher = load_teacher(str(path), num_classes=3)
    frames = np.zeros((2, 20, 30, 3), np.uint8)
    frames[:, :, 15:, 0] = 255
    frames[:, :, :15, 1] = 255
    labels = teacher.label(frames)
    assert labels.shape == (2, 20, 30)
    assert (labels[:, :, :15] == 0).all() and (labels[:, :, 15:] == 2).all()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(TeacherError, match="onnxruntime cannot load it"):
        load_teacher(str(bad))
