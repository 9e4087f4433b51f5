"""SRVC encoder: a low-resolution H.265 content stream plus a model stream of sparse SR-model updates.

Per clip: pad the HR frames to a multiple of 2k (:class:`~edgert.srvc.model.Geometry`),
area-downsample by k, encode with libx265 (preset slow, one CRF), and decode it again (the model
is trained on exactly what the decoder will see). Then, per segment of tau seconds:

* segment 0: train every parameter (starting from the generic model, or from scratch), send a
  full snapshot;
* segment t > 0, the paper's gradient-guided selection: from the decoder's current model
  theta, train every parameter for one pass, keep the fraction eta of coordinates with the
  largest |change|, restore theta, train only those, and send their deltas as one sparse
  update packet (``ADD`` of fp16 values by default).

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
    packets: list[EncodedPacket]
    segments: list[SegmentLog]
    lr_decoded: np.ndarray  # uint8 [N, h, w, 3] as the decoder will see it
    manifest: Manifest
    seconds: float

    @property
    def model_bytes(self) -> int:
        return sum(len(p.data) for p in self.packets)

    def bits_per_pixel(self, include_model: bool = True) -> float:
        """(content + model stream bits) per original HR pixel."""
        bits = 8 * (self.content_bytes + (self.model_bytes if include_model else 0))
        return bits / (self.frames * self.geometry.width * self.geometry.height)

    def summary(self) -> dict[str, Any]:
        return {"frames": self.frames, "fps": self.fps, "content_bytes": self.content_bytes,
                "model_bytes": self.model_bytes,
                "initial_model_bytes": len(self.packets[0].data) if self.packets else 0,
                "container_bytes": len(self.container), "bpp": self.bits_per_pixel(),
                "bpp_without_initial_model": 8 * (self.content_bytes + self.model_bytes -
                                                  (len(self.packets[0].data) if self.packets else 0))
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


def encode(frames: np.ndarray, fps: float, config: EncoderConfig = EncoderConfig(), *,
           initial_model: Optional[SRVCModel] = None, log: Log = print) -> EncodeResult:
    """Encodes RGB frames ``uint8 [N, H, W, 3]`` into an SRVC container.

    Args:
        frames: the original (HR) clip; any size (padded to a multiple of 2k inside).
        fps: frame rate (timestamps of model records are frame / fps).
        config: encoder settings.
        initial_model: the model segment 0 starts from (``init == 'generic'``: the generic SR model,
            which the caller obtains from :func:`edgert.srvc.generic.generic_model`); ignored for
            ``init == 'scratch'``.
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
    lr = video.resize(hr_pad, (geo.lr_width, geo.lr_height), "area")
    content = video.encode(lr, fps, "libx265", crf=config.crf, preset=config.preset)
    lr_dec = video.decode(content)
    if lr_dec.shape != lr.shape:
        raise RuntimeError(f"content stream round trip gave {list(lr_dec.shape)}, expected {list(lr.shape)}")
    log(f"content: {n} frames {geo.lr_width}x{geo.lr_height} x265 crf {config.crf:g}: {content.payload_bytes} B")

    torch.manual_seed(config.seed)
    model = SRVCModel(config.model)
    if config.init == "generic":
        if initial_model.config != config.model:
            raise ValueError(f"initial_model config {initial_model.config} differs from {config.model}")
        model.load_state_dict(initial_model.state_dict())
    manifest = module_manifest(model, model_id=config.model_id)
    mirror = DeviceMirror(manifest)
    lr_t, hr_t = video.frames_to_tensor(lr_dec), video.frames_to_tensor(hr_pad)
    starts = segment_starts(n, fps, config.segment_s)
    first_iters = config.iterations if config.first_iterations is None else config.first_iterations
    sel_iters = config.iterations if config.selection_iterations is None else config.selection_iterations
    bar = Progress(f"SRVC training (crf {config.crf:g}, {len(starts)} segments)",
                   first_iters + (len(starts) - 1) * (sel_iters + config.iterations))
    packets: list[EncodedPacket] = []
    segments: list[SegmentLog] = []
    models: list[tuple[int, float, bytes]] = []
    for s, first in enumerate(starts):
        last = starts[s + 1] if s + 1 < len(starts) else n
        seg_lr, seg_hr = lr_t[first:last], hr_t[first:last]
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + s)
        train_kw = dict(batch=config.batch, crop=config.crop, learning_rate=config.learning_rate, gen=gen,
                        progress=bar)
        selection = None
        if s == 0:
            stats = train(model, seg_lr, seg_hr, iterations=first_iters, **train_kw)
            pkt = encode_snapshot(manifest, 1, module_weights(model), value_coding=config.snapshot_coding,
                                  max_format=config.packet_format)
            updated = sum(t.numel for t in manifest.tensors)
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
        mirror.apply(pkt)
        load_weights(model, mirror.tensor)  # continue from exactly what the decoder holds
        packets.append(pkt)
        models.append((first, first / fps, pkt.data))
        digest = hashlib.sha256(mirror.weights_bytes()).hexdigest()
        alive = model.alive_channels(seg_lr[:1])
        segments.append(SegmentLog(s, first, last - first, len(pkt.data), updated, selection, stats, digest, alive))
        log(f"segment {s}: frames {first}..{last - 1}, loss {stats.first_loss:.5f} -> {stats.last_loss:.5f}, "
            f"packet {len(pkt.data)} B ({updated} coordinates), "
            f"{stats.seconds + (selection.seconds if selection else 0):.1f} s, "
            f"channels alive {alive}/{config.model.features}")
    bar.close()
    header = {
        "format": "edgert-srvc", "width": w, "height": h, "scale": k, "fps": fps, "frames": n,
        "lr_width": geo.lr_width, "lr_height": geo.lr_height, "model": config.model.as_dict(),
        "codec": "libx265", "crf": config.crf, "segment_s": None if math.isinf(config.segment_s) else config.segment_s,
    }
    container = write_container(header, manifest.to_bytes(), content.data, models)
    return EncodeResult(container, geo, float(fps), n, content.payload_bytes, len(content.data), packets, segments,
                        lr_dec, manifest, time.perf_counter() - t_start)


def with_overrides(config: EncoderConfig, **kwargs: Any) -> EncoderConfig:
    """``config`` with fields replaced; ``features``/``scale``/``residual`` go to the model config."""
    model_keys = {"features", "scale", "residual", "patch", "predictor_channels", "input_offset"}
    model_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in model_keys}
    if model_kw:
        kwargs["model"] = replace(config.model, **model_kw)
    return replace(config, **kwargs)
