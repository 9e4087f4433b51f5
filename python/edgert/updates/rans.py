"""The static-table rANS coder of update-packet format version 3 (docs/spec/update-packet.md).

Server side: :func:`build_tables` gathers per-packet symbol statistics and normalises them to
4096, :func:`write_table` serialises a table, :func:`coding_steps` turns the entries into the
spec's sequence of coding steps ``(state, start, frequency)``, which libedgert's encoder
(``_edgert.rans_encode_v3``) or the pure-Python :func:`encode_steps_reference` turns into the
stream. :class:`RansStreamDecoder` is the reference decoder (the ground truth the C++ decoder
in ``src/packet/stream_v3.inl`` is held to by the golden packets and tests).

Symbols, per coordinate in directory order: the gap (sparse entries) on state 0 — symbol
``v - 1`` for ``v = gap + 1 <= 63``, else ``57 + floor(log2 v)`` followed by the bits of ``v``
below its leading one as raw chunks (most significant first, the first chunk ``nb - 12 *
((nb - 1) // 12)`` bits, the others 12) on state 0 — then the value: an fp16 pattern as its
high byte on state 1 with table ``hi[previous high byte >> 5]`` (0 at the start of each
entry) and its low byte on state 2; a ``q`` (two's complement byte: int8, block int8, or block
int4 sign-extended) on state 1, all with the one q table.
"""
from __future__ import annotations

from dataclasses import dataclass
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
HI_CONTEXTS = 8
TABLE_GAP, TABLE_HI, TABLE_LO, TABLE_Q = 0, 1, 1 + HI_CONTEXTS, 2 + HI_CONTEXTS
TABLES = TABLE_Q + 1  # 11, in stream order: gap, hi[0..7], lo, q


class RansError(ValueError):
    """A malformed format 3 table or stream."""


def alphabet(table: int) -> int:
    """Number of symbols of table ``table`` (90 for gaps, 256 for the byte tables)."""
    return GAP_ALPHABET if table == TABLE_GAP else 256


@dataclass
class StreamEntry:
    """One directory entry as the stream sees it: fp16 patterns (uint16) or q bytes (uint8)
    ``symbols``, and the strictly increasing ``indices`` (None: dense)."""

    symbols: np.ndarray
    indices: Optional[np.ndarray]
    fp16: bool


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


def _value_symbols(e: StreamEntry) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """(state 1 symbols, state 1 table per symbol, state 2 symbols): hi/context/lo, or q/None/None."""
    s = np.asarray(e.symbols)
    if not e.fp16:
        return s.astype(np.int64), None, None
    p = s.astype(np.int64)
    hi, lo = p >> 8, p & 0xFF
    ctx = np.concatenate([[0], hi[:-1] >> 5]) if hi.size else hi
    return hi, TABLE_HI + ctx, lo


def build_tables(entries: Sequence[StreamEntry]) -> dict[int, np.ndarray]:
    """The packet's normalised tables, by table number, for the tables its entries use."""
    counts = {}
    if any(e.indices is not None for e in entries):
        counts[TABLE_GAP] = np.zeros(GAP_ALPHABET, dtype=np.int64)
    if any(e.fp16 for e in entries):
        for t in range(TABLE_HI, TABLE_LO + 1):
            counts[t] = np.zeros(256, dtype=np.int64)
    if any(not e.fp16 for e in entries):
        counts[TABLE_Q] = np.zeros(256, dtype=np.int64)
    for e in entries:
        if e.indices is not None and len(e.indices):
            counts[TABLE_GAP] += np.bincount(_gap_symbols(e.indices)[0], minlength=GAP_ALPHABET)
        first, tables, second = _value_symbols(e)
        if tables is None or second is None:
            counts[TABLE_Q] += np.bincount(first, minlength=256)
        else:
            counts[TABLE_LO] += np.bincount(second, minlength=256)
            flat = np.bincount((tables - TABLE_HI) * 256 + first, minlength=HI_CONTEXTS * 256)
            for c in range(HI_CONTEXTS):
                counts[TABLE_HI + c] += flat[c * 256:(c + 1) * 256]
    return {t: normalize(c) for t, c in sorted(counts.items())}


def coding_steps(entries: Sequence[StreamEntry],
                 tables: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
            state[:, 0], start[:, 0], freq[:, 0] = 0, starts_of[TABLE_GAP][sym], tables[TABLE_GAP][sym]
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
        first, tabs, second = _value_symbols(e)
        if tabs is None:
            state[:, 4], start[:, 4], freq[:, 4] = 1, starts_of[TABLE_Q][first], tables[TABLE_Q][first]
            used[:, 4] = True
        else:
            hi_starts = np.stack([starts_of[TABLE_HI + c] for c in range(HI_CONTEXTS)])
            hi_freqs = np.stack([tables[TABLE_HI + c] for c in range(HI_CONTEXTS)])
            ctx = tabs - TABLE_HI
            state[:, 4], start[:, 4], freq[:, 4] = 1, hi_starts[ctx, first], hi_freqs[ctx, first]
            state[:, 5], start[:, 5], freq[:, 5] = 2, starts_of[TABLE_LO][second], tables[TABLE_LO][second]
            used[:, 4] = used[:, 5] = True
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
                 fp16: bool) -> tuple[Optional[np.ndarray], np.ndarray]:
    """Decodes one entry's ``n`` coordinates (reference): (indices or None, symbols uint16/uint8)."""
    cum = {t: np.concatenate([[0], np.cumsum(f)[:-1]]) for t, f in tables.items()}
    indices = np.empty(n, dtype=np.int64) if sparse else None
    symbols = np.empty(n, dtype=np.int64)
    prev, prev_hi = -1, 0
    for t in range(n):
        if sparse:
            s = dec.symbol(0, tables[TABLE_GAP], cum[TABLE_GAP])
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
            table = TABLE_HI + (prev_hi >> 5)
            hi = dec.symbol(1, tables[table], cum[table])
            lo = dec.symbol(2, tables[TABLE_LO], cum[TABLE_LO])
            symbols[t] = hi << 8 | lo
            prev_hi = hi
        else:
            symbols[t] = dec.symbol(1, tables[TABLE_Q], cum[TABLE_Q])
    return indices, symbols.astype(np.uint16 if fp16 else np.uint8)
