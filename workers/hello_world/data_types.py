"""The model API's payload: a prompt and how many tokens to generate."""

from __future__ import annotations

import dataclasses
from typing import Any

from pyworker import ApiPayload, count_tokens, random_words


@dataclasses.dataclass
class InputData(ApiPayload):
    prompt: str
    max_response_tokens: int | None = None

    @classmethod
    def for_test(cls, words: int = 250) -> InputData:
        """A prompt of random English words, as benchmarks and load tests send."""
        return cls(prompt=random_words(words), max_response_tokens=300)

    def generate_payload_json(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies and costs more than the rest of the payload path.
        return {"prompt": self.prompt, "max_response_tokens": self.max_response_tokens}

    def count_workload(self) -> float:
        # Tokens in the prompt, by the tokenizer in PYWORKER_TOKENIZER (GPT-2's by default).
        return float(count_tokens(self.prompt))
