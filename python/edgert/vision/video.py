"""Video I/O through PyAV (FFmpeg): read frames from files or URLs, encode/decode in memory.

Frames are RGB ``uint8`` arrays ``[H, W, 3]`` (a clip is ``[N, H, W, 3]``); timestamps are seconds
from the stream's start. Encoding targets the codecs the systems use: libx264 (AMS uplink) and libx265
(SRVC content stream); the byte counts reported are the compressed packets' sizes, which is what a
link carries. PyAV is the optional extra ``[video]``; it is imported on first use.
"""
from __future__ import annotations

import io
import itertools
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, Optional, Sequence, Union

import numpy as np

VideoSource = Union[str, Path]


class VideoError(ValueError):
    """A video that cannot be opened, decoded or encoded; the message says which and why."""


def _av() -> Any:
    try:
        import av  # noqa: PLC0415 - optional extra, imported lazily
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("edgert.vision.video needs PyAV: pip install 'edgert[video]'") from exc
    return av


@dataclass(frozen=True)
class VideoInfo:
    """Geometry and timing of a video stream."""

    width: int
    height: int
    fps: float
    frames: int  # as declared by the container; 0 when unknown (live streams)
    duration_s: float


@dataclass(frozen=True)
class Frame:
    """One decoded frame: RGB ``uint8 [H, W, 3]`` and its presentation time in seconds."""

    rgb: np.ndarray
    time_s: float


def _camera_device(text: str) -> bool:
    try:
        return stat.S_ISCHR(Path(text).stat().st_mode)
    except OSError:
        return False


def is_live(source: VideoSource) -> bool:
    """True for sources that are not replayable files: FFmpeg network URLs (``rtsp://``, ``udp://``,
    ``http://``, ...) and camera devices (``/dev/video0``). ``file://`` URLs count as files."""
    text = str(source)
    if "://" in text:
        return not text.startswith("file://")
    return _camera_device(text)


def _listens(url: str, options: Mapping[str, str]) -> bool:
    """Whether FFmpeg waits for the sender to connect: RTSP ``rtsp_flags=listen``, or TCP/HTTP/SRT ``listen``
    as an option or in the URL's query (``tcp://host:port?listen=1``)."""
    if "listen" in options.get("rtsp_flags", "").split("+"):
        return True
    if options.get("listen", "0") not in ("", "0"):
        return True
    query = url.partition("?")[2]
    return any(kv.partition("=")[0] == "listen" and kv.partition("=")[2] != "0" for kv in query.split("&"))


def _open_input(source: VideoSource, options: Optional[Mapping[str, str]] = None) -> Any:
    av = _av()
    text = str(source)
    is_url = "://" in text
    camera = not is_url and _camera_device(text)
    if not is_url and not camera and not Path(text).is_file():
        raise VideoError(f"video {text!r}: no such file")
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    if camera:
        if "v4l2" not in av.formats_available:
            raise VideoError(f"camera {text!r}: this FFmpeg build has no v4l2 input (PyAV's wheels ship without it); "
                             "publish the camera as an RTSP/UDP stream with the system ffmpeg and give its URL, or "
                             "install PyAV built against the system FFmpeg (pip install av --no-binary av)")
        try:
            container = av.open(text, mode="r", format="v4l2", options=opts)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoError(f"camera {text!r}: cannot open ({exc})") from exc
    else:
        try:
            # the interrupt timeout would cut off a listening input before its sender connects
            timeout = 10.0 if is_url and not _listens(text, opts) else None
            container = av.open(text, mode="r", timeout=timeout, options=opts)
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"video {text!r}: cannot open ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"video {text!r}: has no video stream")
    return container


def probe(source: VideoSource, options: Optional[Mapping[str, str]] = None) -> VideoInfo:
    """Width, height, frame rate, declared frame count and duration of ``source``'s first video stream.

    ``options``: FFmpeg input options (e.g. ``{"rtsp_transport": "tcp"}``)."""
    container = _open_input(source, options)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        duration = float(stream.duration * stream.time_base) if stream.duration else (
            container.duration / 1e6 if container.duration else 0.0)
        return VideoInfo(stream.codec_context.width, stream.codec_context.height, fps, int(stream.frames or 0),
                         duration)
    finally:
        container.close()


def iter_frames(source: VideoSource, size: Optional[tuple[int, int]] = None, *, start_s: float = 0.0,
                duration_s: Optional[float] = None, fps: Optional[float] = None,
                max_frames: Optional[int] = None,
                options: Optional[Mapping[str, str]] = None) -> Generator[Frame, None, None]:
    """Decode ``source`` frame by frame.

    Args:
        source: a file path or an FFmpeg URL (``rtsp://``, ``http://``, a camera device).
        size: ``(width, height)`` to resize to (FFmpeg's area/bicubic scaler), or None to keep the source size.
        start_s: skip frames before this time.
        duration_s: stop after this many seconds of stream time.
        fps: keep at most this many frames per second (drops frames, never duplicates); None keeps all.
        max_frames: stop after this many frames.
        options: FFmpeg input options (``rtsp_transport``, ``rtsp_flags``, ``listen_timeout``, ...).

    Timestamps are the stream's presentation times from its first frame, made non-decreasing; a frame
    without one (an RTSP stream's first frame) is placed one frame period after the previous.

    Raises:
        VideoError: the source cannot be opened or decoding fails midway (the message names the frame).
    """
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"size: expected (width, height) > 0, got {size!r}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    av = _av()
    container = _open_input(source, options)
    produced = 0
    next_keep = start_s
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        t0: Optional[float] = None
        last_t = 0.0
        for index, frame in enumerate(container.decode(stream)):
            if frame.time is not None:
                if t0 is None:  # frames before the first timed one were one frame period apart
                    t0 = float(frame.time) - index / rate
                t = float(frame.time) - t0
            else:  # no presentation time (an RTSP stream's first frame): one period after the previous
                t = last_t + 1.0 / rate if index else 0.0
            t = max(t, last_t)
            last_t = t
            if t + 1e-9 < start_s:
                continue
            if duration_s is not None and t >= start_s + duration_s:
                break
            if fps is not None:
                if t + 1e-9 < next_keep:
                    continue
                next_keep = max(next_keep + 1.0 / fps, t)
            if size is not None:
                frame = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
                rgb = frame.to_ndarray()
            else:
                rgb = frame.to_ndarray(format="rgb24")
            yield Frame(rgb, t)
            produced += 1
            if max_frames is not None and produced >= max_frames:
                break
    except av.FFmpegError as exc:
        raise VideoError(f"video {str(source)!r}: decoding failed after {produced} frames ({exc})") from exc
    finally:
        container.close()


def capture(source: VideoSource, path: Union[str, Path], duration_s: float, size: Optional[tuple[int, int]] = None, *,
            options: Optional[Mapping[str, str]] = None, log: Optional[Callable[[str], None]] = None) -> VideoInfo:
    """Record ``duration_s`` seconds of a (live) source into ``path`` losslessly: FFV1 RGB in Matroska with
    the stream's own timestamps (millisecond precision), so every later reader sees exactly those frames.

    This is how an evaluation uses a camera or an RTSP stream: every scheme must be scored on the same
    frames, and a live stream cannot be replayed. ``size`` resizes while recording (as :func:`iter_frames`).

    Frames are written as they arrive (memory holds at most the first second), and a recording that
    fails midway is removed rather than left half-written.

    Returns:
        the recording's geometry; ``fps`` is the measured rate (frames over the recorded span).
    Raises:
        VideoError: the source cannot be opened, fails midway or delivers no frame.
    """
    av = _av()
    if not duration_s > 0:
        raise ValueError(f"duration_s: expected > 0, got {duration_s}")
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    frames = iter_frames(source, size, duration_s=duration_s, options=options)
    try:
        # The container's nominal rate is declared before the first frame is written, so the first second
        # (at most 60 frames) is held back to measure it; after that frames are written as they arrive.
        head: list[Frame] = []
        for f in frames:
            head.append(f)
            if f.time_s - head[0].time_s >= 1.0 or len(head) >= 60:
                break
        if not head:
            raise VideoError(f"video {str(source)!r}: no frames within {duration_s:g} s")
        span = head[-1].time_s - head[0].time_s
        rate = (len(head) - 1) / span if len(head) > 1 and span > 0 else 25.0
        h, w = head[0].rgb.shape[:2]
        ms = Fraction(1, 1000)
        count, first_t, last_t = 0, head[0].time_s, head[0].time_s
        with av.open(str(tmp), mode="w", format="matroska") as out:
            stream = out.add_stream("ffv1", rate=Fraction(rate).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
            stream.codec_context.time_base = ms
            last_pts = -1
            for f in itertools.chain(head, frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f.rgb), format="rgb24")
                vf.pts = max(int(round(f.time_s * 1000)), last_pts + 1)  # strictly increasing for the muxer
                vf.time_base = ms
                last_pts = vf.pts
                for packet in stream.encode(vf):
                    out.mux(packet)
                count, last_t = count + 1, f.time_s
                if log is not None and count % 250 == 0:
                    log(f"capturing {source}: {count} frames, {f.time_s:.1f} s")
            for packet in stream.encode(None):
                out.mux(packet)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written recording behind
        raise
    finally:
        frames.close()  # closes the source even when recording stopped early
    span = last_t - first_t
    fps = (count - 1) / span if count > 1 and span > 0 else rate
    if log is not None:
        log(f"captured {count} frames ({span:.1f} s, {fps:.2f} fps, {w}x{h}) from {source} into {path}")
    return VideoInfo(w, h, float(fps), count, float(span + 1.0 / fps))


def read_clip(source: VideoSource, size: Optional[tuple[int, int]] = None,
              **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """All frames of :func:`iter_frames` as ``(uint8 [N, H, W, 3], float64 times [N])``."""
    frames, times = [], []
    for f in iter_frames(source, size, **kwargs):
        frames.append(f.rgb)
        times.append(f.time_s)
    if not frames:
        raise VideoError(f"video {str(source)!r}: no frames in the requested range")
    return np.stack(frames), np.asarray(times)


@dataclass(frozen=True)
class EncodedVideo:
    """A clip compressed in memory.

    ``data`` is a complete Matroska file (decodable by :func:`decode` or any player); ``payload_bytes``
    counts only the codec's packets, i.e. the bits a link must carry for the pictures.
    """

    data: bytes
    payload_bytes: int
    frames: int
    width: int
    height: int
    fps: float
    codec: str

    @property
    def kbps(self) -> float:
        """Average payload bitrate in kbit/s."""
        return self.payload_bytes * 8 / 1000 / (self.frames / self.fps) if self.frames else 0.0

    def bits_per_pixel(self) -> float:
        """Payload bits per pixel of the encoded resolution."""
        return self.payload_bytes * 8 / max(1, self.frames * self.width * self.height)


_CODECS = {"h264": "libx264", "libx264": "libx264", "h265": "libx265", "hevc": "libx265", "libx265": "libx265"}


@dataclass(frozen=True)
class QualityRegion:
    """A rectangle of the picture coded at a quality offset (FFmpeg's ``AVRegionOfInterest``).

    ``qoffset`` is in ``[-1, 1]``: negative is better quality (more bits) than the rest of the frame, positive
    worse; libx264 and libx265 turn it into a quantiser offset of the macroblocks (CTUs) the rectangle covers
    (they need adaptive quantisation, on by default). Regions must not overlap (the first would win).
    """

    x: int
    y: int
    width: int
    height: int
    qoffset: float


def encode(frames: np.ndarray, fps: float, codec: str = "libx264", *, crf: Optional[float] = None,
           bitrate_kbps: Optional[float] = None, preset: str = "medium", gop: Optional[int] = None,
           regions: Sequence[QualityRegion] = ()) -> EncodedVideo:
    """Encode RGB frames ``uint8 [N, H, W, 3]`` (H, W even) with libx264/libx265 in yuv420p.

    Exactly one of ``crf`` (constant quality) and ``bitrate_kbps`` (average bitrate) may be given;
    neither means the codec's default CRF. ``gop`` sets the keyframe interval (default: the codec's).
    ``regions`` code rectangles at a quality offset (:class:`QualityRegion`), attached to every frame as
    region-of-interest side data by FFmpeg's ``addroi`` filter.
    """
    av = _av()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    n, h, w, _ = frames.shape
    if n == 0:
        raise ValueError("frames: expected at least one frame, got 0")
    if h % 2 or w % 2:
        raise ValueError(f"frames: yuv420p needs even width and height, got {w}x{h}")
    if codec not in _CODECS:
        raise ValueError(f"codec: expected one of {sorted(_CODECS)}, got {codec!r}")
    if crf is not None and bitrate_kbps is not None:
        raise ValueError("give crf or bitrate_kbps, not both")
    if fps <= 0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    for r in regions:
        if not (0 <= r.x < w and 0 <= r.y < h and r.width > 0 and r.height > 0
                and r.x + r.width <= w and r.y + r.height <= h):
            raise ValueError(f"regions: {r} does not lie inside the {w}x{h} picture")
        if not -1.0 <= r.qoffset <= 1.0:
            raise ValueError(f"regions: qoffset must be in [-1, 1], got {r.qoffset}")
    lib = _CODECS[codec]
    options = {"preset": preset}
    if crf is not None:
        options["crf"] = f"{crf:g}"
    if lib == "libx265":
        options["x265-params"] = "log-level=error"
    buf = io.BytesIO()
    payload = 0
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(buf, mode="w", format="matroska") as out:
        stream = out.add_stream(lib, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if bitrate_kbps is not None:
            stream.bit_rate = int(bitrate_kbps * 1000)
        if gop is not None:
            stream.codec_context.gop_size = int(gop)
        graph = _roi_graph(av, w, h, rate, regions) if regions else None
        for i in range(n):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            vf.pts = i
            if graph is not None:
                vf.time_base = 1 / rate
                graph.push(vf)
                vf = graph.pull()
            for packet in stream.encode(vf):
                payload += packet.size
                out.mux(packet)
        for packet in stream.encode(None):
            payload += packet.size
            out.mux(packet)
    return EncodedVideo(buf.getvalue(), payload, n, w, h, float(fps), lib)


def _roi_graph(av: Any, width: int, height: int, rate: Fraction, regions: Sequence[QualityRegion]) -> Any:
    """rgb24 -> yuv420p -> one ``addroi`` per region: the conversion happens in the graph because PyAV's own
    format conversion at encode time would build a new frame without the side data."""
    graph = av.filter.Graph()
    last = graph.add_buffer(width=width, height=height, format="rgb24", time_base=1 / rate)
    chain = [graph.add("format", "yuv420p")]
    chain += [graph.add("addroi", f"x={r.x}:y={r.y}:w={r.width}:h={r.height}:qoffset={r.qoffset:.6f}")
              for r in regions]
    chain.append(graph.add("buffersink"))
    for node in chain:
        last.link_to(node)
        last = node
    graph.configure()
    return graph


def decode(data: Union[bytes, EncodedVideo], every: int = 1) -> np.ndarray:
    """Decode an in-memory video (as made by :func:`encode`) to RGB ``uint8 [N, H, W, 3]``.

    ``every`` > 1 keeps only frames 0, every, 2 * every, ... (all are decoded; long clips stay small in memory).

    Raises:
        VideoError: the bytes are not a decodable video; the message says after how many frames it failed.
    """
    av = _av()
    raw = data.data if isinstance(data, EncodedVideo) else bytes(data)
    if every < 1:
        raise ValueError(f"every: expected >= 1, got {every}")
    if not raw:
        raise VideoError("video bytes: empty")
    frames: list[np.ndarray] = []
    count = 0
    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            if not container.streams.video:
                raise VideoError("video bytes: no video stream")
            for frame in container.decode(container.streams.video[0]):
                if count % every == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                count += 1
    except av.FFmpegError as exc:
        raise VideoError(f"video bytes ({len(raw)} B): decoding failed after {count} frames "
                         f"({exc})") from exc
    if not frames:
        raise VideoError(f"video bytes ({len(raw)} B): no decodable frame")
    return np.stack(frames)


def resize(frames: np.ndarray, size: tuple[int, int], mode: str = "area") -> np.ndarray:
    """Resize ``uint8 [N, H, W, 3]`` (or one ``[H, W, 3]``) to ``(width, height)``.

    ``mode``: ``area`` (box average, the downsampler SRVC uses), ``bicubic`` or ``bilinear``.
    Computed in float32 with PyTorch and rounded back to uint8.
    """
    import torch
    import torch.nn.functional as F

    if mode not in ("area", "bicubic", "bilinear"):
        raise ValueError(f"mode: expected area, bicubic or bilinear, got {mode!r}")
    arr = np.asarray(frames)
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [N, H, W, 3], got {arr.dtype} {list(arr.shape)}")
    w, h = size
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    kwargs: dict[str, Any] = {} if mode == "area" else {"align_corners": False}
    y = F.interpolate(x, size=(h, w), mode=mode, **kwargs)
    out = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return out[0] if single else out


def frames_to_tensor(frames: Sequence[np.ndarray] | np.ndarray) -> "Any":
    """``uint8 [N, H, W, 3]`` -> float32 torch ``[N, 3, H, W]`` in [0, 1]."""
    import torch

    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [N, H, W, 3], got {arr.dtype} {list(arr.shape)}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)


def tensor_to_frames(x: "Any") -> np.ndarray:
    """float torch ``[N, 3, H, W]`` in [0, 1] -> ``uint8 [N, H, W, 3]`` (rounded, clamped)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x: expected [N, 3, H, W], got {list(x.shape)}")
    return (x.detach().clamp(0, 1) * 255).round().to("cpu").byte().permute(0, 2, 3, 1).contiguous().numpy()
