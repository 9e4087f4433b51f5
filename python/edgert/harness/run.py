"""Run folders: one experiment's config, results and plots in one directory, resumable.

Layout of a run folder::

    config.json     the experiment's config (what the results depend on)
    run.json        config hash, edgert version, host, start/end times, merge history
    results.json    the results (written atomically; partial results survive an interrupted run)
    *.png, ...      plots and whatever else the application writes

A folder is reopened only for the *same* experiment: :class:`RunFolder` compares the fixed keys of the
stored config with the new one (``free`` keys -- e.g. which SNR points or schemes to run -- may differ, so
a run can be extended) and refuses a folder holding something else, before any work starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]


class RunFolderError(ValueError):
    """The folder holds another experiment, or a file of it is unreadable."""


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal text (tuples become lists)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config: Mapping[str, Any], exclude: Sequence[str] = ()) -> str:
    """First 16 hex digits of SHA-256 over the canonical JSON of ``config`` without the ``exclude`` keys."""
    kept = {k: v for k, v in config.items() if k not in exclude}
    return hashlib.sha256(canonical_json(kept).encode()).hexdigest()[:16]


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_bytes_atomic(path: PathLike, data: Union[bytes, bytearray, memoryview]) -> Path:
    """Writes ``data`` to ``path`` atomically and durably: a temporary file in the same folder
    (``.<name>.<pid>.<thread>.tmp``), fsync, rename over ``path``, then fsync of the folder. A reader -- or
    a process restarted after a crash or a power loss -- sees the old file or the new one, never half of one,
    and once the call returns the new file survives a crash. On failure the temporary file is removed and
    ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: PathLike) -> None:
    """Makes the entries of ``folder`` (files created, renamed or removed in it) durable (no-op where the
    platform cannot open a folder, e.g. Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: PathLike, data: Any, *, indent: Optional[int] = 2, sort_keys: bool = False) -> Path:
    """Writes ``data`` as JSON atomically (:func:`write_bytes_atomic`), so a reader (or a resumed run) sees
    the old file or the new one, never half of one."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=_json_default) + "\n"
    return write_bytes_atomic(path, text.encode())


def read_json(path: PathLike) -> Any:
    """Reads a JSON file; raises :class:`RunFolderError` naming the file when it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"cannot read {path}: {exc}") from exc


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"ams": {"lr": 1}}`` -> ``{"ams.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _is_free(key: str, free: Sequence[str]) -> bool:
    return any(key == f or key.startswith(f + ".") for f in free)


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any], free: Sequence[str] = (),
                   defaults: Optional[Mapping[str, Any]] = None) -> list[str]:
    """Dotted keys of ``new`` (nested mappings flattened; not under a ``free`` key) whose value differs in
    ``old``, compared as JSON; a key missing from an older ``old`` counts as its value in ``defaults``
    (absent there too: as missing)."""
    flat_old, flat_defaults = flatten(old), flatten(defaults or {})
    missing = object()
    out = []
    for key, value in flatten(new).items():
        if _is_free(key, free):
            continue
        before = flat_old.get(key, flat_defaults.get(key, missing))
        if before is missing or canonical_json(before) != canonical_json(value):
            out.append(key)
    return out


class RunFolder:
    """One experiment's folder.

    Args:
        path: the folder (created on :meth:`start`).
        config: the experiment's config as a JSON-ready mapping (e.g. ``dataclasses.asdict(cfg)``).
        free: config keys that may differ from a run already in the folder (what to run, not how); a
            dotted key (``"eval.schemes"``) names a key of a nested mapping, a key frees everything below it.
        defaults: values of keys that an older ``config.json`` may lack (e.g. the dataclass defaults).

    Raises:
        RunFolderError: ``path`` holds a run whose config differs in a fixed key.
    """

    CONFIG = "config.json"
    RESULTS = "results.json"
    META = "run.json"

    def __init__(self, path: PathLike, config: Mapping[str, Any], *, free: Sequence[str] = (),
                 defaults: Optional[Mapping[str, Any]] = None) -> None:
        self.path = Path(path)
        self.config = dict(config)
        self.free = tuple(free)
        self.hash = config_hash({k: v for k, v in flatten(self.config).items() if not _is_free(k, self.free)})
        stored = self.path / self.CONFIG
        if stored.is_file():
            differ = differing_keys(read_json(stored), self.config, self.free, defaults)
            if differ:
                raise RunFolderError(f"{self.path} holds a run with a different config ({', '.join(differ)}); "
                                     "use another folder")

    def file(self, name: str) -> Path:
        """A path inside the folder."""
        return self.path / name

    @property
    def resumed(self) -> bool:
        """Whether the folder already held results of this experiment."""
        return (self.path / self.RESULTS).is_file()

    def start(self, config: Optional[Mapping[str, Any]] = None) -> "RunFolder":
        """Creates the folder and writes ``config.json`` (``config``: what to store, default the config
        given to the constructor, e.g. with the free keys merged over an earlier run's) and ``run.json``."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / self.CONFIG, dict(config) if config is not None else self.config)
        meta = read_json(self.path / self.META) if (self.path / self.META).is_file() else {}
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        sessions = meta.get("sessions", [])
        sessions.append({"started": now, "argv": sys.argv[1:]})
        meta.update(config_hash=self.hash, edgert=_version(), python=platform.python_version(),
                    machine=platform.machine(), created=meta.get("created", now), sessions=sessions)
        write_json(self.path / self.META, meta)
        return self

    def finish(self) -> None:
        """Records the end time of this session in ``run.json``."""
        meta = read_json(self.path / self.META) if (self.path / self.META).is_file() else {"sessions": [{}]}
        meta.setdefault("sessions", [{}])[-1]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_json(self.path / self.META, meta)

    def load_results(self, default: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """The results of an earlier session of this run (``default`` or ``{}`` when there are none)."""
        if self.resumed:
            return read_json(self.path / self.RESULTS)
        return dict(default or {})

    def stored_config(self) -> dict[str, Any]:
        """The config of the run already in the folder (``{}`` for a new folder)."""
        stored = self.path / self.CONFIG
        return read_json(stored) if stored.is_file() else {}

    def save_results(self, results: Mapping[str, Any], name: str = RESULTS) -> Path:
        """Writes ``results`` atomically (call after every finished unit of work to make the run resumable)."""
        return write_json(self.path / name, results)


def _version() -> str:
    try:
        from edgert import __version__

        return __version__
    except ImportError:  # pragma: no cover - the extension is missing
        return "unknown"


__all__ = ["RunFolder", "RunFolderError", "canonical_json", "config_hash", "differing_keys", "flatten", "fsync_dir",
           "read_json", "write_bytes_atomic", "write_json"]
