"""Figures for run folders: matplotlib without a display, saved atomically and closed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed); raises ImportError with the fix."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install matplotlib (extra [dev])") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Union[str, Path], dpi: int = 120) -> Path:
    """Saves ``fig`` to ``path`` (format from the suffix) through a temporary file, then closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        pyplot().close(fig)
    return path


__all__ = ["pyplot", "save_figure"]
