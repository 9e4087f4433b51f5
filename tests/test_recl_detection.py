"""RECL's face-detection task (edgert.recl.detection) and its MTCNN teacher (edgert.vision.mtcnn)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import needs_av, needs_mtcnn
from edgert import data
from edgert.recl.detection import (
    MAX_FACES,
    DetectionJob,
    DetectionTask,
    TinyDetector,
    centernet_targets,
    decode,
    frame_f1,
)
from edgert.recl.scheduler import RetrainingJob
from edgert.recl.task import Task, TrainableJob
from edgert.recl.tasks import split_holdout
from edgert.vision.mtcnn import MTCNN, load_network, nms
from edgert.vision.teachers import TeacherError

pytestmark = pytest.mark.usefixtures("one_thread")


def boxes(*rows: tuple[float, float, float, float], m: int = 4) -> np.ndarray:
    """One frame's label ``[1, m, 5]`` with ``rows`` valid."""
    out = np.zeros((1, m, 5), np.float32)
    for i, r in enumerate(rows):
        out[0, i] = (*r, 1.0)
    return out


# ------------------------------------------------------------------------------------------------ metric


def test_frame_f1_edge_cases():
    empty = boxes()
    face = boxes((10, 10, 30, 30))
    assert frame_f1(empty, empty).tolist() == [1.0]  # nothing to find, nothing found
    assert frame_f1(face, empty).tolist() == [0.0]  # one miss
    assert frame_f1(empty, face).tolist() == [0.0]  # one false alarm
    assert frame_f1(face, face).tolist() == [1.0]
    # one hit and one false alarm: 2 TP / (2 TP + FP + FN) = 2 / 3
    assert frame_f1(face, boxes((10, 10, 30, 30), (50, 50, 60, 60))) == pytest.approx([2 / 3])
    # two predictions on one face match it once (greedy, one-to-one)
    assert frame_f1(face, boxes((10, 10, 30, 30), (11, 10, 31, 30))) == pytest.approx([2 / 3])
    # IoU threshold: a box shifted by 8 of 20 pixels has IoU 12 / 28 = 0.43
    shifted = boxes((18, 10, 38, 30))
    assert frame_f1(face, shifted).tolist() == [0.0]
    assert frame_f1(face, shifted, iou_threshold=0.4).tolist() == [1.0]
    # IoU exactly at the threshold counts (>=): 10x20 inside 20x20 is 0.5
    assert frame_f1(face, boxes((10, 10, 20, 30))).tolist() == [1.0]
    # greedy by IoU: the best pair is matched first, the other prediction then takes the other face
    two = boxes((0, 0, 20, 20), (15, 0, 35, 20))
    assert frame_f1(two, boxes((14, 0, 34, 20), (1, 0, 21, 20))).tolist() == [1.0]
    # rows with valid == 0 are ignored whatever they hold; frames are independent; M may differ
    junk = face.copy()
    junk[0, 1, :4] = (100, 100, 120, 120)
    both = np.concatenate([junk, empty])
    assert frame_f1(both, np.concatenate([face[:, :2], empty[:, :2]])).tolist() == [1.0, 1.0]


def test_frame_f1_rejects_bad_input():
    ok = boxes((10, 10, 30, 30))
    for bad, match in ((ok[0], r"\[N, M, 5\]"), (ok[..., :4], r"\[N, M, 5\]"), (ok.astype(np.int64), "float"),
                       (np.concatenate([ok, ok]), "N=1")):
        with pytest.raises(ValueError, match=match):
            frame_f1(ok, bad)
    flag = ok.copy()
    flag[0, 0, 4] = 0.5
    with pytest.raises(ValueError, match="valid column"):
        frame_f1(flag, ok)
    flipped = boxes((30, 10, 10, 30))
    with pytest.raises(ValueError, match="x1 >= x0"):
        frame_f1(flipped, ok)
    with pytest.raises(ValueError, match="iou_threshold"):
        frame_f1(ok, ok, iou_threshold=0.0)


# -------------------------------------------------------------------------------------------------- NMS


def nms_reference(b: np.ndarray, s: np.ndarray, thr: float, mode: str, off: float) -> list[int]:
    """Classic greedy NMS, written independently: keep the best, drop what overlaps it by more than ``thr``."""
    order = np.argsort(-s, kind="stable")
    area = (b[:, 2] - b[:, 0] + off) * (b[:, 3] - b[:, 1] + off)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = np.maximum(0.0, np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]) + off)
        ih = np.maximum(0.0, np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]) + off)
        inter = iw * ih
        over = inter / (np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter)
        order = rest[over <= thr]
    return keep


@pytest.mark.parametrize("mode,off", [("union", 0.0), ("min", 1.0), ("union", 1.0)])
def test_nms_matches_reference(mode, off):
    rng = np.random.default_rng(7)
    xy = rng.integers(0, 60, (300, 2)).astype(np.float64)
    wh = rng.integers(4, 30, (300, 2)).astype(np.float64)
    b = np.concatenate([xy, xy + wh], 1)
    s = rng.random(300)
    for thr in (0.3, 0.5, 0.7):
        got = nms(torch.from_numpy(b).float(), torch.from_numpy(s).float(), thr, mode, off).tolist()
        assert got == nms_reference(b.astype(np.float32).astype(np.float64), s.astype(np.float32), thr, mode, off)
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    with pytest.raises(ValueError, match="mode"):
        nms(torch.zeros(1, 4), torch.zeros(1), 0.5, mode="max")


# ------------------------------------------------------------------------------------------------ teacher


@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    from edgert.vision.video import read_clip

    return read_clip(data.clip_path("carphone"))[0]


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[-2:], axis=(1, 2))  # [C, h, w, k, k]
    return np.einsum("chwij,ocij->ohw", win, w, optimize=True) + b[:, None, None]


def _prelu(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, a[:, None, None] * x)


def _maxpool2_ceil(x: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    pad = np.full((c, h + h % 2, w + w % 2), -np.inf)
    pad[:, :h, :w] = x
    return pad.reshape(c, pad.shape[1] // 2, 2, pad.shape[2] // 2, 2).max(axis=(2, 4))


def pnet_reference(state: dict[str, torch.Tensor], im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MTCNN's PNet in NumPy (float64) on one normalised image ``[3, H, W]``: (regression, face probability)."""
    p = {k: v.double().numpy() for k, v in state.items()}
    x = _maxpool2_ceil(_prelu(_conv(im, p["conv1.weight"], p["conv1.bias"]), p["prelu1.weight"]))
    x = _prelu(_conv(x, p["conv2.weight"], p["conv2.bias"]), p["prelu2.weight"])
    x = _prelu(_conv(x, p["conv3.weight"], p["conv3.bias"]), p["prelu3.weight"])
    logits = _conv(x, p["conv4_1.weight"], p["conv4_1.bias"])
    prob = np.exp(logits[1]) / np.exp(logits).sum(0)
    return _conv(x, p["conv4_2.weight"], p["conv4_2.bias"]), prob


@needs_mtcnn
@needs_av
def test_mtcnn_stage_one_matches_numpy_reference(carphone):
    """PNet and the stage-1 candidates (windows over threshold, NMS) against a NumPy implementation, on one
    pyramid level (``factor`` tiny) of a real frame."""
    det = MTCNN(min_face_size=24, factor=0.01)
    assert det.scales(144, 176) == [0.5]
    images = torch.from_numpy(carphone[60:61].copy()).permute(0, 3, 1, 2).float()
    im = F.interpolate(images, size=(int(144 * 0.5 + 1), int(176 * 0.5 + 1)), mode="area")
    norm = ((im - 127.5) * 0.0078125)[0].double().numpy()
    reg, prob = pnet_reference(det.pnet.state_dict(), norm)
    with torch.no_grad():
        treg, tprob = det.pnet(torch.from_numpy(norm).float()[None])
    np.testing.assert_allclose(tprob[0, 1].numpy(), prob, atol=1e-5)
    np.testing.assert_allclose(treg[0].numpy(), reg, atol=1e-4)
    ys, xs = np.nonzero(prob >= 0.6)
    cand = np.stack([np.floor((2 * xs + 1) / 0.5), np.floor((2 * ys + 1) / 0.5), np.floor((2 * xs + 12) / 0.5),
                     np.floor((2 * ys + 12) / 0.5), prob[ys, xs], *reg[:, ys, xs]], 1)  # [K, 9]
    expect = cand[nms_reference(cand[:, :4], cand[:, 4], 0.5, "union", 0.0)]
    got, groups = det.proposals(images)
    assert len(expect) >= 3 and got.shape == (len(expect), 9) and (groups == 0).all()
    got = got.numpy()
    np.testing.assert_allclose(got[np.lexsort(got[:, :2].T)], expect[np.lexsort(expect[:, :2].T)], atol=1e-4)


@needs_mtcnn
@needs_av
def test_mtcnn_finds_the_carphone_face(carphone):
    """The carphone driver's face is found in every sampled frame, once, where it is (measured on all 120
    frames: centres x 60-89, y 55-72, sides 42-55 pixels)."""
    det = MTCNN()
    assert det.scales(144, 176)[0] == pytest.approx(0.6) and len(det.scales(144, 176)) == 6
    faces = det.detect(carphone[::12])
    assert len(faces) == 10
    for f in faces:
        assert f.dtype == np.float32 and f.shape == (1, 5)
        x0, y0, x1, y1, p = f[0]
        assert 50 <= (x0 + x1) / 2 <= 100 and 45 <= (y0 + y1) / 2 <= 80 and 35 <= x1 - x0 <= 65
        assert p >= 0.9
    blank = det.detect(np.zeros((2, 144, 176, 3), np.uint8))
    assert [f.shape for f in blank] == [(0, 5), (0, 5)]
    assert det.detect(np.zeros((1, 10, 10, 3), np.uint8))[0].shape == (0, 5)  # smaller than any face
    with pytest.raises(ValueError, match="frames"):
        det.detect(carphone[0])


def test_mtcnn_missing_package_names_it(monkeypatch):
    monkeypatch.setattr(data, "_package_file", lambda module, relpath: None)
    with pytest.raises(TeacherError, match=r"facenet-pytorch.*pip install --no-deps facenet-pytorch==2\.6\.0"):
        load_network("pnet")
    with pytest.raises(TeacherError, match="detection task cannot load its teacher.*facenet-pytorch"):
        _ = DetectionTask().teacher
    with pytest.raises(ValueError, match="name"):
        load_network("xnet")


# ------------------------------------------------------------------------------------------------- expert


def test_targets_decode_round_trip():
    """An output built from the training targets decodes back to the label boxes."""
    label = np.zeros((2, MAX_FACES, 5), np.float32)
    label[0, 0] = (20.5, 10.0, 60.5, 58.0, 1)
    label[0, 1] = (90.0, 40.0, 110.0, 62.0, 1)
    y = torch.from_numpy(label)
    heat, reg, mask = centernet_targets(y, 24, 32)
    assert heat.shape == (2, 24, 32) and reg.shape == (2, 4, 24, 32) and int(mask.sum()) == 2
    assert float(heat.max()) == 1.0 and float(heat[1].max()) == 0.0  # frame 1 has no face
    logit = torch.logit(heat.clamp(1e-4, 1 - 1e-4))
    out = torch.cat([logit[:, None], reg], dim=1)
    got, scores = decode(out)
    assert got.shape == (2, MAX_FACES, 5) and scores.shape == (2, MAX_FACES)
    assert frame_f1(label, got.numpy(), iou_threshold=0.99).tolist() == [1.0, 1.0]
    order = np.argsort(got[0, :2, 0].numpy())
    np.testing.assert_allclose(got[0, :2][order].numpy(), label[0, :2], atol=1e-4)
    assert got[1].abs().sum() == 0 and scores[1].sum() == 0


def test_detection_task_protocol_and_bad_input():
    task = DetectionTask()
    assert isinstance(task, Task) and task.name == "detection"
    assert task.tag == "recl-det-centernet16-128x96-1c"
    expert = task.new_expert(0)
    assert isinstance(expert, TinyDetector) and not expert.training
    for k, v in task.new_expert(0).state_dict().items():  # seeded
        assert torch.equal(v, expert.state_dict()[k])
    frames = np.random.default_rng(0).integers(0, 255, (6, 96, 128, 3), dtype=np.uint8)
    x = task.preprocess(frames)
    assert x.shape == (6, 3, 96, 128) and x.dtype == torch.float32
    assert expert(x).shape == (6, 5, 24, 32)
    assert task.preprocess(frames[:, :48, :64]).shape == (6, 3, 96, 128)  # any camera size
    # an untrained expert finds nothing: F1 1 on empty labels, 0 where the teacher has a face
    labels = np.zeros((6, MAX_FACES, 5), np.float32)
    labels[3, 0] = (10, 10, 40, 40, 1)
    assert task.accuracy(expert, frames, labels).tolist() == [1, 1, 1, 0, 1, 1]
    n = len(frames)
    for bad in (np.zeros((n, MAX_FACES, 4), np.float32), np.zeros((n, 8, 5), np.float32),
                np.zeros((n - 1, MAX_FACES, 5), np.float32), np.zeros((n, MAX_FACES, 5), np.int64),
                np.zeros((n, 5), np.float32)):
        with pytest.raises(ValueError, match=r"labels: expected float boxes \[N, 16, 5\]|labels: expected float"):
            task.accuracy(expert, frames, bad)
        with pytest.raises(ValueError, match="labels"):
            task.retraining_job("j", None, frames, bad)
    for bad_frames in (frames.astype(np.float32), frames[..., 0], frames[:0]):
        with pytest.raises(ValueError, match="frames"):
            task.accuracy(expert, bad_frames, labels)
    with pytest.raises(ValueError, match="not a tensor"):
        task.retraining_job("j", {"nope": torch.zeros(1)}, frames, labels)
    with pytest.raises(ValueError, match="input_size"):
        DetectionTask(input_size=(100, 96))
    with pytest.raises(ValueError, match="optimizer"):
        DetectionTask(optimizer="rmsprop")
    with pytest.raises(ValueError, match="x: expected"):
        expert(torch.zeros(1, 3, 90, 128))


@needs_mtcnn
@needs_av
def test_detection_retraining_improves_held_out_f1():
    """On a carphone scene (40 frames at the workload's 128x96, one face each) a fresh expert finds nothing
    (F1 0) and a few micro-windows make it find the face (F1 >= 0.9 on the held-out frames); the job pickles,
    and the expert the zoo serves scores what the job reported (BatchNorm stays frozen)."""
    from edgert.recl.workload import ClipLibrary, Scene

    frames = ClipLibrary((128, 96)).scene_frames(Scene("carphone", 0.0, 4.0))[0][::3].copy()
    task = DetectionTask()
    labels = task.label(frames)
    assert labels.shape == (40, MAX_FACES, 5) and labels.dtype == np.float32
    assert (labels[:, 0, 4] == 1).all() and (labels[:, 1:] == 0).all()  # one face per frame
    side = labels[:, 0, 2] - labels[:, 0, 0]
    assert 25 <= side.min() and side.max() <= 50
    job = task.retraining_job("cam0", None, frames, labels, seed=1)
    assert isinstance(job, DetectionJob) and isinstance(job, RetrainingJob) and isinstance(job, TrainableJob)
    before = job.evaluate()
    accs = []
    for _ in range(6):
        job.run_micro_window()
        accs.append(job.evaluate())
        if accs[-1] >= 0.9:
            break
    assert before == 0.0 and max(accs) >= 0.9, (before, accs)
    job = pickle.loads(pickle.dumps(job))
    _, val = split_holdout(len(frames), 0.25, 1)
    assert job.evaluate() == pytest.approx(accs[-1])
    served = task.new_expert(5)
    with torch.no_grad():
        for name, p in served.named_parameters():
            p.copy_(job.model_state()[name])
    assert np.mean(task.accuracy(served, frames[val], labels[val])) == pytest.approx(accs[-1])
