"""edgert.data: bundled clips and packaged models, the user cache, wheel extraction, and `edgert data`."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from conftest import needs_mediapipe_model
from edgert import data
from edgert.cli import main


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path / "a"))
    assert data.cache_dir() == tmp_path / "a"
    assert data.cache_dir(tmp_path / "b") == tmp_path / "b"
    monkeypatch.delenv("EDGERT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "edgert"


@needs_mediapipe_model
def test_model_copied_into_cache_and_repaired(tmp_path: Path) -> None:
    path = data.model_path("mediapipe-selfie", root=tmp_path)
    assert path == tmp_path / "models" / "mediapipe-selfie" / "selfie_segmentation.tflite"
    assert data.sha256_file(path) == data.MODELS["mediapipe-selfie"].sha256
    path.write_bytes(b"damaged")  # a corrupt cache copy is replaced from the package
    assert data.model_path("mediapipe-selfie", root=tmp_path) == path
    assert data.sha256_file(path) == data.MODELS["mediapipe-selfie"].sha256
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache folder should be")
    fallback = data.model_path("mediapipe-selfie", root=blocked)  # unwritable cache: the package's own file
    assert fallback.is_file() and not str(fallback).startswith(str(blocked))


@needs_mediapipe_model
def test_install_from_wheel(tmp_path: Path) -> None:
    model = data.MODELS["mediapipe-selfie-landscape"]
    payload = data.model_path(model.name).read_bytes()
    wheel = tmp_path / "mediapipe-0.10.21-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"mediapipe/{model.relpath}", payload)
    root = tmp_path / "cache"
    out = data.install_from_wheel(model.name, wheel, root=root)
    assert out.read_bytes() == payload
    # wrong contents, missing member, not a zip, no file: clear errors, cache untouched
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(f"mediapipe/{model.relpath}", b"not the model")
    with pytest.raises(ValueError, match="SHA-256"):
        data.install_from_wheel(model.name, bad, root=root)
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("other.txt", b"")
    with pytest.raises(ValueError, match="does not contain"):
        data.install_from_wheel(model.name, empty, root=root)
    text = tmp_path / "text.whl"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a zip"):
        data.install_from_wheel(model.name, text, root=root)
    with pytest.raises(FileNotFoundError):
        data.install_from_wheel(model.name, tmp_path / "absent.whl", root=root)
    assert out.read_bytes() == payload
    with pytest.raises(KeyError, match="unknown model"):
        data.install_from_wheel("nope", wheel, root=root)


def test_unknown_names() -> None:
    with pytest.raises(KeyError, match="unknown model"):
        data.model_path("nope")
    with pytest.raises(KeyError, match="unknown clip or model"):
        data.verify(["nope"])
    with pytest.raises(FileNotFoundError, match="neither a bundled clip"):
        data.clip_path("nope.mp4")


def test_cli_list_path_verify(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in list(data.CLIPS) + list(data.MODELS):
        assert name in out
    assert main(["data", "path", "nope"]) == 2
    assert "unknown name" in capsys.readouterr().err
    installed = [name for name, path in data.available().items() if path is not None]
    if installed:
        assert main(["data", "path", installed[0]]) == 0
        assert Path(capsys.readouterr().out.strip()).is_file()
        assert main(["data", "verify", installed[0]]) == 0
        assert capsys.readouterr().out.startswith("ok")
    assert main(["data", "verify", "nope"]) == 2
