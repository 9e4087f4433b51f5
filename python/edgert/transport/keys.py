"""Device key files: how a server process and its device processes share per-device keys.

The format is the one AMS's evaluation writes into its spec (``"keys"``): a JSON object mapping each device id
to the path of a file holding that device's raw key (16..64 random bytes, mode 0600)::

    {"cam1": "cam1.key", "cam2": "/secrets/cam2.key"}

Relative paths are resolved against the folder of the JSON file. A server reads every key
(:func:`load_keys`); a device reads its own (:func:`load_key`). :func:`write_keys` creates such a set.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Iterable, Union

PathLike = Union[str, "os.PathLike[str]"]

MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64


def check_device_id(device: object) -> str:
    """``device`` if it is a usable device id (1..64 UTF-8 bytes, no '/', not '.' or '..'): it names files
    (``<device>.key``, ``device-<device>.pem``) and travels in HELLO.

    Raises:
        ValueError: anything else, with the value.
    """
    if (not isinstance(device, str) or not device or "/" in device or device in (".", "..")
            or "\x00" in device or len(device.encode()) > 64):
        raise ValueError(f"device id: expected 1..64 bytes without '/', got {device!r}")
    return device


class KeyFileError(ValueError):
    """A keys file or key file is missing, malformed, or holds a key of the wrong length (the message says
    which file and what was expected)."""


def write_keys(folder: PathLike, devices: Iterable[str], *, nbytes: int = 32, name: str = "keys.json") -> Path:
    """Creates a fresh random key per device in ``folder`` (``<device>.key``, mode 0600) and the keys file
    ``folder/name`` naming them (relative paths); returns the keys file's path. Existing files are replaced.

    Raises:
        ValueError: no devices, an empty or path-like device id, or ``nbytes`` outside 16..64.
    """
    if not MIN_KEY_BYTES <= nbytes <= MAX_KEY_BYTES:
        raise ValueError(f"nbytes: expected {MIN_KEY_BYTES}..{MAX_KEY_BYTES}, got {nbytes}")
    ids = list(devices)
    if not ids:
        raise ValueError("devices: expected at least one device id")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    entries: dict[str, str] = {}
    for device in ids:
        check_device_id(device)
        path = root / f"{device}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(nbytes))
        path.chmod(0o600)
        entries[device] = path.name
    out = root / name
    out.write_text(json.dumps(entries, indent=2) + "\n")
    return out


def _entries(path: PathLike) -> dict[str, Path]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"keys file {str(p)!r}: cannot read it ({exc})") from exc
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) and k and isinstance(v, str) and v
                                                           for k, v in data.items()):
        raise KeyFileError(f"keys file {str(p)!r}: expected a JSON object of device id -> key file path, "
                           f"got {json.dumps(data)[:200]}")
    return {device: (p.parent / value) for device, value in data.items()}


def read_key_file(path: PathLike, device: str = "") -> bytes:
    """The raw key in ``path`` (16..64 bytes).

    Raises:
        KeyFileError: unreadable, or another length.
    """
    who = f" of device {device!r}" if device else ""
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"key file{who} {str(path)!r}: cannot read it ({exc})") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise KeyFileError(f"key file{who} {str(path)!r}: expected {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes, "
                           f"got {len(key)}")
    return key


def load_keys(path: PathLike) -> dict[str, bytes]:
    """Every device's key from the keys file ``path``, by device id.

    Raises:
        KeyFileError: see :func:`read_key_file`; also a keys file that is not a non-empty JSON object of strings.
    """
    return {device: read_key_file(file, device) for device, file in _entries(path).items()}


def load_key(path: PathLike, device: str) -> bytes:
    """``device``'s key from the keys file ``path``.

    Raises:
        KeyFileError: the device is not in it, or see :func:`load_keys`.
    """
    entries = _entries(path)
    if device not in entries:
        raise KeyFileError(f"keys file {str(path)!r}: no key for device {device!r} (it has {sorted(entries)})")
    return read_key_file(entries[device], device)


__all__ = ["MAX_KEY_BYTES", "MIN_KEY_BYTES", "KeyFileError", "check_device_id", "load_key", "load_keys",
           "read_key_file", "write_keys"]
