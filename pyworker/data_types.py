"""The types a worker author writes against: `ApiPayload`, `AuthData`, `EndpointHandler`.

Their names and shapes are those of the original PyWorker guide; only the
insides differ (no aiohttp, no transformers).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Generic, TypeVar, cast

from .http import Request, Response, StreamResponse, UpstreamResponse
from .http.headers import passthrough_headers
from .validation import JsonDataException, from_dict

__all__ = ["ApiPayload", "AuthData", "EndpointHandler", "JsonDataException"]

# Model responses of known length up to this size are read whole and sent in
# one write; anything larger, of unknown length, or an event stream, streams.
INLINE_BODY_BYTES = 256 * 1024


class ApiPayload(abc.ABC):
    """The model API's request body, typed. Subclass it as a dataclass.

    `from_json_msg` has a default for dataclasses: it checks every field is
    present and of its annotated type (str, int, float, bool, list, dict,
    `X | None`), so a worker author usually writes only the four methods below.
    """

    @classmethod
    @abc.abstractmethod
    def for_test(cls) -> ApiPayload:
        """A realistic payload for benchmarks and load tests."""

    @abc.abstractmethod
    def generate_payload_json(self) -> dict[str, Any]:
        """The JSON body sent to the model server."""

    @abc.abstractmethod
    def count_workload(self) -> float:
        """The cost of this request in the unit of the benchmark (tokens for an LLM)."""

    @classmethod
    def from_json_msg(cls, json_msg: dict[str, Any]) -> ApiPayload:
        """Build the payload from the request's `payload` object.

        Raise `JsonDataException({field: reason, ...})` when it does not fit.
        """
        if not dataclasses.is_dataclass(cls):
            raise NotImplementedError(f"{cls.__name__} is not a dataclass: define from_json_msg")
        return from_dict(cls, json_msg)


@dataclasses.dataclass(frozen=True, slots=True)
class AuthData:
    """The fields the autoscaler adds to a routed request, signed by it."""

    cost: str | float
    endpoint: str
    reqnum: int
    request_idx: int
    signature: str
    url: str

    @classmethod
    def from_json_msg(cls, json_msg: dict[str, Any]) -> AuthData:
        return from_dict(cls, json_msg)


Payload_T = TypeVar("Payload_T", bound=ApiPayload)


@dataclasses.dataclass
class EndpointHandler(abc.ABC, Generic[Payload_T]):
    """How one worker route maps to one model server endpoint.

    `allow_parallel_requests` and `max_queue_time` left as None take the
    `Backend`'s values.
    """

    benchmark_runs: int = 8
    benchmark_words: int = 100
    allow_parallel_requests: bool | None = None
    max_queue_time: float | None = None

    # Keys of the request body besides "payload".
    AUTH_KEY: ClassVar[str] = "auth_data"
    PAYLOAD_KEY: ClassVar[str] = "payload"

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """The model server path requests are forwarded to, e.g. "/generate"."""

    @classmethod
    @abc.abstractmethod
    def payload_cls(cls) -> type[Payload_T]:
        """The `ApiPayload` subclass this route takes."""

    def generate_payload_json(self, payload: Payload_T) -> dict[str, Any]:
        """The JSON body sent to the model server for `payload`."""
        return payload.generate_payload_json()

    def make_benchmark_payload(self) -> Payload_T:
        """A payload for the benchmark; by default the payload class's `for_test()`."""
        payload = self.payload_cls().for_test()
        assert isinstance(payload, self.payload_cls())
        return payload

    def get_data_from_request(self, req_data: Any) -> tuple[AuthData, Payload_T]:
        """Split the request body into `AuthData` and the payload.

        Raises `JsonDataException` naming every bad field of both at once.
        """
        if not isinstance(req_data, dict):
            raise JsonDataException({"error": "request body must be a JSON object"})
        errors: dict[str, Any] = {}
        auth: AuthData | None = None
        payload: Payload_T | None = None
        for key in (self.AUTH_KEY, self.PAYLOAD_KEY):
            if key not in req_data:
                errors[key] = "missing parameter"
            elif not isinstance(req_data[key], dict):
                errors[key] = "expected a JSON object"
        if self.AUTH_KEY not in errors:
            try:
                auth = AuthData.from_json_msg(req_data[self.AUTH_KEY])
            except JsonDataException as exc:
                errors[self.AUTH_KEY] = exc.message
        if self.PAYLOAD_KEY not in errors:
            try:
                payload = cast(Payload_T, self.payload_cls().from_json_msg(req_data[self.PAYLOAD_KEY]))
            except JsonDataException as exc:
                errors[self.PAYLOAD_KEY] = exc.message
        if errors or auth is None or payload is None:
            raise JsonDataException(errors)
        return auth, payload

    async def generate_client_response(
        self, client_request: Request, model_response: UpstreamResponse
    ) -> Response | StreamResponse:
        """Turn the model's response into the client's.

        The default passes status, headers and body through; a streamed or
        large body goes out piece by piece as it arrives from the model.
        """
        headers = passthrough_headers(model_response.headers)
        length = model_response.content_length
        if not model_response.is_streaming and length is not None and length <= INLINE_BODY_BYTES:
            body = await model_response.read()
            return Response(body, status=model_response.status, headers=headers)
        if length is not None and not model_response.is_streaming:
            headers.append((b"content-length", b"%d" % length))
        res = StreamResponse(status=model_response.status, headers=headers)
        await res.prepare(client_request)
        async for chunk in model_response.iter_chunks():
            await res.write(chunk)
        await res.write_eof()
        return res
