"""Random English words for benchmark prompts, from a list shipped in the package.

`data/words.txt` is every third lowercase word of 3 to 12 letters in Debian's
`wamerican` list (SCOWL); its licence is in `data/LICENSE-words.txt`.
"""

from __future__ import annotations

import random
from functools import lru_cache

from .tokens import DATA_DIR


@lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    """The shipped word list, read once."""
    text = (DATA_DIR / "words.txt").read_text(encoding="utf-8")
    return tuple(text.split())


def random_words(count: int, rng: random.Random | None = None) -> str:
    """`count` random words joined by spaces: a prompt for benchmarks and load tests."""
    choose = (rng or random).choices
    return " ".join(choose(word_list(), k=count))
