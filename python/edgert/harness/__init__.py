"""The experiment harness shared by every application (``mimo``, ``srvc``, ``ams``, ...).

* :mod:`~edgert.harness.run`: run folders -- config with a hash and a compatibility check, atomic JSON,
  resume and merge of partial results.
* :mod:`~edgert.harness.cache`: pretrained models cached by a key of everything they depend on.
* :mod:`~edgert.harness.progress`: progress bars with rate and ETA (plain log lines off a terminal).
* :mod:`~edgert.harness.plots`: matplotlib on Agg, figures saved atomically.
* :mod:`~edgert.harness.executors`: picklable callables run as tasks, in process or on Ray (local or a
  cluster), errors as values: what RECL's scheduler and the AMS server's training phases run on.
"""
from __future__ import annotations

from edgert.harness.cache import ModelCache
from edgert.harness.executors import LocalExecutor, RayExecutor, TaskExecutor, TaskHandle, TaskResult
from edgert.harness.plots import pyplot, save_figure
from edgert.harness.progress import Progress, progress, track
from edgert.harness.run import (
    RunFolder,
    RunFolderError,
    canonical_json,
    config_hash,
    differing_keys,
    flatten,
    read_json,
    write_json,
)

__all__ = ["LocalExecutor", "ModelCache", "Progress", "RayExecutor", "RunFolder", "RunFolderError", "TaskExecutor",
           "TaskHandle", "TaskResult", "canonical_json", "config_hash", "differing_keys", "flatten", "progress",
           "pyplot", "read_json", "save_figure", "track", "write_json"]
