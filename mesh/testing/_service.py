"""A mock HTTP service for executors under test: JSON routes answered in memory, calls recorded."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["MockService", "ServiceCall"]


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One request the service received."""

    method: str
    path: str
    params: Mapping[str, str]
    """Query parameters."""
    body: Any
    """The JSON body, or None."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers, lower-cased names (``authorization`` and ``x-api-key`` are not kept)."""

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header, if the call sent one."""
        return self.headers.get("idempotency-key")


Handler = Callable[[ServiceCall], Any]
"""Answers a call: a JSON-able value (200), or an ``httpx.Response`` for any other status."""

_NOT_KEPT = frozenset({"authorization", "x-api-key"})


class MockService:
    """An HTTP service that executors reach through ``ctx.resource("http")``, with no socket.

    Built on ``httpx.MockTransport``: ``client()`` is a real ``httpx.AsyncClient`` whose requests
    are answered by the routes registered with ``route``. Every call is recorded in ``calls``;
    ``duplicate_effects`` counts idempotency keys sent more than once to an effect route, so a
    test can assert that a replayed turn acted once.
    """

    def __init__(self, base_url: str = "http://mock.service") -> None:
        """A service reachable at ``base_url`` (never resolved: no network is involved)."""
        self.base_url = base_url.rstrip("/")
        self.calls: list[ServiceCall] = []
        """Every call, in order."""
        self._routes: dict[tuple[str, str], tuple[Handler, bool]] = {}

    def route(self, method: str, path: str, answer: Handler | Any, *, effect: bool = False) -> None:
        """Answer ``method path`` with ``answer`` (a value, or a handler called with the ``ServiceCall``).

        ``effect=True`` marks a side effect: its idempotency keys are counted by ``duplicate_effects``.
        """
        if callable(answer):
            handler: Handler = answer
        else:

            def handler(_call: ServiceCall, _value: Any = answer) -> Any:
                return _value

        self._routes[(method.upper(), path)] = (handler, effect)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A client whose requests this service answers (``kwargs`` go to ``httpx.AsyncClient``)."""
        return httpx.AsyncClient(
            transport=httpx.MockTransport(self._handle), base_url=self.base_url, **kwargs
        )

    def calls_to(self, method: str, path: str) -> list[ServiceCall]:
        """The calls made to one route."""
        return [c for c in self.calls if c.method == method.upper() and c.path == path]

    @property
    def duplicate_effects(self) -> int:
        """Calls to effect routes that repeated an idempotency key already seen."""
        keys = Counter(
            (c.method, c.path, c.idempotency_key)
            for c in self.calls
            if c.idempotency_key and self._routes.get((c.method, c.path), (None, False))[1]
        )
        return sum(n - 1 for n in keys.values())

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body: Any = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = request.content.decode(errors="replace")
        call = ServiceCall(
            method=request.method,
            path=request.url.path,
            params=dict(request.url.params),
            body=body,
            headers={
                k.lower(): v for k, v in request.headers.items() if k.lower() not in _NOT_KEPT
            },
        )
        self.calls.append(call)
        route = self._routes.get((call.method, call.path))
        if route is None:
            return httpx.Response(
                404, json={"error": "no_route", "detail": f"{call.method} {call.path}"}
            )
        answer = route[0](call)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)
