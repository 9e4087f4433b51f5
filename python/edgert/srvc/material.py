"""Long high-resolution test material: slow pan/zoom sequences rendered from real photographs.

No minutes-long >= 720p camera footage installs offline, so ``edgert srvc eval --clip mate:WxH`` renders
one from the photos of Debian's ``mate-backgrounds`` package (2560x1600 - 3840x2160 nature photos):
each shot shows one photo for ``shot_s`` seconds while a 16:9 window glides across it and zooms in
slowly (eased, sub-pixel positions, Lanczos resampling with PIL), and shots follow each other by
hard cuts. The rendering is deterministic: the same arguments give the same frames, byte for byte.
What it is, exactly: real photographic texture (grass, wood, insects, water) under smooth global
motion; no object motion, noise or motion blur of a real camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

MATE_DIR = Path("/usr/share/backgrounds/mate")
# The package's photos with at least 2560 pixels of width (so a 1920-wide window is downscaled, never upscaled).
PHOTOS = ("nature/Wood.jpg", "nature/LadyBird.jpg", "nature/Garden.jpg", "nature/TwoWings.jpg",
          "nature/YellowFlower.jpg", "nature/Aqua.jpg", "abstract/Elephants_3840x2160.jpg")
INSTALL_HINT = "apt-get install mate-backgrounds (Debian package, ~46 MB of photos)"


@dataclass(frozen=True)
class PanZoom:
    """One rendered clip: output size, length, frame rate, photos in order, and the motion per shot."""

    width: int = 1280
    height: int = 720
    seconds: float = 60.0
    fps: float = 25.0
    shot_s: float = 15.0  # one photo per shot; hard cut to the next
    photos: tuple[str, ...] = PHOTOS
    zoom_start: float = 0.75  # window width as a fraction of the photo's at the shot's first frame
    zoom_end: float = 0.55  # ... and at its last (zooming in)
    root: Optional[str] = None  # default MATE_DIR

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        if self.width <= 0 or self.height <= 0 or self.seconds <= 0 or self.fps <= 0 or self.shot_s <= 0:
            raise ValueError(f"width, height, seconds, fps and shot_s must be > 0, got {self.width}, {self.height}, "
                             f"{self.seconds}, {self.fps}, {self.shot_s}")
        if not (0 < self.zoom_end <= 1 and 0 < self.zoom_start <= 1) or not self.photos:
            raise ValueError(f"zoom fractions in (0, 1] and at least one photo required, got {self.zoom_start}, "
                             f"{self.zoom_end}, {self.photos}")

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))


def parse_clip(name: str) -> Optional[tuple[int, int]]:
    """``"mate:1280x720"`` -> (1280, 720); ``"mate"`` -> (1280, 720); any other name -> None."""
    if name == "mate":
        return 1280, 720
    if not name.startswith("mate:"):
        return None
    try:
        w, h = (int(v) for v in name[5:].lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"clip {name!r}: expected mate:WIDTHxHEIGHT, e.g. mate:1920x1080") from exc
    return w, h


def photo_paths(spec: PanZoom) -> list[Path]:
    """The photos' paths; raises FileNotFoundError with the install command when the package is missing."""
    root = Path(spec.root) if spec.root else MATE_DIR
    paths = [root / p for p in spec.photos]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"pan/zoom material needs the mate-backgrounds photos; missing {missing[0]}"
                                f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}: {INSTALL_HINT}")
    return paths


def _ease(t: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * t)


def render(spec: PanZoom, start_s: float = 0.0) -> np.ndarray:
    """The clip as uint8 ``[N, height, width, 3]`` (frames from ``start_s`` on, ``spec.seconds`` long)."""
    from PIL import Image  # noqa: PLC0415 - Pillow comes with matplotlib / scikit-image

    spec.validate()
    paths = photo_paths(spec)
    aspect = spec.width / spec.height
    first = int(round(start_s * spec.fps))
    out = np.empty((spec.frames, spec.height, spec.width, 3), dtype=np.uint8)
    per_shot = max(1, int(round(spec.shot_s * spec.fps)))
    image, shot_loaded = None, -1
    for i in range(spec.frames):
        frame = first + i
        shot, pos = divmod(frame, per_shot)
        if shot != shot_loaded:
            image = Image.open(paths[shot % len(paths)]).convert("RGB")
            shot_loaded = shot
        assert image is not None
        iw, ih = image.size
        t = _ease(pos / max(1, per_shot - 1))
        frac = spec.zoom_start + (spec.zoom_end - spec.zoom_start) * t
        ww = min(iw * frac, ih * aspect * frac)
        wh = ww / aspect
        # the window's centre travels along a diagonal, alternating direction from shot to shot
        sx, ex = (0.0, 1.0) if shot % 2 == 0 else (1.0, 0.0)
        cx = ww / 2 + (iw - ww) * (sx + (ex - sx) * t)
        cy = wh / 2 + (ih - wh) * (0.25 + 0.5 * t)
        box = (cx - ww / 2, cy - wh / 2, cx + ww / 2, cy + wh / 2)
        out[i] = np.asarray(image.resize((spec.width, spec.height), Image.Resampling.LANCZOS, box=box))
    return out
