"""A generic (not content-adaptive) SR model trained once on scikit-image's bundled photos, cached on disk.

Used as the "low-res x265 + generic SR" baseline and as the starting point of SRVC and one-shot
customisation. Training pairs: each image is cropped to a multiple of 2k, area-downsampled by k,
compressed as a one-frame libx265 video at several CRFs (so the model sees codec artefacts), and
decoded; the target is the original image. The cache key hashes the model config, the training
config and the image list, so a change retrains.

The generic model is part of the decoder: :class:`GenericLibrary` holds it as an fp16 snapshot packet
named by the sha256 of the weights it installs, and a container's header names the one its model
stream starts from (``docs/spec/srvc-container.md``).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from edgert.harness import ModelCache, progress
from edgert.srvc.model import SRConfig, SRVCModel
from edgert.srvc.training import train
from edgert.updates import DeviceMirror, EncodedPacket, Manifest, encode_snapshot, module_weights

# Photos that ship inside the scikit-image wheel (no download): colour ones, then grey ones (used as
# R = G = B, so the model also sees content without any colour to learn from).
IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel", "stereo_motorcycle",
          "camera", "grass", "gravel", "brick", "moon", "coins")


@dataclass(frozen=True)
class GenericConfig:
    """How the generic model is trained (not from the paper: a small budget that fits a CPU)."""

    iterations: int = 1000
    batch: int = 4
    tile_lr: int = 64  # images are cut into LR tiles of this side
    crop_lr: int = 48  # random LR crops of this side are drawn from the tiles (HR crop = scale * crop_lr)
    learning_rate: float = 5e-4
    augmented: bool = True  # random flips, transpose and RGB permutation (edgert.srvc.training.augment)
    crfs: tuple[int, ...] = (18, 26, 34, 42)
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def load_images() -> dict[str, np.ndarray]:
    """The bundled images as uint8 ``[H, W, 3]`` (RGBA dropped, grey replicated to RGB)."""
    from skimage import data  # noqa: PLC0415 - optional dependency

    out = {}
    for name in IMAGES:
        img = getattr(data, name)()
        img = np.asarray(img[0] if isinstance(img, tuple) else img)  # stereo_motorcycle: (left, right, disparity)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.shape[2] == 4:
            img = img[..., :3]
        out[name] = np.ascontiguousarray(img.astype(np.uint8))
    return out


def training_pairs(scale: int, crfs: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(decoded LR [len(crfs), 3, h, w], HR [len(crfs), 3, s*h, s*w]) per image, in [0, 1]."""
    from edgert.vision import video  # noqa: PLC0415

    pairs = []
    for img in load_images().values():
        h, w = (img.shape[0] // (2 * scale)) * 2 * scale, (img.shape[1] // (2 * scale)) * 2 * scale
        hr = img[:h, :w]
        lr = video.resize(hr, (w // scale, h // scale), "area")
        decoded = [video.decode(video.encode(lr[None], 25.0, "libx265", crf=crf, preset="medium"))[0] for crf in crfs]
        pairs.append((video.frames_to_tensor(np.stack(decoded)), video.frames_to_tensor(np.stack([hr] * len(crfs)))))
    return pairs


def training_tiles(scale: int, crfs: tuple[int, ...], tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images cut into non-overlapping LR ``tile`` x ``tile`` tiles: (LR [T, 3, t, t], HR [T, 3, s*t, s*t])."""
    lrs, hrs = [], []
    for lr, hr in training_pairs(scale, crfs):
        h, w = lr.shape[-2:]
        for y in range(0, h - tile + 1, tile):
            for x in range(0, w - tile + 1, tile):
                lrs.append(lr[:, :, y:y + tile, x:x + tile])
                hrs.append(hr[:, :, y * scale:(y + tile) * scale, x * scale:(x + tile) * scale])
    if not lrs:
        raise ValueError(f"no image is large enough for {tile} x {tile} LR tiles at scale {scale}")
    return torch.cat(lrs).contiguous(), torch.cat(hrs).contiguous()


def cache_key(model_config: SRConfig, config: GenericConfig) -> dict:
    """Everything the generic model's weights depend on (format 3: trained with the shared MaskedAdam)."""
    return {"model": model_config.as_dict(), "train": config.as_dict(), "images": list(IMAGES), "format": 3}


def generic_model(model_config: SRConfig = SRConfig(), config: GenericConfig = GenericConfig(),
                  cache_dir: Optional[Union[str, Path]] = None, log: Callable[[str], None] = print) -> SRVCModel:
    """The generic model for ``model_config``: loaded from the cache (:class:`edgert.harness.ModelCache`,
    namespace ``srvc``, or ``cache_dir``), or trained once and cached."""
    torch.manual_seed(config.seed)
    model = SRVCModel(model_config)

    def pretrain(model: SRVCModel) -> None:
        log(f"training the generic SR model ({config.iterations} iterations on {len(IMAGES)} scikit-image photos)")
        lr, hr = training_tiles(model_config.scale, config.crfs, tile=config.tile_lr)
        gen = torch.Generator().manual_seed(config.seed)
        with progress("generic SR model", config.iterations) as bar:
            stats = train(model, lr, hr, iterations=config.iterations, batch=config.batch,
                          crop=config.crop_lr / config.tile_lr, learning_rate=config.learning_rate, gen=gen,
                          augmented=config.augmented, progress=bar)
        alive = model.alive_channels(lr[::3])
        log(f"generic model: loss {stats.first_loss:.5f} -> {stats.last_loss:.5f} in {stats.seconds:.0f} s "
            f"({lr.shape[0]} tiles); adaptive-conv channels alive {alive}/{model_config.features}")
        if alive < model_config.features // 2:
            log(f"warning: {model_config.features - alive} of {model_config.features} adaptive-conv channels are "
                "dead (zero on every training tile); they will not learn during customisation either")

    ModelCache("srvc", cache_dir).load_or_train(model, "generic", cache_key(model_config, config), pretrain)
    model.eval()
    return model


# The slot version the generic model occupies in every decoder: packets of a stream that starts from the
# generic model have base version GENERIC_VERSION.
GENERIC_VERSION = 1
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def generic_snapshot(model: SRVCModel, manifest: Manifest, max_format: int = 2) -> tuple[EncodedPacket, str]:
    """The generic model as the fp16 full-snapshot packet (version :data:`GENERIC_VERSION`) a decoder installs,
    and its identity: the sha256 (hex) of the slot's weight buffer after applying it (what the decoder holds)."""
    pkt = encode_snapshot(manifest, GENERIC_VERSION, module_weights(model), value_coding="fp16",
                          max_format=max_format)
    mirror = DeviceMirror(manifest)
    mirror.apply(pkt)
    return pkt, hashlib.sha256(mirror.weights_bytes()).hexdigest()


class GenericLibrary:
    """The generic models a decoder holds: snapshot packets in ``folder``, one file ``<sha256>.ertp`` each.

    ``folder`` None: ``<edgert cache>/srvc/generic-models``. The name is the sha256 of the weights the packet
    installs (:func:`generic_snapshot`); the decoder checks it again after installing.
    """

    def __init__(self, folder: Optional[Union[str, Path]] = None) -> None:
        from edgert.data import cache_dir  # noqa: PLC0415

        self.folder = Path(folder) if folder is not None else cache_dir() / "srvc" / "generic-models"

    @staticmethod
    def valid_id(sha256: str) -> bool:
        """True for 64 lower-case hex digits (the only names looked up: a header cannot name a path)."""
        return isinstance(sha256, str) and _SHA256_HEX.fullmatch(sha256) is not None

    def path(self, sha256: str) -> Path:
        if not self.valid_id(sha256):
            raise ValueError(f"generic model id: expected 64 lower-case hex digits, got {sha256!r}")
        return self.folder / f"{sha256}.ertp"

    def install(self, packet: bytes, sha256: str) -> Path:
        """Stores the snapshot packet under its id (atomically; an existing file is kept)."""
        path = self.path(sha256)
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_bytes(bytes(packet))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return path

    def get(self, sha256: str) -> Optional[bytes]:
        """The snapshot packet of generic model ``sha256``, or None when this decoder does not have it."""
        path = self.path(sha256)
        return path.read_bytes() if path.is_file() else None
