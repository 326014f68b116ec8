"""pyworker: a small, fast worker in front of an AI model server.

A worker module declares its payload types and endpoint handlers and a
`Backend`, then calls `start_server(backend, routes)` (or is run with
`python -m pyworker <module>`).
"""

from ._version import __version__
from .backend import Backend, LogAction
from .data_types import ApiPayload, AuthData, EndpointHandler, JsonDataException
from .http import (
    HTTPError,
    Request,
    Response,
    Route,
    StreamResponse,
    UpstreamResponse,
    get,
    json_response,
    post,
)
from .run import start_server
from .tokens import TokenCounter, count_tokens
from .words import random_words

__all__ = [
    "ApiPayload",
    "AuthData",
    "Backend",
    "EndpointHandler",
    "HTTPError",
    "JsonDataException",
    "LogAction",
    "Request",
    "Response",
    "Route",
    "StreamResponse",
    "TokenCounter",
    "__version__",
    "UpstreamResponse",
    "count_tokens",
    "get",
    "json_response",
    "post",
    "random_words",
    "start_server",
]
