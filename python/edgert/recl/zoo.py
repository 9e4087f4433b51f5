"""RECL's model zoo: the persistent set of expert models shared by every device (Khani et al., NSDI 2023, §4).

An *expert* is a lightweight model retrained on one device's frames of one model-update window. The zoo keeps
every expert with its provenance, the selection history (which expert the gating network and the safety checker
chose for which device and window, among which candidates), the accuracy table (each expert's accuracy on
samples, as measured by the safety checker or the gating network's labelling) and the admission queue. Experts
enter in two ways:

* :meth:`ModelZoo.add_expert` adds one directly (seeding the zoo, tests);
* :meth:`ModelZoo.propose` is the paper's admission rule: a retrained model is *promising* when its accuracy on
  the window's samples beats the best zoo candidate's by at least ``alpha``; promising models wait in the
  admission queue of their task until ``gamma`` of them have gathered, then join the zoo together, in one
  transaction (the gating network is retrained once per batch, not once per model).

:meth:`ModelZoo.prune` removes the experts of a task that were chosen fewer than ``eta`` times in its last ``q``
selections (an expert younger than those ``q`` selections is not judged yet).

Storage (``root``)::

    zoo.sqlite      SQLite, WAL mode: experts, training_windows, selections, accuracy, admission_queue
    zoo.lock        flock: the first opener recovers (exclusive), then every opener shares it
    experts/        one file per expert or queued model: a full-snapshot update packet (docs/spec/update-packet.md)

Each expert is stored as the full-snapshot packet :func:`edgert.updates.encode_snapshot` writes for the module's
parameters (float32, ``named_parameters()`` order, lossless by default), so the bytes a device receives are the
bytes on disk; the manifest is kept in the database. As everywhere in edgert, only trainable parameters are
stored (BatchNorm statistics are frozen while streaming; see ``ams.server``).

Crash consistency (a process killed at any instant, SIGKILL included):

* a weights file is written atomically and durably (:func:`edgert.harness.run.write_bytes_atomic`: temporary
  file, fsync, rename, fsync of the folder) *before* the row that names it is committed; SQLite commits with
  ``synchronous=FULL``;
* a file is deleted only *after* the commit that stops referencing it (pruning marks the row, then unlinks);
* on open, the first opener deletes every file that no active/quarantined expert row and no queue row names
  (orphans of an interrupted write, files of pruned experts, temporary files), and checks every active
  expert's file (size, CRC32C, SHA-256): a missing or damaged file quarantines its expert, which is never
  served again. Every read checks the file again.

Rows are never deleted (experts change status active -> quarantined | pruned), so expert ids, counts and the
selection history only grow.

Parameter defaults: the paper's values of ``alpha``, ``gamma`` and ``eta`` could not be retrieved here (no copy of
its text in reach); the defaults below (alpha = 0.05, gamma = 4, eta = 3) are our choices, explained on each field,
and ``q = 3000`` is the window of selections the paper prunes over.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
from torch import nn

import edgert._edgert as _edgert
from edgert.harness.run import fsync_dir, write_bytes_atomic
from edgert.updates.manifest import FORMAT_VERSION, MODEL_ID_BYTES, Manifest, crc32c
from edgert.updates.packet import COMPACT_FORMAT, encode_snapshot
from edgert.updates.weights import buffer_tensors, load_weights, model_id_for, module_manifest, module_weights

SCHEMA_VERSION = 1
DB_NAME = "zoo.sqlite"
LOCK_NAME = "zoo.lock"
WEIGHTS_DIR = "experts"
SNAPSHOT_SUFFIX = ".ertp"
#: the target version of a stored snapshot (base 0): it applies to a device slot of any older version
STORED_VERSION = 1

#: a model to store: a module (its parameters) or float arrays by parameter name (numpy arrays or tensors)
ModelLike = Union[nn.Module, Mapping[str, Any]]


class ZooError(ValueError):
    """The zoo cannot do what was asked: unknown or non-active expert, a damaged weights file (its expert is now
    quarantined), a closed zoo, or a database written by a newer schema."""


@dataclass(frozen=True)
class ZooConfig:
    """Admission, pruning and storage parameters of a :class:`ModelZoo`."""

    alpha: float = 0.05
    """Admission margin: a retrained model is promising when its accuracy on the window's samples exceeds the best
    zoo candidate's by at least ``alpha`` (accuracy as a fraction, so 0.05 is five points). Our choice: a gain
    clearly above the noise of accuracy measured on a window's few dozen labelled frames."""
    gamma: int = 4
    """Promising models of a task gathered before they join the zoo together (one transaction, one retraining of
    the gating network per batch). Our choice: small enough that new scenes become selectable within a few
    windows."""
    eta: int = 3
    """Pruning threshold: an expert chosen fewer than ``eta`` times in its task's last ``q`` selections is removed.
    Our choice: keeps experts picked now and then (a recurring scene) and drops those picked at most twice."""
    q: int = 3000
    """The window of recent selections, per task, over which usage is counted for pruning (the paper's value)."""
    min_experts: int = 1
    """Pruning never leaves a task with fewer active experts than this (the least chosen go first)."""
    value_coding: Optional[str] = None
    """Value coding of the stored snapshots: None stores every tensor losslessly (fp32); 'fp16' or 'int8' trade
    exactness for size (see :func:`edgert.updates.encode_snapshot`)."""
    max_format: int = FORMAT_VERSION
    """Newest packet format the stored snapshots may use (2 lets fp16/int8 snapshots be range coded)."""
    verify_on_open: bool = True
    """Check every active expert's file (size, CRC32C, SHA-256) when the zoo opens, quarantining damaged ones."""
    busy_timeout_s: float = 30.0
    """How long a statement waits for another process's write transaction before failing."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha: expected a finite value >= 0, got {self.alpha}")
        for name in ("gamma", "eta", "q"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        if self.min_experts < 0:
            raise ValueError(f"min_experts: expected >= 0, got {self.min_experts}")
        if self.busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s: expected >= 0, got {self.busy_timeout_s}")
        if self.value_coding not in (None, "fp32", "fp16", "int8"):
            raise ValueError(f"value_coding: expected None, 'fp32', 'fp16' or 'int8', got {self.value_coding!r}")
        if self.max_format not in (FORMAT_VERSION, COMPACT_FORMAT):
            raise ValueError(f"max_format: expected {FORMAT_VERSION} or {COMPACT_FORMAT}, got {self.max_format}")


@dataclass(frozen=True)
class ExpertInfo:
    """One expert of the zoo (a row of ``experts``)."""

    id: int
    task: str
    tag: str
    """Architecture / model tag; with the tensor table it fixes ``model_id`` (:func:`edgert.updates.model_id_for`)."""
    model_id: bytes
    device: str
    """The device whose frames it was trained on."""
    window: int
    """The model-update window of those frames."""
    created: float
    """Unix time the model was stored (proposed, for admitted experts)."""
    file: str
    """Name of its snapshot file under ``root/experts``."""
    size: int
    crc32c: int
    sha256: str
    status: str
    """'active' (served), 'quarantined' (its file is missing or damaged; never served) or 'pruned'."""
    origin: str
    """'direct' (:meth:`ModelZoo.add_expert`) or 'admitted' (:meth:`ModelZoo.propose`)."""
    accuracy_gain: Optional[float]
    status_reason: Optional[str]
    status_window: Optional[int]
    """The window passed to :meth:`ModelZoo.prune` for a pruned expert."""


@dataclass(frozen=True)
class QueuedModel:
    """A promising model waiting in the admission queue of its task."""

    id: int
    task: str
    tag: str
    device: str
    window: int
    created: float
    accuracy_gain: float
    file: str


@dataclass(frozen=True)
class Admission:
    """What :meth:`ModelZoo.propose` did with a retrained model."""

    promising: bool
    """Whether it beat the candidates by ``alpha`` (otherwise nothing was stored)."""
    queue_id: Optional[int]
    """Its admission-queue entry (None when not promising)."""
    admitted: tuple[ExpertInfo, ...]
    """The experts this call added to the zoo: the whole batch of its task when the queue reached ``gamma``."""


@dataclass(frozen=True)
class TrainingWindow:
    """A device's model-update window that experts were trained on (times in seconds of its video, if known)."""

    device: str
    window: int
    start_s: Optional[float]
    end_s: Optional[float]
    frames: Optional[int]


@dataclass(frozen=True)
class ZooAccuracy:
    """Stored accuracy of experts on sample sets, laid out as :class:`edgert.recl.gating.AccuracyTable` is (rows:
    samples, columns: experts), so the gating network's table is one step away: ``accuracy[i, j]`` is expert
    ``expert_ids[j]`` on ``samples[i]`` (float32 ``[S, E]`` in [0, 1], NaN where not measured)."""

    samples: tuple[str, ...]
    expert_ids: tuple[int, ...]
    accuracy: np.ndarray


_SCHEMA = """
CREATE TABLE IF NOT EXISTS training_windows (
    device TEXT NOT NULL, window_no INTEGER NOT NULL, start_s REAL, end_s REAL, frames INTEGER,
    PRIMARY KEY (device, window_no));
CREATE TABLE IF NOT EXISTS experts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL, tag TEXT NOT NULL, model_id BLOB NOT NULL, manifest BLOB NOT NULL, created REAL NOT NULL,
    device TEXT NOT NULL, window_no INTEGER NOT NULL,
    file TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, crc32c INTEGER NOT NULL, sha256 TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'quarantined', 'pruned')),
    status_reason TEXT, status_time REAL, status_window INTEGER,
    origin TEXT NOT NULL CHECK (origin IN ('direct', 'admitted')), accuracy_gain REAL,
    joined_selection INTEGER NOT NULL,
    FOREIGN KEY (device, window_no) REFERENCES training_windows (device, window_no));
CREATE INDEX IF NOT EXISTS experts_by_task ON experts (task, status);
CREATE TABLE IF NOT EXISTS admission_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL, tag TEXT NOT NULL, model_id BLOB NOT NULL, manifest BLOB NOT NULL, created REAL NOT NULL,
    device TEXT NOT NULL, window_no INTEGER NOT NULL,
    file TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, crc32c INTEGER NOT NULL, sha256 TEXT NOT NULL,
    accuracy_gain REAL NOT NULL,
    FOREIGN KEY (device, window_no) REFERENCES training_windows (device, window_no));
CREATE TABLE IF NOT EXISTS selections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL, window_no INTEGER NOT NULL, device TEXT NOT NULL,
    chosen INTEGER NOT NULL REFERENCES experts (id), candidates TEXT NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS selections_by_task ON selections (task, id);
CREATE TABLE IF NOT EXISTS accuracy (
    expert_id INTEGER NOT NULL REFERENCES experts (id), sample_key TEXT NOT NULL, accuracy REAL NOT NULL,
    source TEXT NOT NULL, time REAL NOT NULL,
    PRIMARY KEY (expert_id, sample_key));
"""

_STORED = ("task", "tag", "model_id", "manifest", "created", "device", "window_no", "file", "size", "crc32c",
           "sha256")


@dataclass(frozen=True)
class _Snapshot:
    """A model encoded and written to its file, not yet named by any row."""

    task: str
    tag: str
    manifest: Manifest
    device: str
    window: int
    created: float
    file: str
    size: int
    crc32c: int
    sha256: str

    def values(self) -> tuple[Any, ...]:
        return (self.task, self.tag, self.manifest.model_id, self.manifest.to_bytes(), self.created, self.device,
                self.window, self.file, self.size, self.crc32c, self.sha256)


def _remove_file(path: Path) -> None:
    """Deletes a weights file whose row no longer names it (a missing file is fine: recovery may have won)."""
    path.unlink(missing_ok=True)


def _as_weights(model: ModelLike, tag: str) -> tuple[Manifest, dict[str, np.ndarray]]:
    if isinstance(model, nn.Module):
        return module_manifest(model, tag=tag), module_weights(model)
    weights = {}
    for name, value in model.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        weights[str(name)] = np.asarray(value, dtype=np.float32)
    if not weights:
        raise ValueError("model: expected a module or a non-empty mapping of parameter name -> array")
    draft = Manifest.from_state_dict(weights, bytes(MODEL_ID_BYTES), dtype="float32")
    return Manifest.from_state_dict(weights, model_id_for(draft.table_bytes(), tag), dtype="float32"), weights


def _check_label(what: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}: expected a non-empty string, got {value!r}")
    return value


class ModelZoo:
    """The persistent expert zoo of RECL under ``root`` (created if missing); see the module docstring.

    One SQLite connection per object; every method is thread-safe (one lock per object). Several objects or
    processes may open the same root: the first opener recovers it, the others share it. Use as a context
    manager or call :meth:`close`.

    Raises:
        ZooError: the database was written by a newer schema.
    """

    def __init__(self, root: Union[str, "os.PathLike[str]"], config: ZooConfig = ZooConfig()) -> None:
        self.root = Path(root)
        self.config = config
        self.weights_dir = self.root / WEIGHTS_DIR
        self.db_path = self.root / DB_NAME
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._lock_fd: Optional[int] = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        self._conn: Optional[sqlite3.Connection] = None
        try:
            exclusive = self._try_exclusive()
            self._conn = self._connect()
            if exclusive:
                self._remove_orphans()
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            else:
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # waits while another opener recovers
            if config.verify_on_open:
                self._verify_all()
        except BaseException:
            self.close()
            raise

    # ---- lifecycle ---------------------------------------------------------------------------
    def _try_exclusive(self) -> bool:
        assert self._lock_fd is not None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=self.config.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a commit is durable before the call returns
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ZooError(f"{self.db_path}: schema version {version}, this edgert reads up to "
                                   f"{SCHEMA_VERSION}")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Closes the database and releases the zoo's lock (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def __enter__(self) -> "ModelZoo":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the object's lock (IMMEDIATE for writes: no other writer in between)."""
        with self._lock:
            if self._conn is None:
                raise ZooError(f"the zoo at {self.root} is closed")
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ---- recovery ----------------------------------------------------------------------------
    def _remove_orphans(self) -> list[str]:
        """Deletes every file in ``experts/`` no active/quarantined expert and no queue entry names (called with
        the exclusive lock held, so no other process is between a file write and its commit)."""
        with self._tx(write=False) as conn:
            kept = {r[0] for r in conn.execute("SELECT file FROM experts WHERE status != 'pruned'")}
            kept |= {r[0] for r in conn.execute("SELECT file FROM admission_queue")}
        removed = []
        for entry in self.weights_dir.iterdir():
            if entry.name not in kept and (entry.is_file() or entry.is_symlink()):
                _remove_file(entry)
                removed.append(entry.name)
        if removed:
            fsync_dir(self.weights_dir)
        return removed

    def _file_problem(self, row: sqlite3.Row) -> Optional[str]:
        """Why ``row``'s file cannot be served (None when it checks out)."""
        try:
            data = (self.weights_dir / row["file"]).read_bytes()
        except FileNotFoundError:
            return f"weights file {row['file']} is missing"
        except OSError as exc:
            return f"weights file {row['file']} is unreadable: {exc}"
        return self._data_problem(row, data)

    @staticmethod
    def _data_problem(row: sqlite3.Row, data: bytes) -> Optional[str]:
        if len(data) != row["size"]:
            return f"weights file {row['file']} holds {len(data)} bytes, expected {row['size']}"
        if crc32c(data) != row["crc32c"] or hashlib.sha256(data).hexdigest() != row["sha256"]:
            return f"weights file {row['file']} fails its checksum"
        return None

    def _verify_all(self) -> None:
        with self._tx(write=False) as conn:
            experts = conn.execute("SELECT id, file, size, crc32c, sha256 FROM experts WHERE status = 'active'")
            queued = conn.execute("SELECT id, file, size, crc32c, sha256 FROM admission_queue")
            experts_rows, queued_rows = experts.fetchall(), queued.fetchall()
        for row in experts_rows:
            problem = self._file_problem(row)
            if problem is not None:
                self._quarantine(row["id"], problem)
        dropped = []
        for row in queued_rows:
            if self._file_problem(row) is not None:
                with self._tx() as conn:
                    conn.execute("DELETE FROM admission_queue WHERE id = ?", (row["id"],))
                dropped.append(row["file"])
        for name in dropped:
            _remove_file(self.weights_dir / name)

    def _quarantine(self, expert_id: int, reason: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute("UPDATE experts SET status = 'quarantined', status_reason = ?, status_time = ? "
                               "WHERE id = ? AND status = 'active'", (reason, time.time(), expert_id))
            return cur.rowcount == 1

    def quarantine(self, expert_id: int, reason: str) -> None:
        """Takes an active expert out of service for good (e.g. the safety checker found it harmful); its file
        is kept for inspection.

        Raises:
            ZooError: no such expert, or it is not active.
        """
        self.expert(expert_id)
        if not self._quarantine(expert_id, reason):
            raise ZooError(f"expert {expert_id} is not active")

    # ---- storing -----------------------------------------------------------------------------
    def _write_snapshot(self, model: ModelLike, task: str, tag: str, device: str, window: int) -> _Snapshot:
        """Encodes ``model`` as a full-snapshot packet and writes it durably (no row names it yet)."""
        for what, label in (("task", task), ("tag", tag), ("device", device)):
            _check_label(what, label)
        manifest, weights = _as_weights(model, tag)
        data = encode_snapshot(manifest, STORED_VERSION, weights, value_coding=self.config.value_coding,
                               max_format=self.config.max_format).data
        name = secrets.token_hex(12) + SNAPSHOT_SUFFIX
        write_bytes_atomic(self.weights_dir / name, data)
        return _Snapshot(task, tag, manifest, device, int(window), time.time(), name, len(data), crc32c(data),
                         hashlib.sha256(data).hexdigest())

    @contextmanager
    def _naming(self, snap: _Snapshot) -> Iterator[sqlite3.Connection]:
        """The transaction that commits the row naming ``snap``'s file; if it fails, the file goes too (unless a
        row names it after all, e.g. an interrupt just after the commit; the next open removes what is left)."""
        try:
            with self._tx() as conn:
                yield conn
        except BaseException:
            try:
                with self._tx(write=False) as conn:
                    named = conn.execute("SELECT 1 FROM experts WHERE file = ? UNION ALL SELECT 1 FROM "
                                         "admission_queue WHERE file = ?", (snap.file, snap.file)).fetchone()
            except Exception:
                named = True
            if named is None:
                _remove_file(self.weights_dir / snap.file)
            raise

    @staticmethod
    def _ensure_window(conn: sqlite3.Connection, device: str, window: int) -> None:
        conn.execute("INSERT OR IGNORE INTO training_windows (device, window_no) VALUES (?, ?)", (device, window))

    @staticmethod
    def _insert_expert(conn: sqlite3.Connection, values: Sequence[Any], origin: str,
                       accuracy_gain: Optional[float]) -> int:
        joined = conn.execute("SELECT COALESCE(MAX(id), 0) FROM selections").fetchone()[0]
        cur = conn.execute(
            f"INSERT INTO experts ({', '.join(_STORED)}, status, origin, accuracy_gain, joined_selection) "
            f"VALUES ({', '.join('?' * len(_STORED))}, 'active', ?, ?, ?)",
            (*values, origin, accuracy_gain, joined))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_expert(self, model: ModelLike, *, task: str, tag: str, device: str, window: int) -> ExpertInfo:
        """Stores ``model`` (a module's parameters, or float arrays by parameter name) as a new active expert,
        bypassing admission (seeding the zoo). ``tag`` names the architecture; ``device`` and ``window`` are the
        training window its frames came from.

        The snapshot file is durable before the row naming it commits; if the process dies in between, the
        next open deletes the file.
        """
        snap = self._write_snapshot(model, task, tag, device, window)
        with self._naming(snap) as conn:
            self._ensure_window(conn, snap.device, snap.window)
            expert_id = self._insert_expert(conn, snap.values(), "direct", None)
        return self.expert(expert_id)

    def propose(self, model: ModelLike, accuracy_gain: float, *, task: str, tag: str, device: str,
                window: int) -> Admission:
        """The admission rule for a retrained ``model``.

        ``accuracy_gain``: the model's accuracy on the window's samples minus the best zoo candidate's (both as
        measured by the safety checker). Below ``config.alpha`` the model is not promising and nothing is
        stored. Otherwise it joins its task's admission queue; when the queue holds ``config.gamma`` models, all
        of them become active experts in the same transaction that queued this one.
        """
        gain = float(accuracy_gain)
        if not math.isfinite(gain):
            raise ValueError(f"accuracy_gain: expected a finite number, got {accuracy_gain}")
        if gain < self.config.alpha:
            return Admission(False, None, ())
        snap = self._write_snapshot(model, task, tag, device, window)
        with self._naming(snap) as conn:
            self._ensure_window(conn, snap.device, snap.window)
            cur = conn.execute(f"INSERT INTO admission_queue ({', '.join(_STORED)}, accuracy_gain) "
                               f"VALUES ({', '.join('?' * len(_STORED))}, ?)", (*snap.values(), gain))
            queue_id = cur.lastrowid
            admitted = self._flush(conn, snap.task, self.config.gamma)
        return Admission(True, queue_id, tuple(self.expert(i) for i in admitted))

    @staticmethod
    def _flush(conn: sqlite3.Connection, task: str, at_least: int) -> list[int]:
        rows = conn.execute(f"SELECT id, {', '.join(_STORED)}, accuracy_gain FROM admission_queue WHERE task = ? "
                            "ORDER BY id", (task,)).fetchall()
        if not rows or len(rows) < at_least:
            return []
        ids = [ModelZoo._insert_expert(conn, [r[c] for c in _STORED], "admitted", r["accuracy_gain"]) for r in rows]
        conn.execute("DELETE FROM admission_queue WHERE task = ?", (task,))
        return ids

    def flush_admissions(self, task: Optional[str] = None) -> list[ExpertInfo]:
        """Admits every queued model of ``task`` (None: of every task) now, short of ``gamma`` (e.g. at the end
        of a run); returns the new experts."""
        with self._tx() as conn:
            tasks = [task] if task is not None else [r[0] for r in conn.execute(
                "SELECT DISTINCT task FROM admission_queue ORDER BY task")]
            ids = [i for t in tasks for i in self._flush(conn, t, 1)]
        return [self.expert(i) for i in ids]

    def queued(self, task: Optional[str] = None) -> list[QueuedModel]:
        """The admission queue (of ``task``, or of every task), oldest first."""
        with self._tx(write=False) as conn:
            rows = conn.execute("SELECT * FROM admission_queue WHERE ? IS NULL OR task = ? ORDER BY id",
                                (task, task)).fetchall()
        return [QueuedModel(r["id"], r["task"], r["tag"], r["device"], r["window_no"], r["created"],
                            r["accuracy_gain"], r["file"]) for r in rows]

    # ---- reading -----------------------------------------------------------------------------
    @staticmethod
    def _info(r: sqlite3.Row) -> ExpertInfo:
        return ExpertInfo(r["id"], r["task"], r["tag"], bytes(r["model_id"]), r["device"], r["window_no"],
                          r["created"], r["file"], r["size"], r["crc32c"], r["sha256"], r["status"], r["origin"],
                          r["accuracy_gain"], r["status_reason"], r["status_window"])

    def expert(self, expert_id: int) -> ExpertInfo:
        """The expert ``expert_id``, whatever its status.

        Raises:
            ZooError: no such expert.
        """
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT * FROM experts WHERE id = ?", (int(expert_id),)).fetchone()
        if row is None:
            raise ZooError(f"no expert {expert_id} in the zoo at {self.root}")
        return self._info(row)

    def experts(self, task: Optional[str] = None, active_only: bool = True) -> list[ExpertInfo]:
        """The experts (of ``task``, or of every task) by id; only the active ones (those that are served)
        unless ``active_only`` is False."""
        with self._tx(write=False) as conn:
            rows = conn.execute("SELECT * FROM experts WHERE (? IS NULL OR task = ?) AND (? = 0 OR status = 'active')"
                                " ORDER BY id", (task, task, int(active_only))).fetchall()
        return [self._info(r) for r in rows]

    def manifest(self, expert_id: int) -> Manifest:
        """The manifest (model id, tensor table) ``expert_id``'s snapshot was encoded for."""
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT manifest FROM experts WHERE id = ?", (int(expert_id),)).fetchone()
        if row is None:
            raise ZooError(f"no expert {expert_id} in the zoo at {self.root}")
        return Manifest.from_bytes(bytes(row[0]))

    def _served(self, expert_id: int) -> tuple[sqlite3.Row, bytes]:
        """The row and verified snapshot bytes of an active expert; quarantines it if its file is bad."""
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT * FROM experts WHERE id = ?", (int(expert_id),)).fetchone()
        if row is None:
            raise ZooError(f"no expert {expert_id} in the zoo at {self.root}")
        if row["status"] != "active":
            reason = f" ({row['status_reason']})" if row["status_reason"] else ""
            raise ZooError(f"expert {expert_id} is {row['status']}{reason}; only active experts are served")
        try:
            data = (self.weights_dir / row["file"]).read_bytes()
            problem = self._data_problem(row, data)
        except OSError as exc:
            data, problem = b"", f"weights file {row['file']} is missing or unreadable: {exc}"
        if problem is not None:
            if not self._quarantine(row["id"], problem):  # pruned or quarantined meanwhile (its file went)
                raise ZooError(f"expert {expert_id} is no longer active")
            raise ZooError(f"expert {expert_id} quarantined: {problem}")
        return row, data

    def snapshot_bytes(self, expert_id: int, target_version: Optional[int] = None, base_version: int = 0) -> bytes:
        """The expert as a full-snapshot update packet, checked against its checksum first.

        ``target_version`` None returns the stored bytes (versions 0 -> 1); otherwise the snapshot is encoded
        again for ``base_version`` -> ``target_version`` (a device's next version) with the same values.

        Raises:
            ZooError: unknown or non-active expert, or a damaged file (the expert is quarantined).
        """
        row, data = self._served(expert_id)
        if target_version is None:
            return data
        manifest = Manifest.from_bytes(bytes(row["manifest"]))
        weights = self._decode(row, manifest, data)
        return encode_snapshot(manifest, target_version, weights, value_coding=self.config.value_coding,
                               base_version=base_version, max_format=self.config.max_format).data

    def _decode(self, row: sqlite3.Row, manifest: Manifest, data: bytes) -> dict[str, np.ndarray]:
        try:
            slot = _edgert.Slot(manifest.to_bytes())
            slot.apply(data)  # libedgert's decoder: the device's own checks
            buffer, _ = slot.weights()
        except (_edgert.EdgertError, ValueError) as exc:
            problem = f"snapshot {row['file']} does not decode: {exc}"
            self._quarantine(row["id"], problem)
            raise ZooError(f"expert {row['id']} quarantined: {problem}") from exc
        return {name: np.array(t) for name, t in buffer_tensors(manifest, buffer).items()}

    def weights(self, expert_id: int) -> dict[str, np.ndarray]:
        """The expert's parameters by name (writable float32 arrays, the module's shapes), decoded from its
        verified snapshot by libedgert.

        Raises:
            ZooError: unknown or non-active expert, or a missing/damaged file (the expert is quarantined and
                never served again).
        """
        row, data = self._served(expert_id)
        return self._decode(row, Manifest.from_bytes(bytes(row["manifest"])), data)

    def load(self, expert_id: int, into: nn.Module) -> nn.Module:
        """Copies the expert's parameters into ``into`` (same architecture) and returns it.

        Raises:
            ZooError: as :meth:`weights`.
            ValueError: ``into``'s parameters do not match the expert's tensors (nothing is written).
        """
        load_weights(into, self.weights(expert_id))
        return into

    # ---- windows, selections, accuracy --------------------------------------------------------
    def record_window(self, device: str, window: int, *, start_s: Optional[float] = None,
                      end_s: Optional[float] = None, frames: Optional[int] = None) -> TrainingWindow:
        """Records (or completes) what is known of a device's training window; fields left None keep their
        stored value."""
        with self._tx() as conn:
            self._ensure_window(conn, _check_label("device", device), int(window))
            conn.execute("UPDATE training_windows SET start_s = COALESCE(?, start_s), end_s = COALESCE(?, end_s), "
                         "frames = COALESCE(?, frames) WHERE device = ? AND window_no = ?",
                         (start_s, end_s, frames, device, int(window)))
        found = self.training_window(device, window)
        assert found is not None
        return found

    def training_window(self, device: str, window: int) -> Optional[TrainingWindow]:
        """The stored training window (None if no expert or record names it)."""
        with self._tx(write=False) as conn:
            r = conn.execute("SELECT * FROM training_windows WHERE device = ? AND window_no = ?",
                             (device, int(window))).fetchone()
        return None if r is None else TrainingWindow(r["device"], r["window_no"], r["start_s"], r["end_s"],
                                                     r["frames"])

    def record_selection(self, window: int, device: str, chosen: int, candidates: Sequence[int] = ()) -> int:
        """Records that ``chosen`` was picked for ``device`` in ``window`` among ``candidates`` (the gating
        network's shortlist; empty means ``[chosen]``); returns the selection's id. The task is ``chosen``'s.

        Raises:
            ZooError: an unknown expert.
            ValueError: ``chosen`` is not among ``candidates``, or a candidate belongs to another task.
        """
        ids = [int(c) for c in candidates] or [int(chosen)]
        if int(chosen) not in ids:
            raise ValueError(f"chosen expert {chosen} is not among the candidates {ids}")
        with self._tx() as conn:
            tasks = dict(conn.execute(f"SELECT id, task FROM experts WHERE id IN ({', '.join('?' * len(ids))})",
                                      ids).fetchall())
            missing = sorted(set(ids) - set(tasks))
            if missing:
                raise ZooError(f"no experts {missing} in the zoo at {self.root}")
            task = tasks[int(chosen)]
            others = sorted(i for i in ids if tasks[i] != task)
            if others:
                raise ValueError(f"candidates {others} are not experts of task {task!r}")
            cur = conn.execute("INSERT INTO selections (task, window_no, device, chosen, candidates, time) "
                               "VALUES (?, ?, ?, ?, ?, ?)", (task, int(window), _check_label("device", device),
                                                             int(chosen), json.dumps(ids), time.time()))
            assert cur.lastrowid is not None
            return cur.lastrowid

    def last_window(self) -> Optional[int]:
        """The highest window number a training window or a selection of the zoo names (None: none yet).

        A controller reopening a zoo numbers its windows after this one, so that the accuracy table's sample keys
        (``device/window``) and the provenance of new experts never collide with those of an earlier run.
        """
        with self._tx(write=False) as conn:
            found = [conn.execute(f"SELECT MAX(window_no) FROM {table}").fetchone()[0]
                     for table in ("training_windows", "selections")]
        values = [int(v) for v in found if v is not None]
        return max(values) if values else None

    def selection_counts(self, task: str, last: Optional[int] = None) -> dict[int, int]:
        """How often each expert of ``task`` was chosen in its last ``last`` selections (default ``config.q``);
        experts never chosen are absent."""
        with self._tx(write=False) as conn:
            rows = conn.execute("SELECT chosen, COUNT(*) FROM (SELECT chosen FROM selections WHERE task = ? "
                                "ORDER BY id DESC LIMIT ?) GROUP BY chosen", (task, last or self.config.q))
            return {int(r[0]): int(r[1]) for r in rows}

    def record_accuracy(self, expert_id: int, sample_key: str, accuracy: float, *, source: str = "safety") -> None:
        """Stores (or replaces) ``expert_id``'s accuracy in [0, 1] on the sample ``sample_key`` (a frame, or a set
        of frames such as a device's window); ``source``: who measured it ('safety' checker, 'gating' labelling).
        """
        value = float(accuracy)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"accuracy: expected a number in [0, 1], got {accuracy}")
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM experts WHERE id = ?", (int(expert_id),)).fetchone() is None:
                raise ZooError(f"no expert {expert_id} in the zoo at {self.root}")
            conn.execute("INSERT OR REPLACE INTO accuracy (expert_id, sample_key, accuracy, source, time) "
                         "VALUES (?, ?, ?, ?, ?)", (int(expert_id), _check_label("sample_key", sample_key), value,
                                                    _check_label("source", source), time.time()))

    def accuracy_table(self, task: Optional[str] = None, samples: Optional[Sequence[str]] = None,
                       active_only: bool = True) -> ZooAccuracy:
        """The stored sample x expert accuracy matrix (the gating network's training labels).

        Columns: the experts of ``task`` (or all) by id, active ones only unless ``active_only`` is False. Rows:
        ``samples`` in the given order, or every sample measured for those experts, sorted.
        """
        experts = [e.id for e in self.experts(task, active_only)]
        with self._tx(write=False) as conn:
            rows = conn.execute("SELECT expert_id, sample_key, accuracy FROM accuracy").fetchall()
        col_of = {e: j for j, e in enumerate(experts)}
        rows = [r for r in rows if r[0] in col_of]
        keys = list(samples) if samples is not None else sorted({r[1] for r in rows})
        row_of = {k: i for i, k in enumerate(keys)}
        accuracy = np.full((len(keys), len(experts)), np.nan, dtype=np.float32)
        for expert_id, key, value in rows:
            if key in row_of:
                accuracy[row_of[key], col_of[expert_id]] = value
        return ZooAccuracy(tuple(keys), tuple(experts), accuracy)

    # ---- pruning -----------------------------------------------------------------------------
    def prune(self, window: int) -> list[int]:
        """Prunes, in every task, the active experts chosen fewer than ``config.eta`` times in the task's last
        ``config.q`` selections, and returns their ids (ascending). ``window`` (the controller's current window)
        is recorded with them.

        Only experts that existed through all of those ``q`` selections are judged (a task with fewer selections
        prunes nothing), and a task keeps at least ``config.min_experts`` active experts (the least chosen go
        first). Rows are marked in one transaction; the files are deleted after it commits (if the process dies
        in between, the next open deletes them).
        """
        cfg = self.config
        with self._tx() as conn:
            victims: list[tuple[int, str]] = []
            for (task,) in conn.execute("SELECT DISTINCT task FROM experts WHERE status = 'active'").fetchall():
                recent = conn.execute("SELECT id, chosen FROM selections WHERE task = ? ORDER BY id DESC LIMIT ?",
                                      (task, cfg.q)).fetchall()
                if len(recent) < cfg.q:
                    continue
                oldest = recent[-1][0]
                counts: dict[int, int] = {}
                for _, chosen in recent:
                    counts[chosen] = counts.get(chosen, 0) + 1
                active = conn.execute("SELECT id, file, joined_selection FROM experts WHERE task = ? AND "
                                      "status = 'active'", (task,)).fetchall()
                judged = sorted(((counts.get(r["id"], 0), r["id"], r["file"]) for r in active
                                 if r["joined_selection"] < oldest and counts.get(r["id"], 0) < cfg.eta))
                allowed = max(0, len(active) - cfg.min_experts)
                victims += [(expert_id, name) for _, expert_id, name in judged[:allowed]]
            now = time.time()
            for expert_id, _ in victims:
                conn.execute("UPDATE experts SET status = 'pruned', status_time = ?, status_window = ?, "
                             "status_reason = ? WHERE id = ?",
                             (now, int(window), f"chosen < {cfg.eta} times in the last {cfg.q} selections", expert_id))
        for _, name in victims:
            _remove_file(self.weights_dir / name)
        if victims:
            fsync_dir(self.weights_dir)
        return sorted(expert_id for expert_id, _ in victims)


__all__ = ["Admission", "ExpertInfo", "ModelZoo", "QueuedModel", "TrainingWindow", "ZooAccuracy", "ZooConfig",
           "ZooError"]
