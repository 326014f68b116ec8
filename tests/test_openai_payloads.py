"""The OpenAI worker's payloads: what each counts as workload, and what is refused."""

from __future__ import annotations

import unittest

from pyworker import JsonDataException, count_tokens
from workers.openai.data_types import ChatPayload, CompletionPayload, EmbeddingsPayload


class Workload(unittest.TestCase):
    def test_embeddings_count_their_input_and_generate_nothing(self) -> None:
        text = "The three primary colors are red, yellow and blue."
        self.assertEqual(EmbeddingsPayload.from_json_msg({"input": text}).count_workload(), count_tokens(text))
        both = EmbeddingsPayload.from_json_msg({"input": [text, "red"]})
        self.assertEqual(both.count_workload(), count_tokens(text) + count_tokens("red"))
        self.assertEqual(EmbeddingsPayload.from_json_msg({"input": [1, 2, 3]}).count_workload(), 3)
        self.assertEqual(EmbeddingsPayload.from_json_msg({"input": [[1, 2], [3]]}).count_workload(), 3)
        self.assertEqual(
            EmbeddingsPayload.from_json_msg({"input": text, "max_tokens": 99}).count_workload(),
            count_tokens(text),
            "max_tokens means nothing to embeddings",
        )

    def test_completions_and_chat_count_prompt_and_length_asked(self) -> None:
        completion = CompletionPayload.from_json_msg({"prompt": "Hello there", "max_tokens": 10})
        self.assertEqual(completion.count_workload(), count_tokens("Hello there") + 10)
        chat = ChatPayload.from_json_msg({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
        self.assertEqual(chat.count_workload(), 4 + count_tokens("Hi") + 5)


class Refusals(unittest.TestCase):
    def test_embeddings_input_of_the_wrong_shape_names_the_field(self) -> None:
        for body, field in (
            ({}, "input"),
            ({"input": 5}, "input"),
            ({"input": []}, "input"),
            ({"input": ["a", 1]}, "input"),
            ({"input": [[1], "a"]}, "input"),
            ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
            ({"input": "a", "dimensions": -1}, "dimensions"),
        ):
            with self.subTest(body=body), self.assertRaises(JsonDataException) as caught:
                EmbeddingsPayload.from_json_msg(body)
            self.assertIn(field, caught.exception.message)


if __name__ == "__main__":
    unittest.main()
