"""The static-table rANS coder of update-packet format version 3 (docs/spec/update-packet.md).

Server side: :func:`build_tables` gathers per-packet symbol statistics and normalises them to
4096, :func:`write_table` serialises a table, :func:`coding_steps` turns the entries into the
spec's sequence of coding steps ``(state, start, frequency)``, which libedgert's encoder
(``_edgert.rans_encode_v3``) or the pure-Python :func:`encode_steps_reference` turns into the
stream. :class:`RansStreamDecoder` is the reference decoder (the ground truth the C++ decoder
in ``src/packet/stream_v3.inl`` is held to by the golden packets and tests).

Symbols, per coordinate in directory order: the gap (sparse entries) on state 0 with table
``gap[1]`` after a gap symbol 0 in the same entry, else ``gap[0]`` — symbol ``v - 1`` for
``v = gap + 1 <= 63``, else ``57 + floor(log2 v)`` followed by the bits of ``v`` below its
leading one as raw chunks (most significant first, the first chunk ``nb - 12 * ((nb - 1) //
12)`` bits, the others 12) on state 0 — then the value. An fp16 pattern x, with p the previous
pattern of the entry (0 at its start), is coded against a move-to-front **ring** of the entry's
last 4 distinct patterns (initially ``RING_INIT``): on state 1 with table
``hi[4 * (previous coordinate was a ring hit) + min(3, exponent(p) >> 2)]``, symbol ``256 + k``
if x is ``ring[k]`` (x moves to the front), else the high byte — plain, or with the packet's
``hi_delta`` mode as ``(x >> 8) - (p >> 8)`` mod 256 — followed by the low byte on state 2 with
the lo table (x enters the ring at the front, the last one drops). A ``q`` (two's complement
byte: int8, block int8, or block int4 sign-extended) is one symbol on state 1 with the q table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

PRECISION = 12
TOTAL = 1 << PRECISION  # frequencies of a table sum to 4096
LOW = 1 << 16  # states live in [2^16, 2^32)
STATES = 3  # 0: gaps, 1: fp16 hi byte / int8 q, 2: fp16 lo byte
GAP_DIRECT = 63  # gap symbols 0..62 code v = symbol + 1
GAP_MIN_BUCKET = 6
GAP_ALPHABET = GAP_DIRECT + 32 - GAP_MIN_BUCKET + 1  # 90
RAW_CHUNK_BITS = 12
GAP_CONTEXTS = 2  # gap[1] after a gap symbol 0 (adjacent coordinates), else gap[0]
HI_CONTEXTS = 8  # 4 x (previous was a ring hit) + min(3, exponent of the previous pattern >> 2)
RING = 4  # fp16 patterns remembered per entry (move to front)
RING_INIT = (0x0000, 0x8000, 0x0001, 0x8001)  # distinct, so the ring always holds 4 distinct patterns
HI_ALPHABET = 256 + RING  # high-byte deltas 0..255, then ring hits 256..259
TABLE_GAP = 0
TABLE_HI = TABLE_GAP + GAP_CONTEXTS
TABLE_LO = TABLE_HI + HI_CONTEXTS
TABLE_Q = TABLE_LO + 1
TABLES = TABLE_Q + 1  # 12, in stream order: gap[0..1], hi[0..7], lo, q


class RansError(ValueError):
    """A malformed format 3 table or stream."""


def alphabet(table: int) -> int:
    """Number of symbols of table ``table`` (90 for gaps, 260 for the hi tables, 256 for lo and q)."""
    if table < TABLE_HI:
        return GAP_ALPHABET
    return HI_ALPHABET if table < TABLE_LO else 256


@dataclass
class StreamEntry:
    """One directory entry as the stream sees it: fp16 patterns (uint16) or q bytes (uint8)
    ``symbols``, and the strictly increasing ``indices`` (None: dense)."""

    symbols: np.ndarray
    indices: Optional[np.ndarray]
    fp16: bool
    _ring: Optional[tuple[np.ndarray, np.ndarray]] = field(default=None, init=False, repr=False, compare=False)

    def ring_model(self) -> tuple[np.ndarray, np.ndarray]:
        """(ring hit symbol 256 + k or -1 for a literal, hi context) per fp16 coordinate (computed once)."""
        if self._ring is None:
            self._ring = _fp16_ring(np.asarray(self.symbols).astype(np.int64))
        return self._ring


# ---- tables --------------------------------------------------------------------------


def normalize(counts: np.ndarray) -> np.ndarray:
    """Frequencies summing to 4096, non-zero exactly where ``counts`` is (deterministic).

    floor(count * 4096 / total) raised to at least 1, the rest added to the most frequent symbol
    (or, if the floors overshoot, taken from the largest frequencies first). No symbol at all:
    symbol 0 gets 4096 (a table is always sent whole).
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    freqs = np.zeros(counts.size, dtype=np.int64)
    if total == 0:
        freqs[0] = TOTAL
        return freqs
    freqs[:] = counts * TOTAL // total
    freqs[(counts > 0) & (freqs == 0)] = 1
    diff = TOTAL - int(freqs.sum())
    if diff > 0:
        freqs[int(np.argmax(counts))] += diff
    while diff < 0:
        i = int(np.argmax(freqs))
        take = min(-diff, int(freqs[i]) - 1)
        freqs[i] -= take
        diff += take
    return freqs


def varint(x: int) -> bytes:
    """LEB128 encoding of ``x >= 0`` (the varints of formats 2 and 3)."""
    out = bytearray()
    while True:
        byte = x & 0x7F
        x >>= 7
        if x:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes, pos: int, what: str, error: type[ValueError] = ValueError) -> tuple[int, int]:
    """Decodes the minimal LEB128 varint at ``buf[pos:]`` (at most 64 bits): (value, next position); raises
    ``error`` naming ``what`` for a truncated, non-minimal or oversized varint."""
    value = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise error(f"{what}: varint runs past the payload")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                raise error(f"{what}: non-minimal varint")
            if value >= 1 << 64:
                raise error(f"{what}: varint exceeds 64 bits")
            return value, pos + i + 1
    raise error(f"{what}: varint longer than 10 bytes")


def write_table(freqs: np.ndarray) -> bytes:
    """A table as varints, one per symbol, except that a maximal run of r zero frequencies is ``0, r - 1``."""
    out = bytearray()
    f = [int(x) for x in freqs]
    i = 0
    while i < len(f):
        if f[i]:
            out += varint(f[i])
            i += 1
            continue
        j = i
        while j < len(f) and f[j] == 0:
            j += 1
        out += b"\x00" + varint(j - i - 1)
        i = j
    return bytes(out)


def read_table(buf: bytes, pos: int, size: int) -> tuple[np.ndarray, int]:
    """Parses a table of ``size`` symbols at ``pos`` (raises :class:`RansError`); returns (freqs, new pos)."""
    freqs = np.zeros(size, dtype=np.int64)
    sym, after_run = 0, False
    while sym < size:
        f, pos = read_varint(buf, pos, "table", RansError)
        if f > TOTAL:
            raise RansError(f"table: frequency {f} > {TOTAL}")
        if f == 0:
            if after_run:
                raise RansError("table: two zero runs in a row")
            more, pos = read_varint(buf, pos, "table", RansError)
            if more >= size - sym:
                raise RansError(f"table: zero run past the {size} symbols")
            sym += more + 1
            after_run = True
            continue
        freqs[sym] = f
        sym += 1
        after_run = False
    if int(freqs.sum()) != TOTAL:
        raise RansError(f"table: frequencies sum to {int(freqs.sum())}, not {TOTAL}")
    return freqs, pos


# ---- symbols -------------------------------------------------------------------------


def _gap_symbols(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbol, nb, bits below the leading one) per coordinate; nb = 0 for direct symbols."""
    v = np.diff(np.asarray(indices, dtype=np.int64), prepend=-1).astype(np.uint64)  # v = gap + 1 >= 1
    nb = np.zeros(v.size, dtype=np.int64)
    big = v > GAP_DIRECT
    if np.any(big):
        nb[big] = np.floor(np.log2(v[big].astype(np.float64))).astype(np.int64)
        # float log2 can round up just below a power of two
        over = big & ((np.uint64(1) << nb.astype(np.uint64)) > v)
        nb[over] -= 1
    sym = np.where(big, GAP_DIRECT - GAP_MIN_BUCKET + nb, v.astype(np.int64) - 1)
    rest = np.where(big, v - (np.uint64(1) << nb.astype(np.uint64)), np.uint64(0))
    return sym, nb, rest


def _gap_contexts(sym: np.ndarray) -> np.ndarray:
    """The gap table of each coordinate: 1 after a gap symbol 0 in the same entry, else 0."""
    return np.concatenate([[0], (sym[:-1] == 0).astype(np.int64)]) if sym.size else sym


def hi_context(previous: int, hit: bool) -> int:
    """The hi table (0..7) of an fp16 coordinate after pattern ``previous`` (coded as a ring hit or not)."""
    return 4 * int(hit) + min(3, ((previous >> 10) & 31) >> 2)


def _fp16_ring(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ring hit symbol 256 + k, or -1 for a literal; hi context) per fp16 pattern of one entry."""
    n = len(patterns)
    hit_sym = np.empty(n, dtype=np.int64)
    ctx = np.empty(n, dtype=np.int64)
    ring = list(RING_INIT)
    prev, hit = 0, False
    for t, x in enumerate(patterns.tolist()):
        ctx[t] = hi_context(prev, hit)
        hit = x in ring
        if hit:
            k = ring.index(x)
            hit_sym[t] = 256 + k
            ring.insert(0, ring.pop(k))
        else:
            hit_sym[t] = -1
            ring.pop()
            ring.insert(0, x)
        prev = x
    return hit_sym, ctx


def _value_symbols(e: StreamEntry, hi_delta: bool) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """(state 1 symbols, state 1 table per symbol, state 2 symbol per coordinate or -1): hi/context/lo,
    or q/None/None."""
    s = np.asarray(e.symbols)
    if not e.fp16:
        return s.astype(np.int64), None, None
    p = s.astype(np.int64)
    hit_sym, ctx = e.ring_model()
    hi = p >> 8
    if hi_delta:
        hi = (hi - np.concatenate([[0], hi[:-1]])) & 0xFF
    literal = hit_sym < 0
    return np.where(literal, hi, hit_sym), TABLE_HI + ctx, np.where(literal, p & 0xFF, -1)


def build_tables(entries: Sequence[StreamEntry], hi_delta: bool = False) -> dict[int, np.ndarray]:
    """The packet's normalised tables, by table number, for the tables its entries use (fp16 high bytes
    plain, or as deltas with ``hi_delta``)."""
    counts = {}
    if any(e.indices is not None for e in entries):
        for t in range(TABLE_GAP, TABLE_HI):
            counts[t] = np.zeros(GAP_ALPHABET, dtype=np.int64)
    if any(e.fp16 for e in entries):
        for t in range(TABLE_HI, TABLE_LO + 1):
            counts[t] = np.zeros(alphabet(t), dtype=np.int64)
    if any(not e.fp16 for e in entries):
        counts[TABLE_Q] = np.zeros(256, dtype=np.int64)
    for e in entries:
        if e.indices is not None and len(e.indices):
            sym = _gap_symbols(e.indices)[0]
            flat = np.bincount(_gap_contexts(sym) * GAP_ALPHABET + sym, minlength=GAP_CONTEXTS * GAP_ALPHABET)
            for c in range(GAP_CONTEXTS):
                counts[TABLE_GAP + c] += flat[c * GAP_ALPHABET:(c + 1) * GAP_ALPHABET]
        first, tables, second = _value_symbols(e, hi_delta)
        if tables is None or second is None:
            counts[TABLE_Q] += np.bincount(first, minlength=256)
        else:
            counts[TABLE_LO] += np.bincount(second[second >= 0], minlength=256)
            flat = np.bincount((tables - TABLE_HI) * HI_ALPHABET + first, minlength=HI_CONTEXTS * HI_ALPHABET)
            for c in range(HI_CONTEXTS):
                counts[TABLE_HI + c] += flat[c * HI_ALPHABET:(c + 1) * HI_ALPHABET]
    return {t: normalize(c) for t, c in sorted(counts.items())}


def coding_steps(entries: Sequence[StreamEntry], tables: dict[int, np.ndarray],
                 hi_delta: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coding steps of the stream in decode order: (states uint8, starts uint16, freqs uint16)."""
    starts_of = {t: np.concatenate([[0], np.cumsum(f)[:-1]]) for t, f in tables.items()}
    parts = []
    for e in entries:
        n = len(e.symbols)
        if n == 0:
            continue
        cols = 6  # gap, up to 3 raw chunks, two value symbols
        state = np.zeros((n, cols), dtype=np.uint8)
        start = np.zeros((n, cols), dtype=np.int64)
        freq = np.zeros((n, cols), dtype=np.int64)
        used = np.zeros((n, cols), dtype=bool)
        if e.indices is not None:
            sym, nb, rest = _gap_symbols(e.indices)
            if np.any((sym >= GAP_ALPHABET) | (sym < 0)):
                raise ValueError("gaps must be below 2^32")
            gctx = _gap_contexts(sym)
            gap_starts = np.stack([starts_of[TABLE_GAP + c] for c in range(GAP_CONTEXTS)])
            gap_freqs = np.stack([tables[TABLE_GAP + c] for c in range(GAP_CONTEXTS)])
            state[:, 0], start[:, 0], freq[:, 0] = 0, gap_starts[gctx, sym], gap_freqs[gctx, sym]
            used[:, 0] = True
            n_chunks = np.where(nb > 0, (nb - 1) // RAW_CHUNK_BITS + 1, 0)
            first_bits = nb - RAW_CHUNK_BITS * np.maximum(n_chunks - 1, 0)
            for c in range(3):
                has = n_chunks > c
                if not np.any(has):
                    continue
                bits = first_bits if c == 0 else np.full(n, RAW_CHUNK_BITS, dtype=np.int64)
                below = np.maximum(nb - first_bits - RAW_CHUNK_BITS * c, 0)  # bits of v under this chunk
                chunk = (rest >> below.astype(np.uint64)) & ((np.uint64(1) << bits.astype(np.uint64)) - np.uint64(1))
                width = np.left_shift(1, PRECISION - np.clip(bits, 1, RAW_CHUNK_BITS))
                state[has, 1 + c] = 0
                start[has, 1 + c] = (chunk.astype(np.int64) * width)[has]
                freq[has, 1 + c] = width[has]
                used[has, 1 + c] = True
        first, tabs, second = _value_symbols(e, hi_delta)
        if tabs is None or second is None:
            state[:, 4], start[:, 4], freq[:, 4] = 1, starts_of[TABLE_Q][first], tables[TABLE_Q][first]
            used[:, 4] = True
        else:
            hi_starts = np.stack([starts_of[TABLE_HI + c] for c in range(HI_CONTEXTS)])
            hi_freqs = np.stack([tables[TABLE_HI + c] for c in range(HI_CONTEXTS)])
            ctx = tabs - TABLE_HI
            state[:, 4], start[:, 4], freq[:, 4] = 1, hi_starts[ctx, first], hi_freqs[ctx, first]
            lit = second >= 0
            state[:, 5] = 2
            start[lit, 5], freq[lit, 5] = starts_of[TABLE_LO][second[lit]], tables[TABLE_LO][second[lit]]
            used[:, 4] = True
            used[:, 5] = lit
        parts.append((state[used], start[used], freq[used]))
    if not parts:
        return np.zeros(0, np.uint8), np.zeros(0, np.uint16), np.zeros(0, np.uint16)
    s = np.concatenate([p[0] for p in parts])
    a = np.concatenate([p[1] for p in parts])
    f = np.concatenate([p[2] for p in parts])
    return s.astype(np.uint8), a.astype(np.uint16), f.astype(np.uint16)


# ---- the coder -------------------------------------------------------------------------


def encode_steps_reference(states: Union[Sequence[int], np.ndarray], starts: Union[Sequence[int], np.ndarray],
                           freqs: Union[Sequence[int], np.ndarray]) -> bytes:
    """The stream of the steps (pure Python; what ``_edgert.rans_encode_v3`` computes): the steps are coded
    last to first; before coding a step with frequency f its state x emits the word ``x & 0xFFFF`` and
    shifts right by 16 if ``x >= f << 20``, then ``x = (x // f << 12) + x % f + start``. The stream is
    the three final states (u32 LE) followed by the words in reverse order of emission (u16 LE)."""
    x = [LOW] * STATES
    words: list[int] = []
    for s, a, f in zip(reversed(list(states)), reversed(list(starts)), reversed(list(freqs))):
        s, a, f = int(s), int(a), int(f)
        if not (0 <= s < STATES and 0 < f and a + f <= TOTAL):
            raise ValueError(f"bad step (state {s}, start {a}, freq {f})")
        v = x[s]
        if v >= f << 20:
            words.append(v & 0xFFFF)
            v >>= 16
        x[s] = ((v // f) << PRECISION) + v % f + a
    out = bytearray()
    for v in x:
        out += v.to_bytes(4, "little")
    for w in reversed(words):
        out += w.to_bytes(2, "little")
    return bytes(out)


class RansStreamDecoder:
    """The reference decoder of a format 3 stream (raises :class:`RansError`)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 4 * STATES:
            raise RansError(f"rANS stream of {len(data)} bytes is shorter than its {4 * STATES} state bytes")
        self.data = bytes(data)
        self.x = [int.from_bytes(self.data[4 * i:4 * i + 4], "little") for i in range(STATES)]
        if min(self.x) < LOW:
            raise RansError("rANS initial state below 2^16")
        self.pos = 4 * STATES

    def _renorm(self, s: int) -> None:
        if self.x[s] < LOW:
            if self.pos + 2 > len(self.data):
                raise RansError("rANS stream runs past its end")
            self.x[s] = (self.x[s] << 16) | int.from_bytes(self.data[self.pos:self.pos + 2], "little")
            self.pos += 2

    def symbol(self, s: int, freqs: np.ndarray, cum: np.ndarray) -> int:
        """Decodes one symbol of the table (freqs, cumulative starts) on state ``s``."""
        x = self.x[s]
        slot = x & (TOTAL - 1)
        sym = int(np.searchsorted(cum, slot, side="right")) - 1
        self.x[s] = int(freqs[sym]) * (x >> PRECISION) + slot - int(cum[sym])
        self._renorm(s)
        return sym

    def raw(self, s: int, bits: int) -> int:
        """Decodes ``bits`` (1..12) uniform bits on state ``s``."""
        x = self.x[s]
        shift = PRECISION - bits
        slot = x & (TOTAL - 1)
        self.x[s] = ((x >> PRECISION) << shift) + (slot & ((1 << shift) - 1))
        self._renorm(s)
        return slot >> shift

    def finish(self) -> None:
        """Checks the stream ended exactly: every word read and each state back at 2^16."""
        if self.pos != len(self.data):
            raise RansError(f"{len(self.data) - self.pos} rANS stream bytes after the last symbol")
        if self.x != [LOW] * STATES:
            raise RansError("rANS stream does not end in the initial states")


def decode_entry(dec: RansStreamDecoder, tables: dict[int, np.ndarray], n: int, numel: int, sparse: bool,
                 fp16: bool, hi_delta: bool = False) -> tuple[Optional[np.ndarray], np.ndarray]:
    """Decodes one entry's ``n`` coordinates (reference): (indices or None, symbols uint16/uint8)."""
    cum = {t: np.concatenate([[0], np.cumsum(f)[:-1]]) for t, f in tables.items()}
    indices = np.empty(n, dtype=np.int64) if sparse else None
    symbols = np.empty(n, dtype=np.int64)
    prev, gctx = -1, 0
    ring, pattern, hit = list(RING_INIT), 0, False
    for t in range(n):
        if sparse:
            s = dec.symbol(0, tables[TABLE_GAP + gctx], cum[TABLE_GAP + gctx])
            gctx = int(s == 0)
            v = s + 1
            if s >= GAP_DIRECT:
                nb = s - GAP_DIRECT + GAP_MIN_BUCKET
                v, left = 1, nb
                chunk = nb - RAW_CHUNK_BITS * ((nb - 1) // RAW_CHUNK_BITS)
                while left:
                    v = (v << chunk) | dec.raw(0, chunk)
                    left -= chunk
                    chunk = RAW_CHUNK_BITS
            prev += v
            if prev >= numel:
                raise RansError(f"index {prev} out of range [0, {numel})")
            assert indices is not None
            indices[t] = prev
        if fp16:
            table = TABLE_HI + hi_context(pattern, hit)
            s = dec.symbol(1, tables[table], cum[table])
            hit = s >= 256
            if hit:
                pattern = ring.pop(s - 256)
            else:
                lo = dec.symbol(2, tables[TABLE_LO], cum[TABLE_LO])
                pattern = (((pattern >> 8) + s if hi_delta else s) & 0xFF) << 8 | lo
                if pattern in ring:
                    raise RansError(f"literal fp16 pattern {pattern:#06x} is in the ring (a hit has one encoding)")
                ring.pop()
            ring.insert(0, pattern)
            symbols[t] = pattern
        else:
            symbols[t] = dec.symbol(1, tables[TABLE_Q], cum[TABLE_Q])
    return indices, symbols.astype(np.uint16 if fp16 else np.uint8)
