"""Counting GPT-2 tokens of one pre-token without `tokenizers`: byte-level BPE on a compact table.

A count needs only the merge ranks, not the vocabulary or token ids. We
number symbols ourselves: byte b is symbol b, and merge number r (its line
in `vocab.bpe`, the most frequent pair first) makes symbol 256 + r. The
table (`data/gpt2-merges.bin`, built by `scripts/make_merge_table.py`) holds
each merge as a pair code `(left << 17) | right`, sorted, then the merge
numbers in the same order: 500 KB where `tokenizers` holds 12 MB, and
loaded in a millisecond instead of 0.1 s.

BPE as GPT-2 (and `tokenizers`) applies it: repeatedly merge the adjacent
pair with the lowest merge number, the leftmost one first, until no pair
is a merge; the count is the number of symbols left. Pre-tokens longer than
`MAX_BPE_BYTES` (a page of letters with no space) would make that
quadratic, so they are counted by `tokenizers`, loaded only then.
`tests/test_tokens.py` checks counts against `tokenizers`' own encode.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

# Files shipped in the package (plain files: pyworker is installed or vendored
# unzipped; importlib.resources would cost the idle worker 2 MB to import).
DATA_DIR = Path(__file__).resolve().parent / "data"
MERGE_TABLE = DATA_DIR / "gpt2-merges.bin"
ID_BITS = 17  # symbol ids stay below 2**17 (256 + 50,000 merges)
MAX_BPE_BYTES = 1024
# Pair lookups remembered (about 100 bytes each); past this they start afresh.
MAX_SEEN_PAIRS = 1 << 14
_NO_MERGE = 1 << 20  # above every merge number


def _gpt2_char_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-text mapping, in which `vocab.bpe` is written.

    Bytes that are printable Latin-1 stand for themselves; the 68 others
    (controls, space, DEL, the C1 range, NBSP and soft hyphen) are
    written as U+0100 onwards, in byte order.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in table.values()]
    table.update({chr(0x100 + i): b for i, b in enumerate(others)})
    return table


def build_merge_table(vocab_bpe: str) -> bytes:
    """The table's bytes from the text of a GPT-2 `vocab.bpe` (merges, one per line)."""
    char_byte = _gpt2_char_to_byte()
    symbol: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    codes: list[tuple[int, int]] = []
    lines = [line for line in vocab_bpe.split("\n") if line and not line.startswith("#version")]
    for number, line in enumerate(lines):
        left, right = (bytes(char_byte[c] for c in side) for side in line.split(" "))
        codes.append(((symbol[left] << ID_BITS) | symbol[right], number))
        merged = left + right
        if merged in symbol:
            raise ValueError(f"merge {number} ({line!r}) makes a symbol that exists already")
        symbol[merged] = 256 + number
    if 256 + len(lines) >= 1 << ID_BITS or len(lines) > 0xFFFF:
        raise ValueError(f"{len(lines)} merges do not fit the table")
    codes.sort()
    keys = array("Q", [code for code, _ in codes])
    numbers = array("H", [number for _, number in codes])
    if sys.byteorder == "big":  # the file is little-endian
        keys.byteswap()
        numbers.byteswap()
    return keys.tobytes() + numbers.tobytes()


class ByteLevelBPE:
    """Token counts of single pre-tokens by GPT-2's merges.

    `long_count` counts a pre-token over `MAX_BPE_BYTES` (by `tokenizers`).
    """

    __slots__ = ("_keys", "_numbers", "_size", "_long_count", "_seen")

    def __init__(self, table: bytes, long_count: Callable[[str], int]) -> None:
        if len(table) % 10:
            raise ValueError("a merge table is 8 + 2 bytes a merge")
        size = len(table) // 10
        self._keys = array("Q")
        self._keys.frombytes(table[: 8 * size])
        self._numbers = array("H")
        self._numbers.frombytes(table[8 * size :])
        if sys.byteorder == "big":
            self._keys.byteswap()
            self._numbers.byteswap()
        self._size = size
        self._long_count = long_count
        # Pair codes looked up lately, with their merge numbers: pairs recur
        # across words, and a dict lookup is a tenth of a search in the table.
        self._seen: dict[int, int] = {}

    @classmethod
    def gpt2(cls, long_count: Callable[[str], int]) -> ByteLevelBPE:
        return cls(MERGE_TABLE.read_bytes(), long_count)

    def _merge_number(self, left: int, right: int) -> int:
        code = (left << ID_BITS) | right
        seen = self._seen
        number = seen.get(code)
        if number is None:
            keys = self._keys
            i = bisect_left(keys, code)
            number = self._numbers[i] if i < self._size and keys[i] == code else _NO_MERGE
            if len(seen) >= MAX_SEEN_PAIRS:
                seen.clear()
            seen[code] = number
        return number

    def count(self, piece: str) -> int:
        """The number of tokens BPE makes of one pre-token."""
        data = piece.encode("utf-8", "surrogatepass")
        n = len(data)
        if n < 2:
            return n
        if n > MAX_BPE_BYTES:
            return self._long_count(piece)
        number = self._merge_number
        symbols = list(data)
        pairs = [number(symbols[i], symbols[i + 1]) for i in range(n - 1)]
        while pairs:
            best = min(pairs)
            if best == _NO_MERGE:
                break
            i = pairs.index(best)  # the leftmost pair with the lowest merge number
            symbols[i] = 256 + best
            del symbols[i + 1]
            del pairs[i]
            if i < len(pairs):
                pairs[i] = number(symbols[i], symbols[i + 1])
            if i > 0:
                pairs[i - 1] = number(symbols[i - 1], symbols[i])
        return len(symbols)
