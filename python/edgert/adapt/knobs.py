"""Configuration knobs normalised to ``[0, 1]`` (OneAdapt's knob space).

Every knob maps a normalised value ``k`` in ``[0, 1]`` to the value the pipeline uses, oriented so that a larger
``k`` uses more resource (finer quality, higher resolution, more frames, higher sample rate). A knob with a list of
allowed values snaps to the nearest one; gradient ascent keeps the continuous ``k`` and only the applied
configuration is snapped, so small steps accumulate instead of being rounded away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

KnobVector = Union[Sequence[float], np.ndarray]
"""Normalised knob values in a :class:`KnobSpace`'s order."""


class KnobError(ValueError):
    """A knob or a knob vector that cannot be used (empty or inverted range, wrong length, not finite)."""


@dataclass(frozen=True)
class Knob:
    """One knob.

    Attributes:
        name: unique within a :class:`KnobSpace` (``"resolution"``, ``"crf"``, ``"region_3"``, ...).
        low: the value at ``k = 0`` (least resource).
        high: the value at ``k = 1`` (most resource); ``low > high`` is allowed (CRF 45 -> 18: lower CRF uses more
            bits), ``low == high`` is not (an empty range cannot be adapted).
        allowed: the discrete values the pipeline accepts (each within ``[min(low, high), max(low, high)]``), or
            None for a continuous knob.
        integer: round the mapped value to an int (a continuous integer knob, e.g. CRF).
        region: index of the picture region this knob controls (region knobs move together in one encode), or
            None for a global knob.
    """

    name: str
    low: float
    high: float
    allowed: Optional[tuple[float, ...]] = None
    integer: bool = False
    region: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.name:
            raise KnobError("knob: a name is required")
        for label, v in (("low", self.low), ("high", self.high)):
            if not math.isfinite(v):
                raise KnobError(f"knob {self.name!r}: {label} must be finite, got {v}")
        if self.low == self.high:
            raise KnobError(f"knob {self.name!r}: empty range (low == high == {self.low})")
        if self.allowed is not None:
            values = tuple(float(v) for v in self.allowed)
            if not values:
                raise KnobError(f"knob {self.name!r}: allowed values are empty")
            lo, hi = min(self.low, self.high), max(self.low, self.high)
            outside = [v for v in values if not lo <= v <= hi]
            if outside:
                raise KnobError(f"knob {self.name!r}: allowed values {outside} lie outside [{lo}, {hi}]")
            object.__setattr__(self, "allowed", tuple(sorted(set(values), key=self.normalise)))

    def normalise(self, value: float) -> float:
        """The knob's value -> ``k`` in ``[0, 1]`` (clipped)."""
        return float(min(1.0, max(0.0, (value - self.low) / (self.high - self.low))))

    def value(self, k: float) -> float:
        """``k`` -> the value applied: clipped to ``[0, 1]``, snapped to the nearest allowed value."""
        k = min(1.0, max(0.0, float(k)))
        v = self.low + k * (self.high - self.low)
        if self.allowed is not None:
            v = min(self.allowed, key=lambda a: (abs(self.normalise(a) - k), a))
        return float(round(v)) if self.integer else float(v)

    def snapped(self, k: float) -> float:
        """The normalised position of the value actually applied at ``k``."""
        return self.normalise(self.value(k))

    def probe(self, k: float, dk: float) -> float:
        """A neighbour of ``k`` for a finite difference: the next applied value above (below at the top).

        Continuous knobs move by ``dk``; discrete and integer ones to the next value that differs from the one
        applied at ``k``. Returns the probe's normalised position (the difference to :meth:`snapped` is the actual
        ``dk``, negative at the top of the range).
        """
        here = self.snapped(k)
        if self.allowed is not None:
            positions = [self.normalise(a) for a in self.allowed]
            above = [p for p in positions if p > here + 1e-12]
            below = [p for p in positions if p < here - 1e-12]
            if above:
                return min(above)
            return max(below) if below else here
        step = max(dk, 1.0 / abs(self.high - self.low)) if self.integer else dk
        up = here + step
        if up <= 1.0 + 1e-12:
            return self.snapped(min(1.0, up))
        return self.snapped(max(0.0, here - step))


class KnobSpace:
    """An ordered set of knobs; knob vectors are float64 arrays of normalised values in that order."""

    def __init__(self, knobs: Sequence[Knob]) -> None:
        if not knobs:
            raise KnobError("knob space: at least one knob is required")
        names = [k.name for k in knobs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise KnobError(f"knob space: duplicate knob names {dup}")
        self.knobs = tuple(knobs)
        self.names = tuple(names)

    def __len__(self) -> int:
        return len(self.knobs)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KnobError(f"knob space: no knob named {name!r} (have {list(self.names)})") from None

    def check(self, k: KnobVector) -> np.ndarray:
        """Validate a knob vector (length, finiteness) and clip it to ``[0, 1]``."""
        arr = np.asarray(k, dtype=np.float64)
        if arr.shape != (len(self),):
            raise KnobError(f"knob vector: expected {len(self)} values {list(self.names)}, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise KnobError(f"knob vector: values must be finite, got {arr.tolist()}")
        return np.clip(arr, 0.0, 1.0)

    def values(self, k: KnobVector) -> dict[str, float]:
        """The applied (snapped) value of every knob, by name."""
        arr = self.check(k)
        return {knob.name: knob.value(v) for knob, v in zip(self.knobs, arr)}

    def snapped(self, k: KnobVector) -> np.ndarray:
        """The normalised positions of the applied values."""
        arr = self.check(k)
        return np.array([knob.snapped(v) for knob, v in zip(self.knobs, arr)])

    def from_values(self, values: dict[str, float]) -> np.ndarray:
        """Normalised vector from applied values (every knob must be named)."""
        missing = [n for n in self.names if n not in values]
        if missing:
            raise KnobError(f"knob values: missing {missing}")
        return np.array([knob.normalise(values[knob.name]) for knob in self.knobs])

    def regions(self) -> list[int]:
        """Indices of the region knobs (those with a region), in order."""
        return [i for i, knob in enumerate(self.knobs) if knob.region is not None]

    def globals(self) -> list[int]:
        """Indices of the global knobs."""
        return [i for i, knob in enumerate(self.knobs) if knob.region is None]
