"""Token counts: the cached counter against `tokenizers`' own encode."""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import threading
import time
import unicodedata
import unittest
from collections.abc import Callable
from unittest import mock

from pyworker import tokens
from pyworker.tokens import TOKENIZER_ENV, TokenCounter
from pyworker.words import random_words, word_list

SAMPLES = [
    "",
    "Hello world",
    "  leading  spaces\n\n\ttabs and trailing   ",
    "I'll don't we're it's O'Neil's 'S 'LL they've",
    "naïve café, 日本語のテキスト、中文。 Привет мир! ١٢٣ ½ x² ⅷ",
    "emoji 🎉🎉 test\u200b zero-width\u00a0nbsp \x1c\x1d separators \u2028 line",
    "numbers 12345 3.14 1e10 0x1F 1,000,000",
    "code: def f(x):\n    return x**2  # comment\n\n\n",
    "combining e\u0301 marks and ＦＵＬＬＷＩＤＴＨ and Ελληνικά",
    "\r\n\r\n  \t",
    # Texts that take the split-at-spaces path, and near misses that must not.
    "a\nb c",
    "x\n y",
    "ends with a space ",
    " starts with a space",
    "tab\tseparated words here",
    "it's a dog's life, isn't it?",
    "don't  stop",
    "line one.\nLine two!\n\nThree",
    "  ",
    " ",
    "a",
    "trailing newline\n",
    "mixed\r\nendings \r\n here",
    "x \ty",
    "digits 123 4567 89012",
]


def corpus() -> list[str]:
    rng = random.Random(7)
    texts = list(SAMPLES)
    alphabet = "ab 'sé日\n\t1½,.-_🎉\u00a0"
    for _ in range(300):
        texts.append(random_words(rng.randint(1, 80), rng) + rng.choice(["", "!", " ", "\n", "  "]))
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))))
    return texts


class Exactness(unittest.TestCase):
    counter: TokenCounter

    @classmethod
    def setUpClass(cls) -> None:
        cls.counter = TokenCounter.gpt2()

    def test_the_shipped_tokenizer_takes_the_cached_path(self) -> None:
        self.assertTrue(self.counter.exact_cache)

    def test_counts_equal_encode_on_a_mixed_corpus(self) -> None:
        counter = self.counter
        for text in corpus():
            self.assertEqual(counter.count(text), counter.encode_count(text), repr(text))

    def kinds(self) -> list[Callable[[], TokenCounter]]:
        """Both ways of counting with the cache: the shipped merge table, and `tokenizers` batches."""
        tokenizer = self.counter.tokenizer
        return [TokenCounter.gpt2, lambda: TokenCounter(tokenizer)]

    def test_counts_are_exact_when_computed_fresh(self) -> None:
        for make in self.kinds():
            counter = make()
            for text in corpus():
                counter._cache.clear()
                counter._lead.clear()
                self.assertEqual(counter.count(text), counter.encode_count(text), repr(text))

    def test_counts_stay_exact_once_cached(self) -> None:
        counter = self.counter
        text = random_words(250, random.Random(1))
        first = counter.count(text)
        self.assertEqual(counter.count(text), first)
        self.assertEqual(first, counter.encode_count(text))

    def test_a_long_prompt_of_unseen_words_is_exact(self) -> None:
        counter = TokenCounter.gpt2()
        text = " ".join(word_list()[:5000])
        self.assertEqual(counter.count(text), counter.encode_count(text))

    def test_long_texts_counted_in_slices_are_exact(self) -> None:
        # Tiny slices, so that every kind of text crosses many slice ends:
        # cuts at spaces, stretches with no cut, runs of whitespace, CJK.
        rng = random.Random(3)
        texts = [
            "".join(corpus()),
            " ".join(corpus()),
            "日本語のテキスト、中文。" * 200,
            "word " * 300 + "x" * 700 + "  two  spaces \n\n " * 50,
            # Runs of spaces have merged tokens: a cut inside a run changes the count.
            "code:\n        indented    four     five\tx   y" * 100,
            "".join(rng.choice("ab \n\t'日1.") for _ in range(5000)),
        ]
        with mock.patch.object(tokens, "SLICE_CHARS", 64), mock.patch.object(tokens, "_CUT_SEARCH_CHARS", 256):
            for make in self.kinds():
                for text in texts:
                    counter = make()
                    self.assertEqual(counter.count(text), counter.encode_count(text), text[:80])
                    self.assertEqual(counter.count(text), counter.encode_count(text), text[:80])


class MergeTable(unittest.TestCase):
    """The count-only BPE of `pyworker.bpe` against `tokenizers` on single pre-tokens."""

    counter: TokenCounter

    @classmethod
    def setUpClass(cls) -> None:
        cls.counter = TokenCounter.gpt2()

    def encode(self, piece: str) -> int:
        return len(self.counter.tokenizer.encode(piece, add_special_tokens=False).ids)

    def test_random_pre_tokens_of_every_kind(self) -> None:
        rng = random.Random(7)
        alphabets = [
            "abcdefghijklmnopqrstuvwxyz",
            "ABCXYZ",
            "0123456789",
            "!?.,;:-_()[]{}'\"",
            " \n\t\r",
            "éèàüößçñ",
            "日本語中文字",
            "😀🎉🚀",
            "\x00\x01\x7f\x85\xa0\xad",
            "абвгд",
            "αβγ",
        ]
        bpe = self.counter._bpe
        assert bpe is not None
        for _ in range(3000):
            text = "".join(rng.choice(rng.choice(alphabets)) for _ in range(rng.randint(1, 24)))
            for piece in self.counter._split(text):
                self.assertEqual(bpe.count(piece), self.encode(piece), repr(piece))

    def test_every_word_of_the_word_list_with_a_leading_space(self) -> None:
        bpe = self.counter._bpe
        assert bpe is not None
        for word in word_list()[::7]:
            self.assertEqual(bpe.count(" " + word), self.encode(" " + word), word)

    def test_a_pre_token_too_long_for_the_table_is_counted_by_tokenizers(self) -> None:
        from pyworker.bpe import MAX_BPE_BYTES

        long_word = "ab" * MAX_BPE_BYTES
        counter = TokenCounter.gpt2()
        self.assertIsNone(counter._tokenizer.value, "tokenizers is loaded only when needed")
        self.assertEqual(counter.count(long_word), self.encode(long_word))
        self.assertIsNotNone(counter._tokenizer.value)

    def test_a_long_pre_token_counted_under_the_counters_lock_does_not_deadlock(self) -> None:
        # What `_count_by_spaces` does when another thread cleared the cache meanwhile:
        # `_get` under `_lock`, for a part long enough to need tokenizers.
        from pyworker.bpe import MAX_BPE_BYTES

        counter = TokenCounter.gpt2()
        long_word = " " + "ab" * MAX_BPE_BYTES
        got: list[int] = []

        def count_under_the_lock() -> None:
            with counter._lock:
                got.append(counter._get(long_word))

        worker = threading.Thread(target=count_under_the_lock, daemon=True)
        worker.start()
        worker.join(30)
        self.assertFalse(worker.is_alive(), "deadlocked on the counter's own lock")
        self.assertEqual(got, [self.encode(long_word)])

    def test_the_shipped_table_is_built_from_vocab_bpe(self) -> None:
        from pyworker.bpe import DATA_DIR, MERGE_TABLE, build_merge_table

        vocab = (DATA_DIR / "vocab.bpe").read_text(encoding="utf-8")
        self.assertEqual(MERGE_TABLE.read_bytes(), build_merge_table(vocab), "run scripts/make_merge_table.py")


class UnicodeTables(unittest.TestCase):
    def test_the_planes_skipped_hold_no_letter_or_number(self) -> None:
        # What lets the pre-tokenizer's classes be built from planes 0-3 and 14 alone.
        kept = set().union(*(set(plane) for plane in tokens._PLANES_WITH_LETTERS))
        for cp in range(sys.maxunicode + 1):
            if cp not in kept:
                self.assertNotIn(unicodedata.category(chr(cp))[0], "LN", hex(cp))

    def test_the_default_counter_builds_them_in_the_background(self) -> None:
        counter = TokenCounter.gpt2()
        self.assertIsNone(counter._unicode.value, "not built by loading")
        counter.prepare_unicode_in_background()
        wait = time.monotonic() + 30
        while counter._unicode.value is None and time.monotonic() < wait:
            time.sleep(0.01)
        self.assertIsNotNone(counter._unicode.value)
        self.assertEqual(counter.count("héllo wörld"), counter.encode_count("héllo wörld"))


class OwnTokenizer(unittest.TestCase):
    def test_a_tokenizer_with_a_normalizer_falls_back_to_encode(self) -> None:
        from tokenizers import Tokenizer

        base = TokenCounter.gpt2()
        spec = json.loads(base.tokenizer.to_str())
        spec["normalizer"] = {"type": "Lowercase"}
        tok = Tokenizer.from_str(json.dumps(spec))
        counter = TokenCounter(tok)
        self.assertFalse(counter.exact_cache)
        self.assertEqual(counter.count("HELLO World"), base.count("hello world"))

    def test_a_saved_byte_level_tokenizer_keeps_the_cached_path(self) -> None:
        base = TokenCounter.gpt2()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "tokenizer.json")
            base.tokenizer.save(path)
            counter = TokenCounter.from_file(path)
            self.assertTrue(counter.exact_cache)
            self.assertEqual(counter.count("any text at all"), base.count("any text at all"))

    def test_env_var_names_the_tokenizer_file(self) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers

        from pyworker.tokens import count_tokens

        # A model's own tokenizer, unlike GPT-2's: one token per whitespace-separated word.
        own = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
        own.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        text = "hello internationalization world antidisestablishmentarianism"
        gpt2 = TokenCounter.gpt2().count(text)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "tokenizer.json")
            own.save(path)
            old, TokenCounter._default.value = TokenCounter._default.value, None
            try:
                with mock.patch.dict(os.environ, {TOKENIZER_ENV: path}):
                    counted = count_tokens(text)
            finally:
                TokenCounter._default.value = old
        self.assertEqual(counted, len(own.encode(text, add_special_tokens=False).ids))
        self.assertEqual(counted, 4)
        self.assertNotEqual(counted, gpt2)

    def test_missing_tokenizer_file_is_named(self) -> None:
        old, TokenCounter._default.value = TokenCounter._default.value, None
        os.environ[TOKENIZER_ENV] = "/nonexistent/tokenizer.json"
        try:
            with self.assertRaises(FileNotFoundError) as ctx:
                TokenCounter.default()
            self.assertIn(TOKENIZER_ENV, str(ctx.exception))
        finally:
            del os.environ[TOKENIZER_ENV]
            TokenCounter._default.value = old


class WordList(unittest.TestCase):
    def test_word_list_is_english_words(self) -> None:
        words = word_list()
        self.assertGreater(len(words), 10_000)
        self.assertTrue(all(w.isalpha() and w.islower() for w in words))

    def test_random_words_gives_the_number_asked(self) -> None:
        self.assertEqual(len(random_words(250).split()), 250)


if __name__ == "__main__":
    unittest.main()
