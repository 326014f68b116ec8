"""Payloads of the OpenAI-compatible API: `/v1/completions`, `/v1/chat/completions`, `/v1/embeddings`.

The fields the worker relies on are checked (a wrong type is a 422 naming
the field, before anything reaches the model); every other field passes
through untouched, so server-specific options (`top_k`, `ignore_eos`,
`cache_prompt`, ...) keep working.

Workload = prompt tokens + the generation length asked for (`max_tokens`, or
`max_completion_tokens`, or `OPENAI_DEFAULT_MAX_TOKENS` when neither is
given): the tokens the model may process for the request. Chat messages add
`CHAT_TOKENS_PER_MESSAGE` each for the role markers of the chat template.
Embeddings generate nothing: their workload is the tokens of `input`
(strings counted, token-id lists by their length).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pyworker import ApiPayload, JsonDataException, count_tokens, random_words
from pyworker.config import env_int
from pyworker.validation import json_type_name

CHAT_TOKENS_PER_MESSAGE = 4


def default_max_tokens() -> int:
    return env_int(os.environ, "OPENAI_DEFAULT_MAX_TOKENS", 256, minimum=1)


def _int_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


class OpenAIPayload(ApiPayload):
    """The request body as received (a dict), checked; subclasses say what must be in it."""

    BENCHMARK_WORDS: ClassVar[int] = 100

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    @classmethod
    def from_json_msg(cls, json_msg: dict[str, Any]) -> OpenAIPayload:
        """The payload, or `JsonDataException` naming every field that does not fit."""
        if not isinstance(json_msg, dict):
            raise JsonDataException({"payload": "expected a JSON object"})
        errors = cls.common_errors(json_msg)
        errors.update(cls.own_errors(json_msg))
        if errors:
            raise JsonDataException(errors)
        return cls(json_msg)

    @classmethod
    def own_errors(cls, body: dict[str, Any]) -> dict[str, str]:
        """What is wrong with the fields this endpoint needs (each subclass says)."""
        raise NotImplementedError

    @classmethod
    def common_errors(cls, body: dict[str, Any]) -> dict[str, str]:
        errors: dict[str, str] = {}
        for field in ("max_tokens", "max_completion_tokens", "n", "seed"):
            if field in body and not _int_or_null(body[field]):
                errors[field] = f"expected a whole number >= 0 or null, got {json_type_name(body[field])}"
        for field in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
            if field in body and not _number_or_null(body[field]):
                errors[field] = f"expected a number or null, got {json_type_name(body[field])}"
        if "stream" in body and not isinstance(body["stream"], (bool, type(None))):
            errors["stream"] = f"expected true or false, got {json_type_name(body['stream'])}"
        if "model" in body and not isinstance(body["model"], (str, type(None))):
            errors["model"] = f"expected a string, got {json_type_name(body['model'])}"
        stop = body.get("stop")
        if (
            stop is not None
            and not isinstance(stop, str)
            and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
        ):
            errors["stop"] = "expected a string or a list of strings"
        return errors

    @property
    def streaming(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def max_new_tokens(self) -> int:
        for field in ("max_completion_tokens", "max_tokens"):
            value = self.body.get(field)
            if isinstance(value, int):
                return value
        return default_max_tokens()

    def prompt_tokens(self) -> int:
        raise NotImplementedError

    def count_workload(self) -> float:
        return float(self.prompt_tokens() + self.max_new_tokens)

    def generate_payload_json(self) -> dict[str, Any]:
        return self.body


class CompletionPayload(OpenAIPayload):
    """`/v1/completions`: `prompt` is a string, a list of strings, or token ids."""

    @classmethod
    def own_errors(cls, body: dict[str, Any]) -> dict[str, str]:
        errors: dict[str, str] = {}
        prompt = body.get("prompt")
        if "prompt" not in body:
            errors["prompt"] = "missing parameter"
        elif not (
            isinstance(prompt, str)
            or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt))
            or (isinstance(prompt, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt))
        ):
            errors["prompt"] = "expected a string, a list of strings or a list of token ids"
        return errors

    def prompt_tokens(self) -> int:
        prompt = self.body["prompt"]
        if isinstance(prompt, str):
            return count_tokens(prompt)
        if prompt and isinstance(prompt[0], int):
            return len(prompt)
        return sum(count_tokens(p) for p in prompt)

    @classmethod
    def for_test(cls) -> CompletionPayload:
        return cls.benchmark(cls.BENCHMARK_WORDS, 128)

    @classmethod
    def benchmark(cls, words: int, max_tokens: int, extra: dict[str, Any] | None = None) -> CompletionPayload:
        body: dict[str, Any] = {"prompt": random_words(words), "max_tokens": max_tokens, "temperature": 0}
        body.update(extra or {})
        return cls(body)


class ChatPayload(OpenAIPayload):
    """`/v1/chat/completions`: `messages` is a list of `{role, content}` objects."""

    @classmethod
    def own_errors(cls, body: dict[str, Any]) -> dict[str, str]:
        errors: dict[str, str] = {}
        messages = body.get("messages")
        if "messages" not in body:
            errors["messages"] = "missing parameter"
        elif not isinstance(messages, list) or not messages:
            errors["messages"] = f"expected a non-empty list of messages, got {json_type_name(messages)}"
        else:
            for i, message in enumerate(messages):
                if not isinstance(message, dict):
                    errors[f"messages[{i}]"] = "expected an object with role and content"
                    continue
                if not isinstance(message.get("role"), str):
                    errors[f"messages[{i}].role"] = "expected a string"
                content = message.get("content")
                if not (content is None or isinstance(content, (str, list))):
                    errors[f"messages[{i}].content"] = "expected a string, a list of parts or null"
        return errors

    def prompt_tokens(self) -> int:
        total = 0
        for message in self.body["messages"]:
            total += CHAT_TOKENS_PER_MESSAGE
            content = message.get("content")
            if isinstance(content, str):
                total += count_tokens(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        total += count_tokens(part["text"])
        return total

    @classmethod
    def for_test(cls) -> ChatPayload:
        return cls(
            {
                "messages": [{"role": "user", "content": random_words(cls.BENCHMARK_WORDS)}],
                "max_tokens": 128,
                "temperature": 0,
            }
        )


class EmbeddingsPayload(OpenAIPayload):
    """`/v1/embeddings`: `input` is a string, a list of strings, token ids, or lists of token ids."""

    @classmethod
    def own_errors(cls, body: dict[str, Any]) -> dict[str, str]:
        errors: dict[str, str] = {}
        if "input" not in body:
            errors["input"] = "missing parameter"
        elif not _is_embedding_input(body["input"]):
            errors["input"] = "expected a string, a list of strings, a list of token ids or a list of those"
        fmt = body.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            errors["encoding_format"] = "expected float or base64"
        if "dimensions" in body and not _int_or_null(body["dimensions"]):
            errors["dimensions"] = f"expected a whole number >= 0 or null, got {json_type_name(body['dimensions'])}"
        return errors

    def prompt_tokens(self) -> int:
        value = self.body["input"]
        if isinstance(value, str):
            return count_tokens(value)
        total = 0
        for item in value:
            if isinstance(item, str):
                total += count_tokens(item)
            elif isinstance(item, list):
                total += len(item)
            else:
                total += 1  # one token id of a flat list
        return total

    def count_workload(self) -> float:
        return float(self.prompt_tokens())

    @classmethod
    def for_test(cls) -> EmbeddingsPayload:
        return cls.benchmark(cls.BENCHMARK_WORDS)

    @classmethod
    def benchmark(cls, words: int, extra: dict[str, Any] | None = None) -> EmbeddingsPayload:
        body: dict[str, Any] = {"input": random_words(words)}
        body.update(extra or {})
        return cls(body)


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _is_embedding_input(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    return all(isinstance(v, str) for v in value) or _token_ids(value) or all(_token_ids(v) for v in value)
