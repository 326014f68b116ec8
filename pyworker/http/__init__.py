"""Our HTTP/1.1 server and client, both framed by h11."""

from .client import (
    ClientLimits,
    ConnectionPool,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnhealthy,
)
from .messages import HTTPError, Request, Response, StreamResponse, json_response
from .routing import Handler, Route, get, post
from .server import ClientDisconnected, HTTPServer, ResponseAborted, ServerLimits

__all__ = [
    "ClientDisconnected",
    "ClientLimits",
    "ConnectionPool",
    "HTTPError",
    "HTTPServer",
    "Handler",
    "Request",
    "Response",
    "ResponseAborted",
    "Route",
    "ServerLimits",
    "StreamResponse",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "UpstreamUnhealthy",
    "get",
    "json_response",
    "post",
]
