"""Random English words for benchmark prompts, from a list shipped in the package.

`data/words.txt` is every third lowercase word of 3 to 12 letters in Debian's
`wamerican` list (SCOWL); its licence is in `data/LICENSE-words.txt`.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from functools import lru_cache
from typing import overload

from .bpe import DATA_DIR


class WordList(Sequence[str]):
    """Words kept as one string and their offsets: 0.25 MB where a tuple of
    20,000 strings takes 1.6 MB of the worker's memory for as long as it runs."""

    __slots__ = ("_text", "_starts")

    def __init__(self, words: list[str]) -> None:
        self._text = "".join(words)
        starts = array("I", [0])
        for word in words:
            starts.append(starts[-1] + len(word))
        self._starts = starts

    def __len__(self) -> int:
        return len(self._starts) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("word index out of range")
        return self._text[self._starts[index] : self._starts[index + 1]]


@lru_cache(maxsize=1)
def word_list() -> WordList:
    """The shipped word list, read once."""
    return WordList((DATA_DIR / "words.txt").read_text(encoding="utf-8").split())


def random_words(count: int, rng: random.Random | None = None) -> str:
    """`count` random words joined by spaces: a prompt for benchmarks and load tests."""
    choose = (rng or random).choices
    return " ".join(choose(word_list(), k=count))
