"""Cached pretrained models: trained once, stored under edgert's user cache, keyed by what they depend on.

Applications pretrain generic models before customising them (AMS's generic student, SRVC's generic SR
model). :class:`ModelCache` names each file by a hash of everything the weights depend on (architecture,
training settings, data, a format tag bumped when the training code changes), so a stale file is never
picked up, and writes it atomically, so an interrupted pretraining leaves no half-written file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from edgert.harness.run import config_hash

Log = Callable[[str], None]


class ModelCache:
    """State dicts under ``root/namespace`` (default root: :func:`edgert.data.cache_dir`).

    Args:
        namespace: a folder per application (``"ams"``, ``"srvc"``).
        root: the cache root; None uses ``$EDGERT_CACHE_DIR`` or ``~/.cache/edgert``.
    """

    def __init__(self, namespace: str, root: Optional[Union[str, Path]] = None) -> None:
        from edgert.data import cache_dir

        self.folder = Path(root) if root is not None else cache_dir() / namespace

    def path(self, prefix: str, key: Mapping[str, Any]) -> Path:
        """The file of the model ``prefix`` trained with ``key`` (``prefix-<16 hex digits>.pt``)."""
        return self.folder / f"{prefix}-{config_hash(key)}.pt"

    def load_or_train(self, model: nn.Module, prefix: str, key: Mapping[str, Any],
                      train: Callable[[nn.Module], None], log: Optional[Log] = None) -> tuple[nn.Module, Path, bool]:
        """Loads ``model``'s weights from the cache, or runs ``train(model)`` and caches the result.

        Returns ``(model, path, trained)``; ``trained`` tells whether training ran now.
        """
        path = self.path(prefix, key)
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model, path, False
        if log is not None:
            log(f"{prefix}: not in the cache, training it once (cached as {path})")
        train(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return model, path, True


__all__ = ["ModelCache"]
