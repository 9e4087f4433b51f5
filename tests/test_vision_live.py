"""Live video sources: an RTSP stream published by another process on localhost, recorded losslessly,
and the AMS evaluation run on such a stream (it records once, every scheme reads the recording).

The publisher is a real RTSP client (FFmpeg's RTSP muxer through PyAV, libx264, interleaved over TCP)
pushing to our reader, which listens (``rtsp_flags=listen``), so no RTSP server needs to be installed.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import needs_av

pytestmark = needs_av
W, H, FPS, N = 96, 64, 25, 40

_PUBLISHER = textwrap.dedent("""
    import sys, time
    from fractions import Fraction
    import av, numpy as np
    url, n, w, h, fps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    deadline = time.monotonic() + 30
    while True:  # the reader may not be listening yet
        try:
            out = av.open(url, mode="w", format="rtsp", options={"rtsp_transport": "tcp"})
            stream = out.add_stream("libx264", rate=fps,
                                    options={"preset": "ultrafast", "tune": "zerolatency", "qp": "0"})
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            out.start_encoding()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = (4 * i, 128, 255 - 4 * i)
        img[16:40, 10 + i:30 + i] = (220, 30, 30)  # a red block moving 1 px per frame
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _publish(url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _PUBLISHER, url, str(N), str(W), str(H), str(FPS)],
                            stderr=subprocess.PIPE)


LISTEN = {"rtsp_flags": "listen", "listen_timeout": "30"}


def test_is_live_and_camera_errors(tmp_path: Path) -> None:
    from edgert.vision.video import VideoError, is_live, probe

    assert is_live("rtsp://10.0.0.2/cam") and is_live("udp://127.0.0.1:5000") and is_live("/dev/null")
    assert not is_live(tmp_path) and not is_live("file:///tmp/x.mp4") and not is_live("clip.mp4")
    with pytest.raises(VideoError, match="camera '/dev/null'"):  # a character device is opened as a camera
        probe("/dev/null")


def test_listening_inputs_are_recognised() -> None:
    from edgert.vision.video import _listens

    assert _listens("rtsp://0.0.0.0:8554/cam", {"rtsp_flags": "listen"})
    assert _listens("rtsp://0.0.0.0:8554/cam", {"rtsp_flags": "prefer_tcp+listen"})
    assert _listens("tcp://0.0.0.0:5000", {"listen": "1"}) and _listens("tcp://0.0.0.0:5000?listen=1", {})
    assert _listens("srt://0.0.0.0:5000?mode=x&listen", {})
    assert not _listens("rtsp://cam/stream", {"rtsp_transport": "tcp"}) and not _listens("tcp://h:1?listen=0", {})


def test_capture_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    from edgert.vision.video import capture, encode

    frames = np.zeros((260, 16, 16, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(260, dtype=np.uint8)[:, None, None]
    clip = tmp_path / "clip.mkv"
    clip.write_bytes(encode(frames, fps=25.0, crf=18, preset="ultrafast").data)

    def stop(line: str) -> None:
        if line.startswith("capturing"):  # after 250 frames are written
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        capture(clip, tmp_path / "rec.mkv", duration_s=60.0, log=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv"]  # no recording, no .part
    info = capture(clip, tmp_path / "rec.mkv", duration_s=60.0)  # streamed past the held-back first second
    assert info.frames == 260 and info.fps == pytest.approx(25.0, rel=1e-3)


def test_capture_records_an_rtsp_stream_losslessly(tmp_path: Path) -> None:
    from edgert.vision.video import capture, iter_frames, probe, read_clip

    url = f"rtsp://127.0.0.1:{_free_port()}/cam"
    publisher = _publish(url)
    try:
        info = capture(url, tmp_path / "cap.mkv", duration_s=30.0, options=LISTEN)
    finally:
        _, err = publisher.communicate(timeout=60)
    assert publisher.returncode == 0, err.decode(errors="replace")[-2000:]
    assert (info.width, info.height, info.frames) == (W, H, N)  # the stream ended before 30 s: every frame
    assert info.fps == pytest.approx(FPS, rel=0.05)
    frames, times = read_clip(tmp_path / "cap.mkv")
    assert frames.shape == (N, H, W, 3) and np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx((N - 1) / FPS, abs=0.05)
    assert probe(tmp_path / "cap.mkv").fps == pytest.approx(FPS, rel=0.05)
    # x264 at qp 0 in yuv420p: only the chroma subsampling of the block's edges differs from what was sent
    for i in (0, N // 2, N - 1):
        assert np.abs(frames[i, 2, 2].astype(int) - (4 * i, 128, 255 - 4 * i)).max() <= 3
        block = frames[i, 20:36, 14 + i:26 + i].reshape(-1, 3).mean(0)
        assert np.abs(block - (220, 30, 30)).max() <= 3
    # lossless: the recording decodes to exactly the frames iter_frames hands out for it, resized too
    small = capture(tmp_path / "cap.mkv", tmp_path / "small.mkv", duration_s=0.5, size=(48, 32))
    assert (small.width, small.height, small.frames) == (48, 32, 13)
    ref = np.stack([f.rgb for f in iter_frames(tmp_path / "cap.mkv", (48, 32), duration_s=0.5)])
    assert np.array_equal(read_clip(tmp_path / "small.mkv")[0], ref)
    with pytest.raises(ValueError, match="duration_s"):
        capture(tmp_path / "cap.mkv", tmp_path / "x.mkv", duration_s=0)


class RedTeacher(nn.Module):
    """Two-class logits: class 1 where red exceeds green by 0.3 (on [0, 1] input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x[:, 0] - x[:, 1] - 0.3
        return torch.stack([-d, d], 1) * 20


@pytest.mark.slow
def test_eval_records_a_live_source_once(tmp_path: Path) -> None:
    from edgert.ams.evaluate import EvalConfig, run_eval

    teacher = tmp_path / "red.pt"
    torch.jit.script(RedTeacher()).save(str(teacher))
    url = f"rtsp://127.0.0.1:{_free_port()}/cam"
    cfg = EvalConfig(clip=url, width=W, height=H, max_seconds=30.0, source_options=LISTEN, time_scale=0.1,
                     schemes=("no-custom",), teacher=str(teacher), student_width=0.35, pretrain_iterations=0,
                     cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="live source: give max_seconds"):
        EvalConfig(**{**cfg.__dict__, "max_seconds": None}).validate()
    publisher = _publish(url)
    try:
        results = run_eval(cfg, tmp_path / "run", plots=False, log=lambda line: None)
    finally:
        _, err = publisher.communicate(timeout=60)
    assert publisher.returncode == 0, err.decode(errors="replace")[-2000:]
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["live_source"] and doc["frames"] == N and doc["clip_path"] == str(tmp_path / "run" / "capture.mkv")
    assert results["clip"] == url and 0.0 <= results["schemes"]["no-custom"]["miou"] <= 1.0
    labels = np.load(tmp_path / "run" / "teacher_labels.npz")["labels"]
    assert labels.shape == (N, H, W) and not labels[:, 2, 2].any()
    assert all(labels[i, 24, 20 + i] == 1 for i in range(N))  # the moving block, at its place in every frame
    # the publisher is gone: a merge must score on the recording, not try to open the stream again
    merged = run_eval(EvalConfig(**{**cfg.__dict__, "schemes": ("no-custom",)}), tmp_path / "run", plots=False,
                      log=lambda line: None, merge=True)
    assert merged["schemes"]["no-custom"]["miou"] == pytest.approx(results["schemes"]["no-custom"]["miou"])


def test_a_bad_teacher_fails_before_the_stream_is_recorded(tmp_path: Path) -> None:
    from edgert.ams.evaluate import EvalConfig, run_eval
    from edgert.vision.teachers import TeacherError

    # nobody publishes to this URL: opening it first would fail with a video error (after the whole
    # listen_timeout), not with the teacher's
    cfg = EvalConfig(clip=f"rtsp://127.0.0.1:{_free_port()}/cam", width=W, height=H, max_seconds=5.0,
                     source_options=LISTEN, schemes=("no-custom",), teacher=str(tmp_path / "missing.pt"),
                     pretrain_iterations=0, cache_dir=str(tmp_path))
    with pytest.raises(TeacherError, match="no such file"):
        run_eval(cfg, tmp_path / "run", plots=False, log=lambda line: None)
    assert not (tmp_path / "run" / "capture.mkv").exists()
