"""SRVC encoder: a low-resolution H.265 content stream plus a model stream of sparse SR-model updates.

Per clip: pad the HR frames to a multiple of 2k (:class:`~edgert.srvc.model.Geometry`),
area-downsample by k, encode with libx265 (preset slow, one CRF), and decode it again (the model
is trained on exactly what the decoder will see). Then, per segment of tau seconds:

* the generic model is part of the decoder (:class:`~edgert.srvc.generic.GenericLibrary`): the
  header names it by the sha256 of its weights, and every segment, the first included, is a sparse
  update from what the decoder holds. Only with ``send_generic`` (a decoder without it) is the
  generic model's fp16 snapshot sent first, and counted. ``init == 'scratch'`` keeps the old path:
  segment 0 trains every parameter from a random model and sends a full snapshot;
* every segment, the paper's gradient-guided selection: from the decoder's current model
  theta, train every parameter for one pass, keep the fraction eta of coordinates with the
  largest |change|, restore theta, train only those, and send their deltas as one sparse
  update packet (``ADD`` of fp16 values by default, int8 / 4-bit block codings on request);
* with ``rd_skip``, a rate-distortion decision per segment: the update is sent only when the PSNR it
  adds to the clip (measured with the decoder's exact weights on ``rd_frames`` frames of the segment)
  is worth at least its bits at lambda = the content codec's RD slope (dB per bit) at this CRF.

The encoder keeps a :class:`~edgert.updates.DeviceMirror` of the decoder's model slot and
continues every segment from the mirror's weights, so rounding of the sent values (fp16, or the
lossy int8/int4 block codings) never makes encoder and decoder drift apart: the next segment trains
from what the decoder holds and corrects it.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np
import torch

from edgert.harness import Progress
from edgert.srvc.container import write_container
from edgert.srvc.generic import GENERIC_VERSION, GenericLibrary, generic_snapshot
from edgert.srvc.model import Geometry, SRConfig, SRVCModel
from edgert.srvc.training import TrainStats, train
from edgert.updates import (
    DeviceMirror,
    EncodedPacket,
    Manifest,
    encode_snapshot,
    encode_update,
    load_weights,
    module_manifest,
    module_weights,
    parameter_delta,
    top_count_masks,
)
from edgert.updates.packet import VALUE_CODINGS

Log = Callable[[str], None]
MIN_LR_SIDE = 48


@dataclass(frozen=True)
class EncoderConfig:
    """SRVC encoder settings. Paper defaults: tau = 5 s, eta = 1%, Adam lr 1e-4, half-size crops, x265 slow.

    ``iterations`` (per training pass) and ``batch`` are not given by the paper; the defaults
    here are sized for a GPU, experiments on a CPU pass smaller values (see docs/results/srvc.md).
    """

    model: SRConfig = field(default_factory=SRConfig)
    segment_s: float = 5.0  # tau; math.inf sends one model for the whole video (one-shot customisation)
    eta: float = 0.01  # fraction of parameters updated per segment after the first
    crf: float = 30.0
    preset: str = "slow"
    iterations: int = 1000
    selection_iterations: Optional[int] = None  # the full pass of the selection rule (None: = iterations)
    first_iterations: Optional[int] = None  # segment 0 (None: = iterations)
    batch: int = 4
    crop: float = 0.5  # LR crop size as a fraction of the frame (half-size crops)
    learning_rate: float = 1e-4
    value_coding: str = "fp16"  # sparse delta values: fp16 | fp32 | int8 | int8b | int4b (block codings: lossy)
    snapshot_coding: str = "fp16"  # first full model: fp16 | fp32
    packet_format: int = 2  # newest update-packet format written (2: range-coded when smaller)
    init: str = "generic"  # "generic" (the cached generic model) or "scratch"
    seed: int = 0
    model_id: bytes = b"edgert-srvc-v1\0\0"
    send_generic: bool = False  # also send the generic model's snapshot (decoders without it); counted
    rd_skip: bool = False  # skip a segment's update when it gains fewer dB than its bits are worth
    rd_frames: int = 4  # frames per segment on which the update's gain is measured
    rd_crf_step: float = 2.0  # lambda: PSNR/bits slope of the content stream between crf and crf + step

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        self.model.validate()
        if not (self.segment_s > 0):
            raise ValueError(f"segment_s (tau): expected > 0 seconds (or inf), got {self.segment_s}")
        if not 0.0 < self.eta <= 1.0:
            raise ValueError(f"eta: expected a fraction in (0, 1], got {self.eta}")
        if self.iterations < 0 or self.batch <= 0 or not 0.0 < self.crop <= 1.0:
            raise ValueError(f"iterations >= 0, batch > 0 and 0 < crop <= 1 required, got {self.iterations}, "
                             f"{self.batch}, {self.crop}")
        if self.value_coding not in VALUE_CODINGS or self.snapshot_coding not in ("fp16", "fp32"):
            raise ValueError(f"value_coding {'|'.join(VALUE_CODINGS)} and snapshot_coding fp16|fp32, got "
                             f"{self.value_coding}, {self.snapshot_coding}")
        if self.packet_format not in (1, 2):
            raise ValueError(f"packet_format: expected 1 or 2, got {self.packet_format}")
        if self.init not in ("generic", "scratch"):
            raise ValueError(f"init: expected 'generic' or 'scratch', got {self.init!r}")
        if self.rd_frames <= 0 or not self.rd_crf_step > 0:
            raise ValueError(f"rd_frames >= 1 and rd_crf_step > 0 required, got {self.rd_frames}, {self.rd_crf_step}")
        if len(self.model_id) != 16:
            raise ValueError(f"model_id: expected 16 bytes, got {len(self.model_id)}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.as_dict()
        d["model_id"] = self.model_id.hex()
        d["segment_s"] = None if math.isinf(self.segment_s) else self.segment_s
        return d


@dataclass
class SegmentLog:
    """What the encoder did for one segment."""

    index: int
    first_frame: int
    frames: int
    packet_bytes: int
    updated: int  # coordinates sent
    selection: Optional[TrainStats]
    training: TrainStats
    weights_sha256: str  # of the mirror after the packet
    alive_channels: int  # adaptive-conv channels positive somewhere on the segment's first frame
    version: int = 0  # the decoder's model version from this segment on
    sent: bool = True  # False: the RD decision skipped the update (packet_bytes: what it would have cost)
    gain_db: Optional[float] = None  # RD decision: the clip's PSNR gain the update buys (None: not measured)
    cost_db: Optional[float] = None  # ... and what its bits are worth at lambda

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("selection", "training")}
        d["selection"] = self.selection.as_dict() if self.selection else None
        d["training"] = self.training.as_dict()
        return d


@dataclass
class EncodeResult:
    """The container plus the accounting: content bytes (codec payload), model bytes (packets), logs."""

    container: bytes
    geometry: Geometry
    fps: float
    frames: int
    content_bytes: int  # H.265 payload (what a link carries for the pictures)
    content_file_bytes: int  # the Matroska file inside the container
    packets: list[EncodedPacket]  # as sent, in stream order (the generic snapshot first when sent)
    segments: list[SegmentLog]
    lr_decoded: np.ndarray  # uint8 [N, h, w, 3] as the decoder will see it
    manifest: Manifest
    seconds: float
    generic_sha256: Optional[str] = None  # the generic model the stream starts from (None: from scratch)
    initial_model_bytes: int = 0  # the full snapshot in the stream (generic sent, or init 'scratch'); 0: none
    rd_lambda_db_per_bit: Optional[float] = None  # the RD decision's lambda (None: rd_skip off)

    @property
    def model_bytes(self) -> int:
        return sum(len(p.data) for p in self.packets)

    def bits_per_pixel(self, include_model: bool = True) -> float:
        """(content + model stream bits) per original HR pixel."""
        bits = 8 * (self.content_bytes + (self.model_bytes if include_model else 0))
        return bits / (self.frames * self.geometry.width * self.geometry.height)

    def summary(self) -> dict[str, Any]:
        return {"frames": self.frames, "fps": self.fps, "content_bytes": self.content_bytes,
                "model_bytes": self.model_bytes, "initial_model_bytes": self.initial_model_bytes,
                "generic_sha256": self.generic_sha256, "rd_lambda_db_per_bit": self.rd_lambda_db_per_bit,
                "container_bytes": len(self.container), "bpp": self.bits_per_pixel(),
                "bpp_without_initial_model": 8 * (self.content_bytes + self.model_bytes - self.initial_model_bytes)
                / (self.frames * self.geometry.width * self.geometry.height),
                "segments": [s.as_dict() for s in self.segments], "seconds": self.seconds}


def segment_starts(frames: int, fps: float, segment_s: float) -> list[int]:
    """First frame index of every segment: frame i (time i/fps) belongs to segment floor(i / (fps * tau))."""
    if frames <= 0:
        return []
    if math.isinf(segment_s):
        return [0]
    seg = [int(math.floor(i / fps / segment_s + 1e-9)) for i in range(frames)]
    return [i for i in range(frames) if i == 0 or seg[i] != seg[i - 1]]


def select_coordinates(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
                       fraction: float) -> dict[str, torch.Tensor]:
    """Boolean masks of the ``fraction`` of all coordinates with the largest |after - before| (SRVC's
    gradient-guided rule: the change of one full training pass ranks the coordinates)."""
    names = list(before)
    total = sum(before[n].numel() for n in names)
    count = max(1, min(total, int(round(fraction * total))))
    masks = top_count_masks([after[n] - before[n] for n in names], count)
    return dict(zip(names, masks))


def _params(model: SRVCModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def downsample(hr: np.ndarray, geometry: Geometry, chunk: int = 32) -> np.ndarray:
    """Padded HR uint8 ``[N, H, W, 3]`` -> area-downsampled LR uint8, ``chunk`` frames at a time (bounded memory)."""
    from edgert.vision import video  # noqa: PLC0415

    size = (geometry.lr_width, geometry.lr_height)
    return np.concatenate([video.resize(hr[i:i + chunk], size, "area") for i in range(0, hr.shape[0], chunk)])


def uint8_nchw(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> a uint8 ``[N, 3, H, W]`` view (no copy; training converts crops to float)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def rd_lambda(hr: np.ndarray, lr_decoded: np.ndarray, content_bytes: int, lr: np.ndarray, fps: float,
              config: EncoderConfig, geometry: Geometry, sample: int = 10) -> float:
    """lambda in dB of clip PSNR per bit: the content stream's RD slope at this CRF.

    The LR clip is encoded again at ``crf + rd_crf_step``; both streams are upsampled bicubically and
    compared with the HR clip on every ``sample``-th frame; lambda = PSNR difference / bits difference.
    """
    from edgert.srvc import metrics  # noqa: PLC0415
    from edgert.vision import video  # noqa: PLC0415

    coarse = video.encode(lr, fps, "libx265", crf=config.crf + config.rd_crf_step, preset=config.preset)
    idx = slice(0, None, sample)
    ref = geometry.pad_hr(hr[idx]) if hr.shape[1:3] != (geometry.padded_height, geometry.padded_width) else hr[idx]
    size = (geometry.padded_width, geometry.padded_height)
    fine_q = metrics.psnr(ref, video.resize(lr_decoded[idx], size, "bicubic"))
    coarse_q = metrics.psnr(ref, video.resize(video.decode(coarse)[idx], size, "bicubic"))
    bits = 8.0 * (content_bytes - coarse.payload_bytes)
    if bits <= 0 or fine_q <= coarse_q:
        return 0.0  # no measurable slope: every update that gains anything is worth sending
    return (fine_q - coarse_q) / bits


def _segment_psnr(model: SRVCModel, lr: torch.Tensor, hr: torch.Tensor, frames: list[int]) -> float:
    """Mean per-frame PSNR (dB) of ``model`` on the given frames of uint8 NCHW LR/HR tensors."""
    out = []
    with torch.no_grad():
        for f in frames:
            y = model(lr[f:f + 1].float().div_(255.0)).clamp_(0, 1).mul_(255).round_()
            mse = float(torch.mean((y - hr[f:f + 1].float()) ** 2))
            out.append(10 * math.log10(255.0 ** 2 / max(mse, 1e-12)))
    return float(np.mean(out))


def _copy_mirror(mirror: DeviceMirror) -> DeviceMirror:
    other = DeviceMirror(mirror.manifest)
    other.buffer[:] = mirror.buffer
    other.version = mirror.version
    return other


def encode(frames: np.ndarray, fps: float, config: EncoderConfig = EncoderConfig(), *,
           initial_model: Optional[SRVCModel] = None, generics: Optional[GenericLibrary] = None,
           log: Log = print) -> EncodeResult:
    """Encodes RGB frames ``uint8 [N, H, W, 3]`` into an SRVC container.

    Args:
        frames: the original (HR) clip; any size (padded to a multiple of 2k inside).
        fps: frame rate (timestamps of model records are frame / fps).
        config: encoder settings.
        initial_model: the generic model the decoder holds (``init == 'generic'``; the caller obtains it from
            :func:`edgert.srvc.generic.generic_model`); ignored for ``init == 'scratch'``.
        generics: where the decoders' generic models live; the generic model's snapshot is installed there
            (the decoder built with this encoder ships it). None: not installed.
    """
    from edgert.vision import video  # noqa: PLC0415

    config.validate()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames: expected uint8 [N, H, W, 3] with N >= 1, got {frames.dtype} {list(frames.shape)}")
    if config.init == "generic" and initial_model is None:
        raise ValueError("init='generic' needs initial_model (edgert.srvc.generic.generic_model(...))")
    t_start = time.perf_counter()
    n, h, w, _ = frames.shape
    k = config.model.scale
    geo = Geometry(w, h, k)
    if min(geo.lr_width, geo.lr_height) < MIN_LR_SIDE:
        raise ValueError(f"frames: {w}x{h} at scale {k} gives {geo.lr_width}x{geo.lr_height} LR frames; libx265 needs "
                         f"at least {MIN_LR_SIDE} pixels per side "
                         "(the PyAV wheel's libx265 corrupts the heap on narrower frames)")
    hr_pad = geo.pad_hr(frames)
    lr = downsample(hr_pad, geo)
    content = video.encode(lr, fps, "libx265", crf=config.crf, preset=config.preset)
    lr_dec = video.decode(content)
    if lr_dec.shape != lr.shape:
        raise RuntimeError(f"content stream round trip gave {list(lr_dec.shape)}, expected {list(lr.shape)}")
    log(f"content: {n} frames {geo.lr_width}x{geo.lr_height} x265 crf {config.crf:g}: {content.payload_bytes} B")
    lam = None
    if config.rd_skip:
        lam = rd_lambda(hr_pad, lr_dec, content.payload_bytes, lr, fps, config, geo)
        log(f"RD decision: lambda {lam:.3e} dB per bit (content slope crf {config.crf:g} -> "
            f"{config.crf + config.rd_crf_step:g})")
    del lr

    torch.manual_seed(config.seed)
    model = SRVCModel(config.model)
    manifest = module_manifest(model, model_id=config.model_id)
    mirror = DeviceMirror(manifest)
    packets: list[EncodedPacket] = []
    models: list[tuple[int, float, bytes]] = []
    generic_sha, initial_bytes = None, 0
    if config.init == "generic":
        assert initial_model is not None
        if initial_model.config != config.model:
            raise ValueError(f"initial_model config {initial_model.config} differs from {config.model}")
        snap, generic_sha = generic_snapshot(initial_model, manifest, config.packet_format)
        if generics is not None:
            generics.install(snap.data, generic_sha)
        mirror.apply(snap)  # what every decoder holds before the first packet
        load_weights(model, mirror.tensor)
        if config.send_generic:
            packets.append(snap)
            models.append((0, 0.0, snap.data))
            initial_bytes = len(snap.data)
        log(f"generic model {generic_sha[:16]}: {'sent' if config.send_generic else 'in the decoder, not sent'} "
            f"({len(snap.data)} B snapshot)")
    lr_t, hr_t = uint8_nchw(lr_dec), uint8_nchw(hr_pad)
    starts = segment_starts(n, fps, config.segment_s)
    first_iters = config.iterations if config.first_iterations is None else config.first_iterations
    sel_iters = config.iterations if config.selection_iterations is None else config.selection_iterations
    sparse = config.init == "generic"
    bar = Progress(f"SRVC training (crf {config.crf:g}, {len(starts)} segments)",
                   (len(starts) - (0 if sparse else 1)) * (sel_iters + config.iterations)
                   + (0 if sparse else first_iters))
    segments: list[SegmentLog] = []
    for s, first in enumerate(starts):
        last = starts[s + 1] if s + 1 < len(starts) else n
        seg_lr, seg_hr = lr_t[first:last], hr_t[first:last]
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + s)
        train_kw = dict(batch=config.batch, crop=config.crop, learning_rate=config.learning_rate, gen=gen,
                        progress=bar)
        selection = None
        gain = cost = None
        if s == 0 and not sparse:
            stats = train(model, seg_lr, seg_hr, iterations=first_iters, **train_kw)
            pkt = encode_snapshot(manifest, 1, module_weights(model), value_coding=config.snapshot_coding,
                                  max_format=config.packet_format)
            updated = sum(t.numel for t in manifest.tensors)
            initial_bytes = len(pkt.data)
        else:
            theta = _params(model)
            selection = train(model, seg_lr, seg_hr, iterations=sel_iters, **train_kw)
            masks = select_coordinates(theta, _params(model), config.eta)
            load_weights(model, lambda name: theta[name].numpy())
            stats = train(model, seg_lr, seg_hr, iterations=config.iterations, masks=masks, **train_kw)
            updates = parameter_delta(model, mirror, masks)
            pkt = encode_update(manifest, mirror.version, mirror.version + 1, updates, config.value_coding,
                                max_format=config.packet_format)
            updated = sum(int(m.sum()) for m in masks.values())
        send = True
        if lam is not None and pkt.base_version == mirror.version and not pkt.full_snapshot:
            pick = sorted({first + (last - first - 1) * j // max(1, config.rd_frames - 1)
                           for j in range(config.rd_frames)})
            candidate = _copy_mirror(mirror)
            candidate.apply(pkt)
            load_weights(model, candidate.tensor)  # the decoder's exact weights if the update is sent
            with_update = _segment_psnr(model, lr_t, hr_t, pick)
            load_weights(model, mirror.tensor)
            without = _segment_psnr(model, lr_t, hr_t, pick)
            gain = (with_update - without) * (last - first) / n
            cost = lam * 8 * len(pkt.data)
            send = gain >= cost
        if send:
            mirror.apply(pkt)
            packets.append(pkt)
            models.append((first, first / fps, pkt.data))
        load_weights(model, mirror.tensor)  # continue from exactly what the decoder holds
        digest = hashlib.sha256(mirror.weights_bytes()).hexdigest()
        alive = model.alive_channels(seg_lr[:1].float().div_(255.0))
        segments.append(SegmentLog(s, first, last - first, len(pkt.data), updated if send else 0, selection, stats,
                                   digest, alive, mirror.version, send, gain, cost))
        rd = "" if gain is None else (f", RD: gain {gain:+.4f} dB vs cost {cost:.4f} dB -> "
                                      f"{'sent' if send else 'skipped'}")
        log(f"segment {s}: frames {first}..{last - 1}, loss {stats.first_loss:.5f} -> {stats.last_loss:.5f}, "
            f"packet {len(pkt.data)} B ({updated} coordinates), "
            f"{stats.seconds + (selection.seconds if selection else 0):.1f} s, "
            f"channels alive {alive}/{config.model.features}{rd}")
    bar.close()
    header = {
        "format": "edgert-srvc", "width": w, "height": h, "scale": k, "fps": fps, "frames": n,
        "lr_width": geo.lr_width, "lr_height": geo.lr_height, "model": config.model.as_dict(),
        "codec": "libx265", "crf": config.crf, "segment_s": None if math.isinf(config.segment_s) else config.segment_s,
        "generic": None if generic_sha is None else {"sha256": generic_sha, "version": GENERIC_VERSION,
                                                     "sent": config.send_generic},
    }
    container = write_container(header, manifest.to_bytes(), content.data, models)
    return EncodeResult(container, geo, float(fps), n, content.payload_bytes, len(content.data), packets, segments,
                        lr_dec, manifest, time.perf_counter() - t_start, generic_sha, initial_bytes, lam)


def with_overrides(config: EncoderConfig, **kwargs: Any) -> EncoderConfig:
    """``config`` with fields replaced; ``features``/``scale``/``residual`` go to the model config."""
    model_keys = {"features", "scale", "residual", "patch", "predictor_channels", "input_offset"}
    model_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in model_keys}
    if model_kw:
        kwargs["model"] = replace(config.model, **model_kw)
    return replace(config, **kwargs)
