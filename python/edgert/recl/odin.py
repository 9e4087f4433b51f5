"""ODIN-style expert selection (Suprem et al., "ODIN: Automated Drift Detection and Recovery in Video
Analytics", VLDB 2020): the baseline RECL's gating network is compared with.

ODIN embeds frames with an autoencoder and keeps, for every specialised model, the cluster its training
frames form in the embedding space; a new frame is served by the model whose cluster it falls into, and a
frame outside every cluster signals drift. This module keeps that structure with a plain convolutional
autoencoder (ODIN's DA-GAN adds an adversarial term on the latent; it is left out) and represents each
expert by the **centroid** of its training frames' embeddings and their **radius** (mean distance to the
centroid). A window's distance to an expert is the mean over its frames of ``||z - centroid|| / radius``
(ODIN's per-cluster band, reduced to one number); :meth:`OdinSelector.select` returns the nearest experts.

Embeddings are standardised per latent dimension with the statistics of the frames the autoencoder was
fitted on, so no dimension dominates the distance. The selector keeps up to ``frames_per_expert``
downsized training frames per expert, so refitting the autoencoder recomputes every cluster.
Not thread-safe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgert.recl.gating import check_expert_ids, check_frames, check_k, rank_experts
from edgert.vision.video import frames_to_tensor, resize


@dataclass(frozen=True)
class OdinConfig:
    """ODIN baseline settings.

    Attributes:
        input_size: ``(width, height)`` the autoencoder sees; both divisible by ``2 ** len(channels)``.
        channels: channels of the encoder's stride-2 convolutions (the decoder mirrors them).
        latent_dim: embedding size.
        train_steps: Adam steps of :meth:`OdinSelector.fit`.
        batch_size: frames per step.
        lr: Adam learning rate.
        frames_per_expert: training frames kept per expert (evenly spaced) to rebuild its cluster.
        min_radius: floor of a cluster's radius, as a fraction of the spread of the fit frames (a cluster
            of one frame has radius 0).
        top_k: experts :meth:`OdinSelector.select` returns by default.
        seed: seeds the weights and the minibatch order (the global RNG is left untouched).
    """

    input_size: tuple[int, int] = (64, 64)
    channels: tuple[int, ...] = (16, 32, 64)
    latent_dim: int = 32
    train_steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    frames_per_expert: int = 128
    min_radius: float = 0.05
    top_k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        scale = 2 ** len(self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels: expected positive channel counts, got {self.channels!r}")
        if len(self.input_size) != 2 or min(self.input_size) < scale or any(s % scale for s in self.input_size):
            raise ValueError(f"input_size: expected (width, height) divisible by {scale}, got {self.input_size!r}")
        if self.latent_dim < 1 or self.batch_size < 1 or self.train_steps < 0 or self.frames_per_expert < 1:
            raise ValueError("latent_dim, batch_size, frames_per_expert >= 1 and train_steps >= 0 expected")
        if self.lr <= 0 or self.min_radius <= 0:
            raise ValueError("lr and min_radius > 0 expected")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k: expected an integer >= 1, got {self.top_k!r}")


class FrameAutoencoder(nn.Module):
    """Convolutional autoencoder: float ``[N, 3, H, W]`` in [0, 1] -> latent ``[N, latent_dim]`` -> reconstruction.

    Encoder: stride-2 4x4 convolutions with ReLU, then a linear map to the latent; the decoder mirrors it
    with transposed convolutions and ends in a sigmoid.
    """

    def __init__(self, input_size: tuple[int, int] = (64, 64), channels: tuple[int, ...] = (16, 32, 64),
                 latent_dim: int = 32) -> None:
        super().__init__()
        w, h = input_size
        scale = 2 ** len(channels)
        self.grid = (channels[-1], h // scale, w // scale)
        flat = channels[-1] * (h // scale) * (w // scale)
        enc: list[nn.Module] = []
        cin = 3
        for c in channels:
            enc += [nn.Conv2d(cin, c, 4, 2, 1), nn.ReLU()]
            cin = c
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, latent_dim))
        dec: list[nn.Module] = [nn.Linear(latent_dim, flat), nn.ReLU(), nn.Unflatten(1, self.grid)]
        outs = list(reversed(channels[:-1])) + [3]
        for i, c in enumerate(outs):
            dec.append(nn.ConvTranspose2d(cin, c, 4, 2, 1))
            dec.append(nn.ReLU() if i < len(outs) - 1 else nn.Sigmoid())
            cin = c
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent ``[N, latent_dim]``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[N, 3, H, W]`` in [0, 1]."""
        return self.decoder(self.encoder(x))


@dataclass(frozen=True)
class ExpertCluster:
    """Where an expert's training frames lie in the (standardised) embedding space.

    Attributes:
        expert_id: the zoo's id.
        centroid: float32 ``[latent_dim]``, mean embedding.
        radius: mean distance of the training frames' embeddings to the centroid.
        count: training frames the cluster was computed from.
    """

    expert_id: int
    centroid: np.ndarray
    radius: float
    count: int


class OdinSelector:
    """ODIN-style selector with the same ``select(frames, k)`` as :class:`edgert.recl.gating.GatingNetwork`.

    Usage: :meth:`fit` the autoencoder on representative frames, :meth:`add_expert` with the frames each
    expert was trained on, then :meth:`select` per window.
    """

    def __init__(self, config: OdinConfig = OdinConfig()) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
            torch.manual_seed(config.seed)
            self.autoencoder = FrameAutoencoder(config.input_size, config.channels, config.latent_dim)
        self.autoencoder.eval()
        self._mean: Optional[torch.Tensor] = None
        self._std: Optional[torch.Tensor] = None
        self._spread = 0.0
        self._frames: dict[int, np.ndarray] = {}
        self.clusters: dict[int, ExpertCluster] = {}

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self._mean is not None

    @property
    def expert_ids(self) -> list[int]:
        """Experts with a cluster, in the order they were added."""
        return list(self.clusters)

    def _small(self, frames: np.ndarray) -> np.ndarray:
        w, h = self.config.input_size
        return frames if frames.shape[1:3] == (h, w) else resize(frames, (w, h), "area")

    def fit(self, frames: np.ndarray) -> list[float]:
        """Train the autoencoder on ``frames`` (reconstruction MSE), fix the latent standardisation, and
        recompute every expert's cluster. Returns the minibatch losses."""
        x = frames_to_tensor(self._small(check_frames(frames)))
        ae, bs = self.autoencoder, min(self.config.batch_size, x.shape[0])
        opt = torch.optim.Adam(ae.parameters(), lr=self.config.lr, fused=True)
        losses = []
        ae.train()
        for _ in range(self.config.train_steps):
            batch = x[torch.randperm(x.shape[0], generator=self.generator)[:bs]]
            loss = F.mse_loss(ae(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        ae.eval()
        self._mean = self._std = None
        z = self._latent(x)
        self._mean, self._std = z.mean(0), z.std(0, correction=0).clamp_min(1e-6)
        zs = (z - self._mean) / self._std
        self._spread = float((zs - zs.mean(0)).norm(dim=1).mean())
        for e, kept in self._frames.items():
            self.clusters[e] = self._cluster(e, kept)
        return losses

    @torch.no_grad()
    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.autoencoder.encode(x[i:i + 64]) for i in range(0, x.shape[0], 64)])
        if self._mean is not None and self._std is not None:
            z = (z - self._mean) / self._std
        return z

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Standardised embeddings of ``frames``: float32 ``[N, latent_dim]``.

        Raises:
            ValueError: bad frames. RuntimeError: :meth:`fit` has not run.
        """
        frames = check_frames(frames)
        if not self.fitted:
            raise RuntimeError("OdinSelector: fit(frames) the autoencoder before embedding frames")
        return self._latent(frames_to_tensor(self._small(frames))).numpy()

    def _cluster(self, expert_id: int, small: np.ndarray) -> ExpertCluster:
        z = self.embed(small)
        centroid = z.mean(0)
        radius = float(np.linalg.norm(z - centroid, axis=1).mean())
        return ExpertCluster(expert_id, centroid, radius, int(z.shape[0]))

    def add_expert(self, expert_id: int, frames: np.ndarray) -> ExpertCluster:
        """Register ``expert_id`` with the frames it was trained on (replacing an earlier cluster of that id).

        Raises:
            ValueError: bad id or frames. RuntimeError: :meth:`fit` has not run.
        """
        (eid,) = check_expert_ids([expert_id], "expert_id")
        small = self._small(check_frames(frames))
        if small.shape[0] > self.config.frames_per_expert:
            small = small[np.linspace(0, small.shape[0] - 1, self.config.frames_per_expert).round().astype(int)]
        cluster = self._cluster(eid, small)
        self._frames[eid] = small.copy()
        self.clusters[eid] = cluster
        return cluster

    def remove_expert(self, expert_id: int) -> None:
        """Forget a pruned expert. Raises ValueError for an unknown id."""
        if expert_id not in self.clusters:
            raise ValueError(f"unknown expert id {expert_id!r}: the selector has {self.expert_ids}")
        del self.clusters[expert_id]
        del self._frames[expert_id]

    def distances(self, frames: np.ndarray) -> dict[int, float]:
        """Each expert's distance to the window: mean over frames of ``||z - centroid|| / radius``, the radius
        floored at ``min_radius`` times the spread of the fit frames."""
        z = self.embed(frames)
        floor = self.config.min_radius * max(self._spread, 1e-6)
        return {e: float(np.linalg.norm(z - c.centroid, axis=1).mean() / max(c.radius, floor))
                for e, c in self.clusters.items()}

    def select(self, frames: np.ndarray, k: Optional[int] = None) -> list[int]:
        """The ``k`` nearest experts (default ``config.top_k``; all when fewer), nearest first (ties: smaller
        id). No experts selects ``[]``.

        Raises:
            ValueError: empty or malformed frames, ``k <= 0``. RuntimeError: :meth:`fit` has not run.
        """
        k = check_k(self.config.top_k if k is None else k)
        frames = check_frames(frames)
        if not self.clusters:
            return []
        return rank_experts(self.distances(frames), k, descending=False)

    def outliers(self, frames: np.ndarray, threshold: float = 2.0) -> np.ndarray:
        """ODIN's drift signal: bool ``[N]``, True for frames farther than ``threshold`` radii from every
        cluster (all True without experts)."""
        z = self.embed(frames)
        floor = self.config.min_radius * max(self._spread, 1e-6)
        out = np.ones(z.shape[0], dtype=bool)
        for c in self.clusters.values():
            out &= np.linalg.norm(z - c.centroid, axis=1) / max(c.radius, floor) > threshold
        return out
