"""The pan/zoom material renderer: deterministic, moving, cut per shot; a clear message without the photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgert.srvc.material import PanZoom, parse_clip, render


def _photos(folder: Path) -> tuple[str, ...]:
    from PIL import Image

    names = []
    for i in range(2):  # smooth texture, a different colour per photo
        yy, xx = np.mgrid[0:300, 0:400]
        img = np.stack([128 + 100 * np.sin(xx / 17.0), 128 + 100 * np.cos(yy / 13.0), np.full_like(xx, 30 + 180 * i)],
                       -1)
        name = f"p{i}.png"
        Image.fromarray(img.astype(np.uint8)).save(folder / name)
        names.append(name)
    return tuple(names)


def test_render_is_deterministic_moves_and_cuts(tmp_path: Path) -> None:
    spec = PanZoom(width=64, height=36, seconds=2.0, fps=25.0, shot_s=1.0, photos=_photos(tmp_path),
                   root=str(tmp_path))
    a, b = render(spec), render(spec)
    assert a.shape == (50, 36, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    diffs = [float(np.abs(a[i + 1].astype(int) - a[i]).mean()) for i in range(49)]
    assert all(d > 0 for d in diffs)  # the window moves every frame
    assert diffs[24] > 3 * max(diffs[:24] + diffs[25:])  # frame 25 starts the next photo: a cut
    later = render(spec, start_s=1.0)
    assert np.array_equal(later[:25], a[25:])  # start_s is a frame offset into the same sequence


def test_parse_clip_and_missing_photos(tmp_path: Path) -> None:
    assert parse_clip("mate") == (1280, 720) and parse_clip("mate:1920x1080") == (1920, 1080)
    assert parse_clip("bikes") is None
    with pytest.raises(ValueError, match="mate:WIDTHxHEIGHT"):
        parse_clip("mate:big")
    with pytest.raises(FileNotFoundError, match="apt-get install mate-backgrounds"):
        render(PanZoom(width=64, height=36, seconds=1.0, root=str(tmp_path)))
