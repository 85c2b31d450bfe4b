"""GPT-2 token ids for many documents at once: exactly tiktoken's ids, several times faster on natural text.

tiktoken's GPT-2 pattern (``tokenization.GPT2_PATTERN``) never lets a piece run from a non-whitespace character into
a whitespace character after it: letters, numbers, punctuation and contractions stop before whitespace, and every
whitespace piece starts with whitespace. No alternative looks behind, and the lookahead of ``\\s+(?!\\S)`` only looks
at what follows. So a text can be cut before every whitespace character that follows a non-whitespace one, and the
parts encoded one by one give the same ids as the whole text: a part is a run of whitespace and the word after it
(``" the"``, ``",\\n\\nThe"``), a document's first part may lack the whitespace and its last may be only whitespace.

Parts repeat (Zipf's law), so each process keeps a cache from part to ids; only the parts a batch has not seen before
go to tiktoken, joined into one string -- a joint between parts is such a cut too -- in one call whose ids are split
back at the parts' byte lengths (checked; a mismatch falls back to one call per part). The cutting, hashing and
gathering run over the batch's UTF-8 bytes in numpy and Arrow, not per document in Python.

"Whitespace" is Unicode's White_Space property, which is what ``\\s`` means to tiktoken's regex engine (Python's
``str.isspace`` also counts U+001C..U+001F; those are punctuation to GPT-2).
"""

from __future__ import annotations

import functools
from itertools import repeat

import numpy as np

EOT_ID = 50256
CACHE_LIMIT = 1 << 19  # parts per process (~100 MB at most); once full, new parts are encoded but not kept
CACHE_MAX_CHARS = 48  # longer parts (URLs, hashes, long numbers) rarely repeat and are not kept

_ASCII_WS = np.zeros(256, dtype=bool)
_ASCII_WS[[9, 10, 11, 12, 13, 32]] = True
# bytes that can start a character Python's str.isspace() accepts: for the "blank document" test (str.strip())
_BLANK_LEAD = _ASCII_WS.copy()
_BLANK_LEAD[[0x1C, 0x1D, 0x1E, 0x1F, 0xC2, 0xE1, 0xE2, 0xE3]] = True
# the non-ASCII White_Space characters, as UTF-8
_WS2 = {(0xC2, 0x85), (0xC2, 0xA0)}
_WS3 = {(0xE1, 0x9A, 0x80), *((0xE2, 0x80, c) for c in [*range(0x80, 0x8B), 0xA8, 0xA9, 0xAF]), (0xE2, 0x81, 0x9F),
        (0xE3, 0x80, 0x80)}

WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                       "\u2028\u2029\u202f\u205f\u3000")


@functools.lru_cache(maxsize=1)
def _encoding():
    from .tokenization import get_encoding

    return get_encoding()


@functools.lru_cache(maxsize=1)
def _token_bytes() -> np.ndarray:
    """The UTF-8 byte length of every GPT-2 token."""
    enc = _encoding()
    return np.array([len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)], dtype=np.int64)


def _encode_one(text: str) -> tuple[int, ...]:
    return tuple(_encoding().encode_ordinary(text))


def _whitespace_marks(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For UTF-8 `data`: where a White_Space character starts, and where one ends (both as byte masks)."""
    starts = _ASCII_WS[data]
    ends = starts.copy()
    lead = np.flatnonzero((data == 0xC2) | (data >= 0xE1) & (data <= 0xE3))
    if len(lead):
        padded = np.concatenate([data, np.zeros(2, dtype=np.uint8)])
        b0, b1, b2 = padded[lead], padded[lead + 1], padded[lead + 2]
        two = np.zeros(len(lead), dtype=bool)
        for x, y in _WS2:
            two |= (b0 == x) & (b1 == y)
        three = np.zeros(len(lead), dtype=bool)
        for x, y, z in _WS3:
            three |= (b0 == x) & (b1 == y) & (b2 == z)
        starts[lead[two | three]] = True
        ends[lead[two] + 1] = True
        ends[lead[three] + 2] = True
    return starts, ends


class _PartTable:
    """The cache of one process: part -> row, and per row the part's ids in one growing uint16 array.

    Row 0 is ``<|endoftext|>``. Rows past ``size`` hold the parts of the current batch that are not kept."""

    def __init__(self):
        self.rows: dict[str, int] = {}
        self.start = np.zeros(1024, np.int64)
        self.length = np.zeros(1024, np.int64)
        self.tokens = np.zeros(4096, np.uint16)
        self.size, self.used = 1, 1
        self.length[0], self.tokens[0] = 1, EOT_ID

    def _room(self, rows: int, tokens: int) -> None:
        while self.size + rows > len(self.start):
            self.start, self.length = (np.concatenate([a, np.zeros_like(a)]) for a in (self.start, self.length))
        while self.used + tokens > len(self.tokens):
            self.tokens = np.concatenate([self.tokens, np.zeros_like(self.tokens)])

    def lookup(self, parts: list[str]) -> np.ndarray:
        """The row of every part, adding the parts not seen yet (encoded with tiktoken)."""
        rows = np.fromiter(map(self.rows.get, parts, repeat(-1)), np.int64, len(parts))
        missing = np.flatnonzero(rows < 0)
        if not len(missing):
            return rows
        texts = [parts[i] for i in missing.tolist()]
        ids = _encode_parts(texts)
        keep = [len(self.rows) < CACHE_LIMIT and len(t) <= CACHE_MAX_CHARS for t in texts]
        order = sorted(range(len(texts)), key=lambda k: not keep[k])  # the kept ones first: they stay
        lengths = np.array([len(ids[k]) for k in order], np.int64)
        self._room(len(order), int(lengths.sum()))
        row = np.arange(self.size, self.size + len(order))
        self.start[row] = self.used + np.cumsum(lengths) - lengths
        self.length[row] = lengths
        self.tokens[self.used : self.used + int(lengths.sum())] = np.fromiter(
            (t for k in order for t in ids[k]), np.uint16, int(lengths.sum()))
        rows[missing[order]] = row
        kept = sum(keep)
        for k, r in zip(order[:kept], row[:kept].tolist()):
            self.rows[texts[k]] = r
        self.size += kept
        self.used += int(lengths[:kept].sum())
        return rows


_table = _PartTable()


def _encode_parts(texts: list[str]) -> list[tuple[int, ...]]:
    """The ids of each part, with tiktoken: the parts that can be joined in one call, the others alone.

    A part that starts without whitespace (a document's first) cannot follow another; one that ends with
    whitespace (a document's last) cannot precede one."""
    ids: list = [None] * len(texts)
    joinable = []
    for i, text in enumerate(texts):
        if text[0] in WHITESPACE and text[-1] not in WHITESPACE:
            joinable.append(i)
        else:
            ids[i] = _encode_one(text)
    if joinable:
        parts = [texts[i] for i in joinable]
        tokens = np.frombuffer(_encoding()._core_bpe.encode_to_tiktoken_buffer("".join(parts), set()), np.uint32)
        token_end = np.cumsum(_token_bytes()[tokens])
        part_end = np.cumsum([len(t.encode("utf-8")) for t in parts])
        cut = np.searchsorted(token_end, part_end) + 1
        if len(tokens) and cut[-1] == len(tokens) and (token_end[cut - 1] == part_end).all():
            flat = tokens.tolist()
            for i, a, b in zip(joinable, [0, *cut[:-1].tolist()], cut.tolist(), strict=True):
                ids[i] = tuple(flat[a:b])
        else:  # never seen; a safety net rather than a path
            for i in joinable:
                ids[i] = _encode_one(texts[i])
    return ids


def encode_arrow(texts) -> tuple[np.ndarray, np.ndarray]:
    """``[EOT] + encode_ordinary(text)`` for every text of a pyarrow string array (no nulls, none empty),
    concatenated as uint16; and each text's token count (EOT included)."""
    import pyarrow as pa

    n = len(texts)
    if n == 0:
        return np.empty(0, np.uint16), np.empty(0, np.int64)
    large = pa.types.is_large_string(texts.type)
    offsets = np.frombuffer(texts.buffers()[1], np.int64 if large else np.int32)[texts.offset : texts.offset + n + 1]
    data = np.frombuffer(texts.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    offsets = offsets.astype(np.int64) - offsets[0]
    ws_start, ws_end = _whitespace_marks(data)
    cut = np.zeros(len(data), dtype=bool)
    cut[1:] = ws_start[1:] & ~ws_end[:-1]
    cut[offsets[:-1]] = True
    starts = np.flatnonzero(cut)
    big = len(data) >= 2**31
    parts = (pa.LargeStringArray if big else pa.StringArray).from_buffers(
        len(starts), pa.py_buffer(np.append(starts, len(data)).astype(np.int64 if big else np.int32)),
        pa.py_buffer(data))
    encoded = parts.dictionary_encode()
    rows = _table.lookup(encoded.dictionary.to_pylist())[encoded.indices.to_numpy(zero_copy_only=False)]
    first_part = np.searchsorted(starts, offsets[:-1])  # each document's first part
    rows = np.insert(rows, first_part, 0)  # <|endoftext|> before it
    length = _table.length[rows]
    total = int(length.sum())
    source = np.repeat(_table.start[rows] - (np.cumsum(length) - length), length) + np.arange(total)
    return _table.tokens[source], np.add.reduceat(length, first_part + np.arange(n))


def blank_candidates(texts) -> np.ndarray:
    """Indices of the texts of a pyarrow string array (no nulls) that may be blank (empty, or starting with a
    character ``str.isspace`` accepts); only those need ``str.strip()``."""
    import pyarrow as pa

    n = len(texts)
    large = pa.types.is_large_string(texts.type)
    offsets = np.frombuffer(texts.buffers()[1], np.int64 if large else np.int32)[texts.offset : texts.offset + n + 1]
    data = np.frombuffer(texts.buffers()[2], np.uint8)
    lengths = np.diff(offsets)
    firsts = data[np.minimum(offsets[:-1], max(len(data) - 1, 0))] if len(data) else np.zeros(n, np.uint8)
    return np.flatnonzero((lengths == 0) | _BLANK_LEAD[firsts])
