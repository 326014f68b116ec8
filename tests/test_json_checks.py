"""Client JSON that Python would parse but nothing downstream can use: bytes in, value or error out."""

from __future__ import annotations

import json
import unittest

from pyworker.http.json_checks import MAX_JSON_DEPTH, JsonBodyError, loads_checked


class LoadsChecked(unittest.TestCase):
    def refused(self, body: bytes) -> str:
        with self.assertRaises(JsonBodyError) as caught:
            loads_checked(body)
        message = str(caught.exception)
        message.encode("utf-8")  # the message itself is always valid text
        return message

    def test_deep_nesting_at_the_top_and_inside_a_field(self) -> None:
        self.assertIn("nested deeper", self.refused(b"[" * 100_000 + b"]" * 100_000))
        self.assertIn("nested deeper", self.refused(b'{"payload":{"p":' + b"[" * 1000 + b"]" * 1000 + b"}}"))
        limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
        self.assertIsInstance(loads_checked(limit), list)
        self.assertIn("nested deeper", self.refused(b"[" + limit + b"]"))

    def test_nesting_of_both_kinds_counts_both(self) -> None:
        # 40 of each: neither kind alone is over the limit, both together are.
        body = b'[{"a":' * 40 + b"1" + b"}]" * 40
        self.assertIn("nested deeper", self.refused(body))

    def test_many_brackets_but_shallow_is_accepted(self) -> None:
        body = json.dumps({"messages": [{"role": "user", "content": [{"type": "text"}]}] * 200}).encode()
        self.assertEqual(len(loads_checked(body)["messages"]), 200)

    def test_lone_surrogates_escaped_or_encoded(self) -> None:
        self.assertIn("at payload.prompt", self.refused(b'{"payload":{"prompt":"\\ud800"}}'))
        self.assertIn("\\udc00", self.refused(b'{"p":["ok","\\udc00"]}'))
        self.assertIn("at p[1]", self.refused(b'{"p":["ok","\\uDC00"]}'))
        self.assertIn("a key of a", self.refused(b'{"a":{"\\ud800":1}}'))
        self.assertIn("not valid UTF-8", self.refused(b'{"p":"\xed\xa0\x80"}'))
        self.assertIn("not valid UTF-8", self.refused(b'{"p":"\xff"}'))

    def test_surrogate_pairs_are_text(self) -> None:
        self.assertEqual(loads_checked(b'{"p":"\\ud83d\\ude00"}'), {"p": "\U0001f600"})

    def test_nan_and_infinity(self) -> None:
        for name in (b"NaN", b"Infinity", b"-Infinity"):
            self.assertIn("not JSON", self.refused(b'{"p":' + name + b"}"))

    def test_syntax_errors(self) -> None:
        self.assertIn("invalid JSON", self.refused(b"{nope"))
        self.assertIn("invalid JSON", self.refused(b""))


class JsonFragments(unittest.TestCase):
    """A large body's JSON for the model, escaped string by string: the same text as json.dumps."""

    def test_fragments_join_to_json_dumps(self) -> None:
        from unittest import mock

        from pyworker import backend

        cases: list[object] = [
            {"prompt": 'hello "q" \\ \n é \U0001f600', "n": 1, "l": ["short", "longer string", {"x": "yyyyyyy"}]},
            {"a": "\x00abc", "b": "\x00" * 10},
            ["abcdef", "ab", None, 1.5, True],
            "abcdefgh",
            {"k\x00": "v" * 10},
        ]
        with mock.patch.object(backend, "_BIG_STRING_CHARS", 5):
            for case in cases:
                fragments = backend.json_fragments(case)
                self.assertEqual("".join(fragments), json.dumps(case, separators=(",", ":")))
            self.assertGreater(len(backend.json_fragments(cases[0])), 1)  # the big strings stand apart


if __name__ == "__main__":
    unittest.main()
