"""Parsing request JSON into AuthData and payloads, with every bad field named."""

from __future__ import annotations

import dataclasses
import unittest
from typing import Any

from pyworker import JsonDataException
from pyworker.validation import from_dict
from tests.support import AUTH
from workers.hello_world.server import GenerateHandler


class RequestParsing(unittest.TestCase):
    handler = GenerateHandler()

    def errors(self, data: Any) -> Any:
        with self.assertRaises(JsonDataException) as ctx:
            self.handler.get_data_from_request(data)
        return ctx.exception.message

    def test_good_request_parses(self) -> None:
        auth, payload = self.handler.get_data_from_request(
            {"auth_data": AUTH, "payload": {"prompt": "hi", "max_response_tokens": 5}}
        )
        self.assertEqual(auth.request_idx, 1)
        self.assertEqual((payload.prompt, payload.max_response_tokens), ("hi", 5))

    def test_optional_field_may_be_absent_or_null(self) -> None:
        for payload in ({"prompt": "hi"}, {"prompt": "hi", "max_response_tokens": None}):
            _, parsed = self.handler.get_data_from_request({"auth_data": AUTH, "payload": payload})
            self.assertIsNone(parsed.max_response_tokens)

    def test_every_missing_field_is_named(self) -> None:
        auth = dict(AUTH)
        del auth["reqnum"], auth["signature"]
        errors = self.errors({"auth_data": auth, "payload": {}})
        self.assertEqual(
            errors,
            {
                "auth_data": {"reqnum": "missing parameter", "signature": "missing parameter"},
                "payload": {"prompt": "missing parameter"},
            },
        )

    def test_wrong_types_are_named(self) -> None:
        errors = self.errors(
            {"auth_data": dict(AUTH, reqnum="7"), "payload": {"prompt": 3, "max_response_tokens": "ten"}}
        )
        self.assertEqual(errors["auth_data"], {"reqnum": "expected int, got str"})
        self.assertEqual(errors["payload"]["prompt"], "expected str, got int")
        self.assertIn("expected int or null", errors["payload"]["max_response_tokens"])

    def test_bool_is_not_an_int(self) -> None:
        errors = self.errors({"auth_data": AUTH, "payload": {"prompt": "x", "max_response_tokens": True}})
        self.assertIn("max_response_tokens", errors["payload"])

    def test_missing_sections(self) -> None:
        self.assertEqual(self.errors({}), {"auth_data": "missing parameter", "payload": "missing parameter"})
        self.assertEqual(
            self.errors({"auth_data": [], "payload": "x"}),
            {"auth_data": "expected a JSON object", "payload": "expected a JSON object"},
        )
        self.assertIn("error", self.errors([1, 2]))


@dataclasses.dataclass
class Mixed:
    ratio: float
    anything: Any
    custom: frozenset[int]  # no JSON type: taken as it comes
    tags: list[str] | None = None


class FieldTypes(unittest.TestCase):
    def test_each_annotation_admits_its_json_types(self) -> None:
        for ratio in (1, 0.5):
            parsed = from_dict(Mixed, {"ratio": ratio, "anything": [1], "custom": "x", "tags": None})
            self.assertEqual((parsed.ratio, parsed.anything, parsed.custom, parsed.tags), (ratio, [1], "x", None))
        for anything in (None, True, {"a": 1}):
            self.assertEqual(from_dict(Mixed, {"ratio": 1, "anything": anything, "custom": 2}).anything, anything)

    def test_every_bad_field_is_named_with_what_it_needs(self) -> None:
        with self.assertRaises(JsonDataException) as ctx:
            from_dict(Mixed, {"ratio": True, "tags": {"a": 1}}, where="payload")
        self.assertEqual(
            ctx.exception.message,
            {
                "payload": {
                    "ratio": "expected number, got bool",
                    "anything": "missing parameter",
                    "custom": "missing parameter",
                    "tags": "expected list or null, got dict",
                }
            },
        )


if __name__ == "__main__":
    unittest.main()
