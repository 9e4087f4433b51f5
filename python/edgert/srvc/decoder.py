"""SRVC decoder: decode the LR content stream frame by frame, apply due model packets, super-resolve.

Model packets go through libedgert's verifier and applier (:class:`edgert._edgert.Slot`, the same
code the firmware runs): a packet is applied only if every check passes, and the SR model is then
reloaded from the slot's active weights. A rejected packet (bad CRC, wrong version chain, ...) is
reported with its record, byte offset, frame and status, and decoding continues with the previous
model. Before the first model is accepted, frames are upsampled bicubically (and the report says
how many).

A stream that starts from the generic model (header ``generic``) needs that model in the decoder's
:class:`~edgert.srvc.generic.GenericLibrary`: it is installed into the slot as version 1 before the
first packet (and its weights checked against the hash the header names). A decoder without it
refuses the container (:class:`MissingGenericModel`, naming the hash) unless the stream carries the
snapshot itself, or the caller opts into bicubic upsampling of every frame (``allow_bicubic``, with
a warning). Structural damage to the container or a broken content stream is fatal and raises
:class:`~edgert.srvc.container.ContainerError` / :class:`ContentError` saying where.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

import edgert
from edgert._edgert import Slot
from edgert.srvc.container import Container, ContainerError, Record, read_container
from edgert.srvc.generic import GENERIC_VERSION, GenericLibrary
from edgert.srvc.model import Geometry, SRConfig, SRVCModel
from edgert.updates import Manifest, buffer_tensors, load_weights, module_manifest

Log = Callable[[str], None]


class ContentError(ValueError):
    """The content stream inside a container cannot be decoded; the message says where."""


class MissingGenericModel(ContainerError):
    """The container's model stream starts from a generic model this decoder does not hold."""

    def __init__(self, sha256: str, folder: Path) -> None:
        super().__init__(f"the model stream starts from generic model {sha256}, which this decoder does not have "
                         f"(looked in {folder}); install it there, or decode bicubically (allow_bicubic / "
                         "--allow-bicubic)")
        self.sha256 = sha256


@dataclass
class DecodeReport:
    """What the decoder did: frames, applied and rejected packets, timing."""

    frames: int = 0
    width: int = 0
    height: int = 0
    applied: list[dict[str, Any]] = field(default_factory=list)  # {version, first_frame, frame, bytes}
    rejected: list[str] = field(default_factory=list)
    bicubic_frames: int = 0  # frames decoded before any model was accepted
    generic_sha256: str = ""  # the generic model installed from the decoder's library ("" = none)
    warnings: list[str] = field(default_factory=list)
    weights_sha256: dict[int, str] = field(default_factory=dict)  # per applied version: the slot's weights
    sr_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def sr_fps(self) -> float:
        return self.frames / self.sr_seconds if self.sr_seconds else 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.total_seconds if self.total_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "width": self.width, "height": self.height, "applied": self.applied,
                "rejected": self.rejected, "bicubic_frames": self.bicubic_frames,
                "generic_sha256": self.generic_sha256, "warnings": self.warnings,
                "weights_sha256": {str(k): v for k, v in self.weights_sha256.items()},
                "sr_seconds": self.sr_seconds, "total_seconds": self.total_seconds, "sr_fps": self.sr_fps,
                "fps": self.fps}


def super_resolve(model: Optional[SRVCModel], lr: np.ndarray, scale: int,
                  device: torch.device = torch.device("cpu")) -> np.ndarray:
    """The decoder's per-frame step: LR uint8 ``[h, w, 3]`` -> HR uint8 ``[scale*h, scale*w, 3]`` by ``model``
    on ``device`` (None: bicubic), rounded to the nearest integer."""
    x = torch.from_numpy(np.ascontiguousarray(lr)).to(device).permute(2, 0, 1)[None].float().div_(255.0)
    with torch.no_grad():
        y = model(x) if model is not None else F.interpolate(x, scale_factor=scale, mode="bicubic",
                                                              align_corners=False)
    return (y[0].clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0)).cpu().numpy()


def _content_frames(container: Container, expected: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Yields the LR content frames (uint8 [h, w, 3]) one by one; raises ContentError naming the frame."""
    from edgert.vision import video  # noqa: PLC0415

    rec = container.content_record
    where = rec.describe() if rec is not None else "content stream"
    fd, path = tempfile.mkstemp(suffix=".mkv")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(container.content)
        count = 0
        try:
            for frame in video.iter_frames(path):
                if frame.rgb.shape[:2] != (size[1], size[0]):
                    raise ContentError(f"content stream ({where}): frame {count} is {frame.rgb.shape[1]}x"
                                       f"{frame.rgb.shape[0]}, the header announces {size[0]}x{size[1]}")
                yield frame.rgb
                count += 1
        except video.VideoError as exc:
            reason = str(exc).replace(repr(path), "").replace(path, "").replace("video : ", "")
            raise ContentError(f"content stream ({where}, {len(container.content)} bytes): cannot decode after "
                               f"{count} of {expected} frames: {reason}") from exc
        if count != expected:
            raise ContentError(f"content stream ({where}): ends after {count} frames, the header announces {expected}")
    finally:
        os.unlink(path)


class Decoder:
    """Stateful SRVC decoder for one container: ``frames()`` yields HR uint8 frames ``[H, W, 3]``."""

    def __init__(self, data: bytes, *, backend: str = "auto", device: str = "cpu", log: Log = print,
                 generics: Optional[GenericLibrary] = None, allow_bicubic: bool = False) -> None:
        """Parses and checks ``data``; ``device`` 'cpu' | 'cuda' | 'auto' runs the SR there.

        ``generics``: the decoder's generic models (None: the default library folder). ``allow_bicubic``: a
        container naming a generic model that is missing is decoded bicubically with a warning instead of refused.

        Raises:
            ContainerError: a damaged container, or :class:`MissingGenericModel` (see above).
        """
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.container = read_container(data)
        self.log = log
        head = self.container.header
        try:
            self.config = SRConfig.from_dict(head["model"])
            self.geometry = Geometry(int(head["width"]), int(head["height"]), int(head["scale"]))
            self.fps = float(head["fps"])
            self.frame_count = int(head["frames"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ContainerError(f"corrupt: record #0 (HEAD): missing or bad field ({exc!r})") from exc
        if self.config.scale != self.geometry.scale:
            raise ContainerError(f"corrupt: record #0 (HEAD): scale {self.geometry.scale} != model scale "
                                 f"{self.config.scale}")
        self.model = SRVCModel(self.config).eval().to(self.device)
        self.model.backend = backend
        expected = module_manifest(self.model, model_id=bytes(16))
        try:
            manifest = Manifest.from_bytes(self.container.manifest)
        except ValueError as exc:
            raise ContainerError(f"corrupt: record #1 (MANI): {exc}") from exc
        if manifest.table_hash != expected.table_hash:
            raise ContainerError("corrupt: record #1 (MANI): the manifest's tensor table does not match the model "
                                 f"config in HEAD ({len(manifest.tensors)} tensors)")
        self.manifest = manifest
        self.slot = Slot(self.container.manifest)
        self.report = DecodeReport(width=self.geometry.width, height=self.geometry.height)
        self._pending = list(self.container.models)
        self._packet_no = 0
        self._bicubic_only = False
        self._start_from_generic(head.get("generic"), generics, allow_bicubic)

    def _start_from_generic(self, generic: Any, library: Optional[GenericLibrary], allow_bicubic: bool) -> None:
        if generic is None:
            return  # the stream starts with a full snapshot (init 'scratch', or a container of version 1's first days)
        sha = generic.get("sha256") if isinstance(generic, dict) else None
        sent = generic.get("sent") if isinstance(generic, dict) else None
        if not GenericLibrary.valid_id(sha) or not isinstance(sent, bool) or generic.get("version") != GENERIC_VERSION:
            raise ContainerError(f"corrupt: record #0 (HEAD): generic must be {{sha256: 64 hex digits, version: "
                                 f"{GENERIC_VERSION}, sent: bool}}, got {generic!r}")
        library = library if library is not None else GenericLibrary()
        snapshot = library.get(sha)
        if snapshot is not None:
            try:
                self.slot.apply(snapshot)
            except edgert.PacketError as exc:
                raise ContainerError(f"generic model {sha}: the decoder's copy ({library.path(sha)}) does not install "
                                     f"into this stream's model ({exc.status_name}: {exc})") from exc
            weights, version = self.slot.weights()
            if hashlib.sha256(weights).hexdigest() != sha:
                raise ContainerError(f"generic model {sha}: the decoder's copy ({library.path(sha)}) installs weights "
                                     "with a different hash")
            load_weights(self.model, buffer_tensors(self.manifest, weights))
            self.report.generic_sha256 = sha
            self.report.weights_sha256[version] = sha
            if sent and self._pending:
                self._pending.pop(0)  # the stream's own copy of the generic snapshot: already installed
                self._packet_no += 1
            return
        if sent:
            return  # the first model packet installs it
        if not allow_bicubic:
            raise MissingGenericModel(sha, library.folder)
        msg = (f"warning: generic model {sha} is not in this decoder ({library.folder}); every frame is upsampled "
               f"bicubically and the {len(self._pending)} model packets are ignored")
        self.report.warnings.append(msg)
        self.log(msg)
        self._bicubic_only = True
        self._pending = []

    def _apply(self, rec: Record, frame: int) -> None:
        no = self._packet_no
        self._packet_no += 1
        where = f"model packet #{no} ({rec.describe()}, for frame {rec.first_frame}, t={rec.time_s:.3f} s)"
        if not rec.crc_ok:
            reason = "container CRC32C mismatch"
        else:
            try:
                self.slot.apply(rec.payload)
            except edgert.PacketError as exc:
                reason = f"{exc.status_name}: {exc}"
            else:
                weights, version = self.slot.weights()  # one pinned, consistent version
                load_weights(self.model, buffer_tensors(self.manifest, weights))
                self.report.weights_sha256[version] = hashlib.sha256(weights).hexdigest()
                self.report.applied.append({"version": version, "first_frame": rec.first_frame, "frame": frame,
                                            "bytes": len(rec.payload)})
                return
        msg = (f"{where} rejected ({reason}); continuing with model version {self.slot.version}"
               + ("" if self.slot.version else " (none yet: bicubic upsampling)"))
        self.report.rejected.append(msg)
        self.log(msg)

    def frames(self, every: int = 1) -> Iterator[np.ndarray]:
        """Decodes, applies due packets and super-resolves; yields uint8 ``[H, W, 3]`` per frame.

        ``every`` > 1 super-resolves and yields only frames 0, every, 2 * every, ... (the others are still
        decoded and every packet is applied at its frame: the yielded frames are exactly the full decode's).
        """
        if every < 1:
            raise ValueError(f"every: expected >= 1, got {every}")
        geo = self.geometry
        t0 = time.perf_counter()
        for i, lr in enumerate(_content_frames(self.container, self.frame_count, (geo.lr_width, geo.lr_height))):
            while self._pending and self._pending[0].first_frame <= i:
                self._apply(self._pending.pop(0), i)
            if i % every:
                continue
            t_sr = time.perf_counter()
            use_model = bool(self.slot.version) and not self._bicubic_only
            self.report.bicubic_frames += not use_model
            hr = super_resolve(self.model if use_model else None, lr, geo.scale, self.device)
            self.report.sr_seconds += time.perf_counter() - t_sr
            self.report.frames += 1
            yield np.ascontiguousarray(geo.crop_hr(hr))
        for rec in self._pending:  # packets timed past the last frame are still verified and applied
            self._apply(rec, self.frame_count)
        self._pending = []
        self.report.total_seconds = time.perf_counter() - t0


def decode(data: bytes, *, backend: str = "auto", device: str = "cpu", log: Log = print,
           generics: Optional[GenericLibrary] = None, allow_bicubic: bool = False,
           every: int = 1) -> tuple[np.ndarray, DecodeReport]:
    """Decodes a whole container to ``uint8 [N, H, W, 3]`` (``every`` > 1: frames 0, every, ...) plus the report."""
    dec = Decoder(data, backend=backend, device=device, log=log, generics=generics, allow_bicubic=allow_bicubic)
    frames = np.stack(list(dec.frames(every)))
    return frames, dec.report


class LosslessWriter:
    """Writes RGB frames to a lossless FFV1 Matroska file (bgr0: 8-bit RGB, no chroma subsampling)."""

    def __init__(self, path: Union[str, Path], width: int, height: int, fps: float) -> None:
        from fractions import Fraction

        import av  # noqa: PLC0415

        self._av = av
        self._out = av.open(str(path), mode="w", format="matroska")
        self._stream = self._out.add_stream("ffv1", rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "bgr0"
        self._n = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="bgr0")
        frame.pts = self._n
        self._n += 1
        for packet in self._stream.encode(frame):
            self._out.mux(packet)

    def close(self) -> None:
        """Flushes the encoder and closes the file."""
        if self._n:
            for packet in self._stream.encode(None):
                self._out.mux(packet)
        self._out.close()


def decode_file(src: Union[str, Path], dst: Union[str, Path], *, backend: str = "auto", device: str = "cpu",
                log: Log = print, generics: Optional[GenericLibrary] = None,
                allow_bicubic: bool = False) -> DecodeReport:
    """Decodes the container at ``src`` into a lossless FFV1 video at ``dst``, streaming frame by frame.

    On a fatal error (:class:`ContainerError`, :class:`ContentError`) the partial output is removed.
    """
    data = Path(src).read_bytes()
    dec = Decoder(data, backend=backend, device=device, log=log, generics=generics, allow_bicubic=allow_bicubic)
    writer = LosslessWriter(dst, dec.geometry.width, dec.geometry.height, dec.fps)
    try:
        for frame in dec.frames():
            writer.write(frame)
    except BaseException:
        writer.close()
        Path(dst).unlink(missing_ok=True)
        raise
    writer.close()
    return dec.report
