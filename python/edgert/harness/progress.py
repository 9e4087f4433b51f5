"""Progress of long jobs: a live bar with rate and ETA on a terminal, a periodic log line elsewhere.

Pretraining, SRVC training and encoding, MIMO sweeps and the AMS evaluation all report through
:func:`progress`. On an interactive terminal it draws a `rich <https://github.com/Textualize/rich>`_ bar
(count, rate, elapsed, ETA); when output goes to a file or a CI log it prints one plain line at most every
``interval_s`` seconds and one at the end, so logs show the same information without control characters.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """Counts units of work towards ``total``; :meth:`advance` as work completes."""

    def __init__(self, description: str, total: Optional[float], unit: str = "it", *,
                 stream: Optional[TextIO] = None, interval_s: float = 10.0, live: Optional[bool] = None) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0.0
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar: Any = None
        self._printed = -1.0
        self._task: Any = None
        if live is None:
            live = bool(getattr(self.stream, "isatty", lambda: False)())
        if live:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress
            except ImportError:
                live = False
            else:
                self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                         TextColumn("ETA"), TimeRemainingColumn(),
                                         console=Console(file=self.stream), transient=False)
                self._bar.start()
                self._task = self._bar.add_task(description, total=total, rate="")
        self.live = live

    def rate(self) -> float:
        """Units per second so far."""
        elapsed = time.monotonic() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> Optional[float]:
        """Seconds left at the current rate (None: unknown)."""
        r = self.rate()
        if self.total is None or r <= 0:
            return None
        return max(0.0, (self.total - self.done) / r)

    def advance(self, amount: float = 1.0, note: str = "") -> None:
        """Records ``amount`` more units done (``note``: shown next to the bar, e.g. the current item)."""
        self.done += amount
        if self._bar is not None:
            self._bar.update(self._task, advance=amount, rate=f"{self.rate():.2f} {self.unit}/s {note}".rstrip())
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            self._print(note)

    def _print(self, note: str = "") -> None:
        self._printed = self.done
        total = f"/{self.total:g}" if self.total is not None else ""
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        eta = self.eta_s()
        eta_text = f", ETA {eta:.0f} s" if eta is not None and self.done < (self.total or 0) else ""
        elapsed = time.monotonic() - self._start
        print(f"{self.description}: {self.done:g}{total} {self.unit}{pct}, {self.rate():.2f} {self.unit}/s, "
              f"{elapsed:.0f} s{eta_text}{(' ' + note) if note else ''}", file=self.stream, flush=True)

    def close(self) -> None:
        """Ends the bar (or prints the final line)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.done and self._printed != self.done:
            self._print()


@contextmanager
def progress(description: str, total: Optional[float], unit: str = "it", **kwargs: Any) -> Iterator[Progress]:
    """``with progress("pretraining", 300) as bar: ... bar.advance()``: see :class:`Progress`."""
    bar = Progress(description, total, unit, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


def track(items: Iterable[T], description: str, total: Optional[float] = None, unit: str = "it",
          **kwargs: Any) -> Iterator[T]:
    """Yields ``items`` while showing their progress (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, unit, **kwargs) as bar:
        for item in items:
            yield item
            bar.advance()


__all__ = ["Progress", "progress", "track"]
