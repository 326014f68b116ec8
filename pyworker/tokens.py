"""Exact token counts, cheap enough for every request.

`tokenizers`' own `encode` costs about 0.8 ms for a 250-word prompt and holds
the GIL. But a byte-level BPE tokenizer (GPT-2's and most LLMs' since)
splits text into pre-tokens first and runs BPE on each one alone, so the
count of a text is the sum of the counts of its pre-tokens, and those can be
cached. We split with a stdlib regex equal to the GPT-2 pre-tokenizer's, look
each pre-token up, and count only unseen ones: for the shipped GPT-2
vocabulary with our own count-only BPE on a 500 KB merge table (`bpe.py`;
`tokenizers` would hold 17 MB and is not even imported), for a model's own
tokenizer with `tokenizers` in a batch. `tests/test_tokens.py` checks the
counts against `tokenizers`' `encode` on a corpus.

For tokenizers of another shape (a model's own `tokenizer.json` with a
normalizer or a different pre-tokenizer) the counter falls back to `encode`,
which is exact by definition.

The default tokenizer is GPT-2's vocabulary, shipped in `pyworker/data`
(MIT licence, see `LICENSE-gpt2-bpe.txt`). `PYWORKER_TOKENIZER` may name a
model's own `tokenizer.json` instead. Nothing is loaded until the first count.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from .bpe import DATA_DIR, ByteLevelBPE

if TYPE_CHECKING:
    from tokenizers import Tokenizer

T = TypeVar("T")

TOKENIZER_ENV = "PYWORKER_TOKENIZER"
# Distinct pre-tokens remembered; past this the cache starts afresh.
MAX_CACHE_ENTRIES = 100_000
# Below this many unseen pre-tokens a batch call costs more than it saves.
_BATCH_MIN = 8
# A long text is counted in slices of about this many characters, so no
# more than one slice's pre-tokens exist at a time (a 10 MB prompt would
# otherwise be two million small strings at once).
SLICE_CHARS = 1 << 16
# Where no cut is found within this many characters, the pre-tokens of the
# stretch are taken from the regex one batch at a time instead.
_CUT_SEARCH_CHARS = 4 * SLICE_CHARS
_PIECE_BATCH = 4096
# A safe place to cut: a single space between two non-space characters.
# No pre-token crosses it (the space opens the next one), so the counts of
# the two sides add up to the count of the whole. Python's \S is narrower
# than "not Unicode White_Space", so every cut it finds is safe.
_CUT = re.compile(r"(?<=\S) (?=\S)")
# The default counter builds its Unicode tables this long after it is loaded,
# once the worker's start-up (and its first requests) are over.
UNICODE_TABLES_DELAY_S = 5.0
# Pre-tokens handed to one `encode_batch` call. The call holds the GIL (about
# 1 ms for 256), so a huge unseen prompt counted in a worker thread lets the
# event loop run between calls.
_BATCH_MAX = 256

# GPT-2's pre-tokenizer: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# On ASCII text the classes are exactly these:
_ASCII_SPLIT = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""",
    re.ASCII,
)

# Unicode's White_Space property (what \s means to the Rust regex engines);
# Python's \s differs (it also takes U+001C..U+001F), so it is spelled out.
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


# The planes that can hold letters or numbers: 0-3 and 14. Planes 4-13 are
# unassigned (Cn) through Unicode 16 and 15-16 are private use (Co), so the
# classes are the same without reading their 786,432 code points one by one
# (which is most of the 0.5 s the tables cost).
_PLANES_WITH_LETTERS = (range(0, 0x40000), range(0xE0000, 0xF0000))


def _category_class(prefix: str) -> str:
    """A regex character class body for every code point whose category starts with `prefix`."""
    ranges: list[tuple[int, int]] = []
    category = unicodedata.category
    for plane in _PLANES_WITH_LETTERS:
        start = -1
        for cp in plane:
            inside = category(chr(cp)).startswith(prefix)
            if inside and start < 0:
                start = cp
            elif not inside and start >= 0:
                ranges.append((start, cp - 1))
                start = -1
        if start >= 0:
            ranges.append((start, plane[-1]))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def _unicode_split() -> re.Pattern[str]:
    letters = _category_class("L")
    numbers = _category_class("N")
    ws = _WHITE_SPACE
    return re.compile(
        rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+| ?[^{ws}{letters}{numbers}]+"""
        rf"""|[{ws}]+(?![^{ws}])|[{ws}]+"""
    )


class _Once(Generic[T]):
    """A value made on first use, once whatever the threads, under a lock of its own."""

    __slots__ = ("_make", "_lock", "value")

    def __init__(self, make: Callable[[], T], value: T | None = None) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.value = value  # None until made

    def get(self) -> T:
        value = self.value
        if value is None:
            with self._lock:
                value = self.value
                if value is None:
                    value = self.value = self._make()
        return value


class TokenCounter:
    """Counts the tokens `tokenizer` makes of a text, exactly, with a cache.

    >>> counter = TokenCounter.default()
    >>> counter.count("Hello world")
    2
    """

    def __init__(self, tokenizer: Tokenizer | None, bpe: ByteLevelBPE | None = None) -> None:
        """Count with `tokenizer`, or with `bpe` (then `tokenizer` is loaded only when needed)."""
        if tokenizer is None and bpe is None:
            raise ValueError("a TokenCounter needs a tokenizer or a ByteLevelBPE")
        # Made on first use, each under a lock of its own: counting holds
        # `_lock` and may need either (a huge pre-token, a non-ASCII text).
        self._tokenizer: _Once[Tokenizer] = _Once(_gpt2_tokenizer, tokenizer)
        self._bpe = bpe
        self._cache: dict[str, int] = {}
        self._lead: dict[str, int] = {}
        self._unicode: _Once[re.Pattern[str]] = _Once(_unicode_split)
        self._lock = threading.Lock()
        # True when counts may be cached per pre-token and stay exact.
        self.exact_cache = bpe is not None or (tokenizer is not None and self._is_plain_byte_level(tokenizer))

    @property
    def tokenizer(self) -> Tokenizer:
        """The `tokenizers` tokenizer; for the shipped GPT-2 counter, built on first use."""
        return self._tokenizer.get()

    @staticmethod
    def _is_plain_byte_level(tokenizer: Tokenizer) -> bool:
        """True when the cache is exact: no normalizer, a GPT-2 ByteLevel pre-tokenizer, BPE.

        Read from the objects, not from `to_str()`: that JSON is megabytes,
        and parsing it would keep about 10 MB of the worker's memory.
        """
        from tokenizers import models, pre_tokenizers

        pre = tokenizer.pre_tokenizer
        return (
            tokenizer.normalizer is None
            and isinstance(pre, pre_tokenizers.ByteLevel)
            and bool(pre.use_regex)
            and not pre.add_prefix_space
            and isinstance(tokenizer.model, models.BPE)
            # Added tokens are matched on the whole text before pre-tokenizing.
            and not tokenizer.get_added_tokens_decoder()
        )

    @classmethod
    def from_file(cls, path: str) -> TokenCounter:
        """A counter for a model's own `tokenizer.json`."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(path))

    @classmethod
    def gpt2(cls) -> TokenCounter:
        """GPT-2's byte-level BPE, shipped inside the package, counted with its merge table (see `bpe`)."""
        counter: TokenCounter

        def long_piece(piece: str) -> int:
            return len(counter.tokenizer.encode(piece, add_special_tokens=False).ids)

        counter = cls(None, ByteLevelBPE.gpt2(long_piece))
        return counter

    # The process-wide counter, made by `_load_default` on first use.
    _default: ClassVar[_Once[TokenCounter]]

    @classmethod
    def default(cls) -> TokenCounter:
        """The process-wide counter: `PYWORKER_TOKENIZER`'s file, else GPT-2. Loaded once."""
        return cls._default.get()

    @classmethod
    def _load_default(cls) -> TokenCounter:
        path = os.environ.get(TOKENIZER_ENV)
        if path:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{TOKENIZER_ENV}={path}: no such file")
            counter = cls.from_file(path)
        else:
            counter = cls.gpt2()
        counter.warm_up()
        counter.prepare_unicode_in_background(UNICODE_TABLES_DELAY_S)
        return counter

    def warm_up(self) -> None:
        """Do the one-time work for ASCII text now instead of in the first request."""
        if self.exact_cache:
            self.count("warm up")

    def prepare_unicode_in_background(self, delay_s: float = 0.0) -> None:
        """Build the pre-tokenizer for non-ASCII text (about 0.12 s) in a daemon thread, after `delay_s`.

        Only text that is not ASCII needs it; it is built off the event loop
        so that such a text, when it comes, does not wait for it, and after
        a delay so that it does not share the GIL with the first requests.
        """
        if self.exact_cache and self._unicode.value is None:
            timer = threading.Timer(delay_s, self._unicode.get)
            timer.name = "pyworker-unicode-tables"
            timer.daemon = True
            timer.start()

    def encode_count(self, text: str) -> int:
        """The count straight from `tokenizers` (slow; the reference for tests)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _split(self, text: str) -> list[str]:
        if text.isascii():
            return _ASCII_SPLIT.findall(text)
        return self._unicode_pattern().findall(text)

    def _unicode_pattern(self) -> re.Pattern[str]:
        return self._unicode.get()

    def _fill(self, pieces: Iterable[str]) -> None:
        cache = self._cache
        missing = list(dict.fromkeys(p for p in pieces if p not in cache))
        if not missing:
            return
        if len(cache) + len(missing) > MAX_CACHE_ENTRIES:
            cache.clear()
            self._lead.clear()
        if self._bpe is not None:
            for piece in missing:
                cache[piece] = self._bpe_count(piece)
            return
        tok = self.tokenizer
        if len(missing) < _BATCH_MIN:
            for piece in missing:
                cache[piece] = len(tok.encode(piece, add_special_tokens=False).ids)
            return
        for start in range(0, len(missing), _BATCH_MAX):
            batch = missing[start : start + _BATCH_MAX]
            for piece, enc in zip(batch, tok.encode_batch(batch, add_special_tokens=False), strict=True):
                cache[piece] = len(enc.ids)

    def count(self, text: str) -> int:
        """The number of tokens in `text` (no special tokens added)."""
        if not self.exact_cache:
            return self.encode_count(text)
        if len(text) <= SLICE_CHARS:
            return self._count_slice(text)
        total = 0
        start = 0
        end = len(text)
        while start < end:
            stop = start + SLICE_CHARS
            if stop >= end:
                return total + self._count_slice(text[start:])
            cut = _CUT.search(text, stop, stop + _CUT_SEARCH_CHARS)
            if cut is None:
                further = _CUT.search(text, stop + _CUT_SEARCH_CHARS)
                stop = end if further is None else further.start()
                total += self._count_stretch(text, start, stop)
            else:
                stop = cut.start()
                total += self._count_slice(text[start:stop])
            start = stop
        return total

    def _count_stretch(self, text: str, start: int, stop: int) -> int:
        """Count text[start:stop] (which ends at a cut or at the end) a batch of pre-tokens at a time."""
        pattern = _ASCII_SPLIT if text.isascii() else self._unicode_pattern()
        total = 0
        batch: list[str] = []
        for match in pattern.finditer(text, start, stop):
            batch.append(match.group())
            if len(batch) >= _PIECE_BATCH:
                total += self._count_pieces(batch)
                batch = []
        return total + self._count_pieces(batch)

    def _count_pieces(self, pieces: list[str]) -> int:
        cache = self._cache
        try:
            return sum(map(cache.__getitem__, pieces))
        except KeyError:
            pass
        self._fill(pieces)
        return sum(self._get(piece) for piece in pieces)

    def _count_slice(self, text: str) -> int:
        if text.isascii() and _spaces_are_safe(text):
            return self._count_by_spaces(text)
        return self._count_pieces(self._split(text))

    def _bpe_count(self, key: str) -> int:
        """BPE's count of a cache key: a pre-token, or a part between spaces holding several."""
        bpe = self._bpe
        assert bpe is not None
        return sum(map(bpe.count, self._split(key)))

    def _get(self, piece: str) -> int:
        n = self._cache.get(piece)
        if n is None:  # the cache was cleared by another thread meanwhile
            if self._bpe is not None:
                n = self._bpe_count(piece)
            else:
                n = len(self.tokenizer.encode(piece, add_special_tokens=False).ids)
            self._cache[piece] = n
        return n

    def _count_by_spaces(self, text: str) -> int:
        """Count ASCII text split at single spaces, each part cached with its leading space.

        No pre-token crosses from a non-space character into the whitespace
        after it, and the space before a word belongs to that word, so when
        every space in the text follows a non-space character, the text's
        pre-tokens are exactly those of its parts " " + part, each taken
        alone. `str.split` is several times cheaper than the regex.
        `_lead` maps a part to the count of " " + part, so no key is built.
        """
        first, *rest = text.split(" ")
        lead = self._lead
        try:
            return (self._cache[first] if first else 0) + sum(map(lead.__getitem__, rest))
        except KeyError:
            pass
        missing = list(dict.fromkeys(" " + part for part in rest if part not in lead))
        if first:
            missing.append(first)
        self._fill(missing)
        with self._lock:
            for key in missing:
                if key.startswith(" "):
                    lead[key[1:]] = self._get(key)
        return (self._get(first) if first else 0) + sum(self._get(" " + part) for part in rest)


TokenCounter._default = _Once(TokenCounter._load_default)


def _gpt2_tokenizer() -> Tokenizer:
    """GPT-2's tokenizer in `tokenizers` (12 MB): the reference for tests, and for huge pre-tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE.from_file(str(DATA_DIR / "encoder.json"), str(DATA_DIR / "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _spaces_are_safe(text: str) -> bool:
    """True when no space in ASCII `text` follows whitespace (see `_count_by_spaces`)."""
    if "  " in text:
        return False
    # Single-character searches are memchr-fast; most texts skip the pair checks.
    for ws in "\n\t\r\x0b\x0c":
        if ws in text and ws + " " in text:
            return False
    return True


def count_tokens(text: str) -> int:
    """Tokens in `text` by the default counter (see `TokenCounter.default`)."""
    return TokenCounter.default().count(text)
