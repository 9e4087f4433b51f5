"""SRVC (Khani, Sivaraman, Alizadeh, ICCV 2021): video as a low-resolution H.265 content stream plus a
model stream of sparse updates to a small content-adaptive super-resolution model.

* :mod:`~edgert.srvc.model`: the SR model with spatially-adaptive kernels, frame geometry;
* :mod:`~edgert.srvc.encoder` / :mod:`~edgert.srvc.decoder`: the two streams, the container
  (:mod:`~edgert.srvc.container`), gradient-guided sparse updates, the libedgert slot on the decoder;
* :mod:`~edgert.srvc.metrics` / :mod:`~edgert.srvc.evaluate`: PSNR, SSIM, BD-rate, RD experiments.

Design and results: ``docs/design/srvc.md``, ``docs/results/srvc.md``.
"""
from __future__ import annotations

from edgert.srvc.container import Container, ContainerError, read_container, write_container
from edgert.srvc.decoder import ContentError, Decoder, DecodeReport, decode, decode_file
from edgert.srvc.encoder import EncoderConfig, EncodeResult, encode
from edgert.srvc.evaluate import EvalConfig, run_ablation, run_eval
from edgert.srvc.generic import GenericConfig, generic_model
from edgert.srvc.model import Geometry, SRConfig, SRVCModel, count_parameters

__all__ = [
    "Container",
    "ContainerError",
    "ContentError",
    "DecodeReport",
    "Decoder",
    "EncodeResult",
    "EncoderConfig",
    "EvalConfig",
    "GenericConfig",
    "Geometry",
    "SRConfig",
    "SRVCModel",
    "count_parameters",
    "decode",
    "decode_file",
    "encode",
    "generic_model",
    "read_container",
    "run_ablation",
    "run_eval",
    "write_container",
]
