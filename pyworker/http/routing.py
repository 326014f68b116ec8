"""Routes: which handler answers which method and path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .messages import Request, Response, StreamResponse, json_response

Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    """`handler` answers `method` requests to exactly `path`."""

    method: str
    path: str
    handler: Handler


def get(path: str, handler: Handler) -> Route:
    """A GET route, as aiohttp's `web.get`."""
    return Route("GET", path, handler)


def post(path: str, handler: Handler) -> Route:
    """A POST route, as aiohttp's `web.post`."""
    return Route("POST", path, handler)


class Router:
    """Exact-path lookup; a miss is a ready 404 or 405 response."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._table: dict[str, dict[str, Handler]] = {}
        for route in routes:
            methods = self._table.setdefault(route.path, {})
            method = route.method.upper()
            if method in methods:
                raise ValueError(f"two handlers for {method} {route.path}")
            methods[method] = route.handler

    def resolve(self, method: str, path: str) -> Handler | Response:
        methods = self._table.get(path)
        if methods is None:
            return json_response({"error": f"no route for {path}"}, status=404)
        handler = methods.get(method)
        if handler is None:
            allow = ", ".join(sorted(methods))
            return json_response(
                {"error": f"method {method} not allowed for {path}; allowed: {allow}"},
                status=405,
                headers=[("allow", allow)],
            )
        return handler

    @property
    def paths(self) -> list[str]:
        return sorted(self._table)
