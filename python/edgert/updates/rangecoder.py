"""The adaptive binary range coder of update-packet format version 2 (docs/spec/update-packet.md).

This is the reference implementation (pure Python: the ground truth, written by
``edgert.updates.packet._payload_v2_reference`` and read by :func:`edgert.updates.packet.transcode`).
libedgert's decoder (``src/packet/range_coder.hpp``) and its encoder (``src/packet/encode_v2.hpp``,
which :func:`edgert.updates.packet.encode_update` uses) must agree with it bit for bit, which the
golden packets in ``tests/data/packets`` and ``tests/test_rangecoder.py`` check.

Models: :class:`GapModel` codes the gaps between sorted sparse indices (adaptive unary
bucket + one adaptive mantissa bit + direct bits), :class:`TreeModel` codes whole fixed-width
symbols (fp16 bit patterns, int8 ``q``) down a binary tree of adaptive contexts.
"""
from __future__ import annotations

from typing import Sequence

PROB_BITS = 12
PROB_INIT = 1 << (PROB_BITS - 1)
PROB_ONE = 1 << PROB_BITS
ADAPT_SHIFT = 4
TOP = 1 << 24
MAX_GAP_BUCKET = 32  # v = gap + 1 <= 2^32


class RangeError(ValueError):
    """A malformed range-coded stream (reading past its end, or not ending where it must)."""


class RangeEncoder:
    """Encoder state; :meth:`finish` returns the stream (without the always-zero first byte)."""

    def __init__(self) -> None:
        self.low = 0
        self.range = 0xFFFFFFFF
        self.cache = 0
        self.cache_size = 1
        self.out = bytearray()

    def _shift_low(self) -> None:
        low = self.low
        if low < 0xFF000000 or low >= 1 << 32:
            carry = low >> 32
            temp = self.cache
            out = self.out
            while True:
                out.append((temp + carry) & 0xFF)
                temp = 0xFF
                self.cache_size -= 1
                if self.cache_size == 0:
                    break
            self.cache = (low >> 24) & 0xFF
        self.cache_size += 1
        self.low = (low & 0x00FFFFFF) << 8

    def bit(self, probs: list[int], ctx: int, b: int) -> None:
        """Codes bit ``b`` with the adaptive probability ``probs[ctx]`` and updates it."""
        p = probs[ctx]
        bound = (self.range >> PROB_BITS) * p
        if b:
            self.low += bound
            self.range -= bound
            probs[ctx] = p - (p >> ADAPT_SHIFT)
        else:
            self.range = bound
            probs[ctx] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
        while self.range < TOP:
            self.range = (self.range << 8) & 0xFFFFFFFF
            self._shift_low()

    def direct(self, b: int) -> None:
        """Codes bit ``b`` with probability 1/2 (no model)."""
        self.range >>= 1
        if b:
            self.low += self.range
        while self.range < TOP:
            self.range = (self.range << 8) & 0xFFFFFFFF
            self._shift_low()

    def finish(self) -> bytes:
        for _ in range(5):
            self._shift_low()
        assert self.out[0] == 0, "the first byte of a range-coded stream is always 0"
        return bytes(self.out[1:])


class RangeDecoder:
    """Decoder over ``data``; raises :class:`RangeError` on any overrun and in :meth:`finish`."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 4:
            raise RangeError(f"range-coded stream of {len(data)} bytes (at least 4)")
        self.data = data
        self.code = int.from_bytes(data[:4], "big")
        if self.code == 0xFFFFFFFF:
            raise RangeError("range-coded stream starts with an impossible code 0xFFFFFFFF")
        self.range = 0xFFFFFFFF
        self.pos = 4

    def _normalize(self) -> None:
        while self.range < TOP:
            if self.pos >= len(self.data):
                raise RangeError(f"range-coded stream runs past its {len(self.data)} bytes")
            self.range = (self.range << 8) & 0xFFFFFFFF
            self.code = ((self.code << 8) & 0xFFFFFFFF) | self.data[self.pos]
            self.pos += 1

    def bit(self, probs: list[int], ctx: int) -> int:
        p = probs[ctx]
        bound = (self.range >> PROB_BITS) * p
        if self.code < bound:
            self.range = bound
            probs[ctx] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
            b = 0
        else:
            self.code -= bound
            self.range -= bound
            probs[ctx] = p - (p >> ADAPT_SHIFT)
            b = 1
        self._normalize()
        return b

    def direct(self) -> int:
        self.range >>= 1
        b = 0
        if self.code >= self.range:
            self.code -= self.range
            b = 1
        self._normalize()
        return b

    def finish(self) -> None:
        """Checks that the stream ended exactly: every byte read and the code back to 0."""
        if self.pos != len(self.data):
            raise RangeError(f"range-coded stream has {len(self.data) - self.pos} bytes after its last symbol")
        if self.code != 0:
            raise RangeError("range-coded stream does not end on its final interval (code != 0)")


class GapModel:
    """Gaps between strictly increasing indices: adaptive unary bucket, adaptive top mantissa bit."""

    def __init__(self) -> None:
        self.unary = [PROB_INIT] * (MAX_GAP_BUCKET + 1)
        self.mantissa = [PROB_INIT] * (MAX_GAP_BUCKET + 1)

    def encode(self, enc: RangeEncoder, gap: int) -> None:
        if not 0 <= gap < 1 << 32:
            raise ValueError(f"gap {gap} does not fit 32 bits")
        v = gap + 1
        nb = v.bit_length() - 1
        for i in range(nb):
            enc.bit(self.unary, i, 1)
        if nb < MAX_GAP_BUCKET:
            enc.bit(self.unary, nb, 0)
        if nb >= 1:
            enc.bit(self.mantissa, nb, (v >> (nb - 1)) & 1)
            for i in range(nb - 2, -1, -1):
                enc.direct((v >> i) & 1)

    def decode(self, dec: RangeDecoder) -> int:
        nb = 0
        while nb < MAX_GAP_BUCKET and dec.bit(self.unary, nb):
            nb += 1
        v = 1
        if nb >= 1:
            v = (v << 1) | dec.bit(self.mantissa, nb)
            for _ in range(nb - 1):
                v = (v << 1) | dec.direct()
        return v - 1


class TreeModel:
    """Adaptive model of a whole ``bits``-bit symbol: one context per binary-tree node."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.probs = [PROB_INIT] * (1 << bits)

    def encode(self, enc: RangeEncoder, symbol: int) -> None:
        node = 1
        probs = self.probs
        for i in range(self.bits - 1, -1, -1):
            b = (symbol >> i) & 1
            enc.bit(probs, node, b)
            node = (node << 1) | b

    def decode(self, dec: RangeDecoder) -> int:
        node = 1
        probs = self.probs
        for _ in range(self.bits):
            node = (node << 1) | dec.bit(probs, node)
        return node - (1 << self.bits)


def encode_symbols(symbols: Sequence[int], bits: int) -> bytes:
    """Convenience: one :class:`TreeModel` stream of ``symbols`` (used by tests and benchmarks)."""
    enc, model = RangeEncoder(), TreeModel(bits)
    for s in symbols:
        model.encode(enc, int(s))
    return enc.finish()
