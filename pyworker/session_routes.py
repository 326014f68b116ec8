"""The `/session/*` routes (PROTOCOL.md § Sessions), added to every worker.

`/session/create` is a routed request: its `auth_data` is verified like any
request's (401), then the session is stored unless `max_sessions` are open
(429, empty body). It is not queued, not limited by `max_queue_time` and
answered before the model is ready.

`/session/get`, `/session/health` and `/session/end` name a session and show
its `auth_data` as `session_auth`. A `session_auth` that is not the
session's, and an unknown id, get the same answer; one whose signature does
not verify gets 401, so a caller without a signature learns nothing about ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backend import Backend
from .http import HTTPError, Request, Response, Route, json_response, post
from .http.json_checks import JsonBodyError, loads_checked
from .sessions import Session, SessionsFull, parse_create
from .validation import JsonDataException

CREATE = "/session/create"
GET = "/session/get"
HEALTH = "/session/health"
END = "/session/end"

_INVALID_AUTH = {"error": "session_auth is not valid"}


class SessionRoutes:
    """The handlers of the session routes, over one backend's sessions."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def routes(self) -> list[Route]:
        return [
            post(CREATE, self.create),
            post(GET, self.get),
            post(HEALTH, self.health),
            post(END, self.end),
        ]

    def _body(self, request: Request) -> Any:
        try:
            return loads_checked(request.body, self.backend.max_json_depth)
        except JsonBodyError:
            raise HTTPError(422, "invalid JSON") from None

    async def create(self, request: Request) -> Response:
        data = self._body(request)
        try:
            ask = parse_create(data)
        except JsonDataException as exc:
            return json_response(exc.message, status=422)
        refusal = self.backend.check_signature(ask.auth_json)
        if refusal is not None:
            return json_response({"error": refusal}, status=401)
        try:
            session = self.backend.sessions.open(ask)
        except SessionsFull:
            return Response(b"", status=429)
        return json_response({"session_id": session.session_id, "expiration": session.expiration}, status=201)

    async def _named(self, request: Request, answer: Callable[[Session | None, str], Response]) -> Response:
        """Find the session a get/health/end body names; `answer` gets it (None: unknown) and the id."""
        data = self._body(request)
        if not isinstance(data, dict):
            return json_response({"error": "request body must be a JSON object"}, status=422)
        session_id = data.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            return json_response({"error": "missing session_id"}, status=422)
        auth = data.get("session_auth")
        if not isinstance(auth, dict):
            return json_response(_INVALID_AUTH, status=401)
        session = self.backend.sessions.find(session_id, auth)
        if session is None and self.backend.check_signature(auth, replay_check=False) is not None:
            return json_response(_INVALID_AUTH, status=401)
        return answer(session, session_id)

    async def get(self, request: Request) -> Response:
        def answer(session: Session | None, _: str) -> Response:
            if session is None:
                return json_response({"error": "session does not exist"}, status=400)
            return json_response(session.to_json())

        return await self._named(request, answer)

    async def health(self, request: Request) -> Response:
        return await self._named(request, lambda session, _: json_response({"ok": session is not None}))

    async def end(self, request: Request) -> Response:
        def answer(session: Session | None, session_id: str) -> Response:
            if session is None:
                return json_response({"error": f"session with id {session_id} not found"}, status=400)
            self.backend.sessions.close(session, "ended")
            return json_response({"ended": True, "removed_session": session_id})

        return await self._named(request, answer)


def end_only(routes: SessionRoutes) -> list[Route]:
    """The routes of the plain-HTTP listener for processes on the instance."""
    return [post(END, routes.end)]
