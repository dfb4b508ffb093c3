"""The fleet's REST endpoints: the live pools, and pausing and limiting run types.

GET  /api/v1/workers                 every pool seen lately, live or lost
GET  /api/v1/types                   the paused and limited types
POST /api/v1/types/{type}/pause      stop claiming it in every pool
POST /api/v1/types/{type}/resume     claim it again (pools are woken)
PUT  /api/v1/types/{type}/limits     {"concurrency": 3, "rate": "100/m"}: what is given is
                                     set (null removes it), what is absent is kept
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import ValidationError
from .fleet import Fleet
from .guard import json_response

Call = Callable[..., Awaitable[Any]]
Body = Callable[[Request], Awaitable[dict[str, Any]]]
LIMITS = ("concurrency", "rate")


class FleetEndpoints:
    def __init__(self, fleet: Fleet, call: Call, body: Body) -> None:
        self.fleet = fleet
        self.call = call  # runs a blocking call off the event loop
        self.body = body  # the request's JSON object, size-checked

    def routes(self, v1: str) -> list[Route]:
        # {type:path}: a type name may hold a slash
        return [
            Route(f"{v1}/workers", self.workers, methods=["GET"]),
            Route(f"{v1}/types", self.controls, methods=["GET"]),
            Route(f"{v1}/types/{{type:path}}/pause", self.pause, methods=["POST"]),
            Route(f"{v1}/types/{{type:path}}/resume", self.resume, methods=["POST"]),
            Route(f"{v1}/types/{{type:path}}/limits", self.limit, methods=["PUT"]),
        ]

    async def workers(self, request: Request) -> Response:
        pools = await self.call(self.fleet.pools)
        return json_response([pool.to_dict() for pool in pools])

    async def controls(self, request: Request) -> Response:
        controls = await self.call(self.fleet.controls)
        return json_response([control.to_dict() for control in controls])

    async def pause(self, request: Request) -> Response:
        control = await self.call(self.fleet.pause, request.path_params["type"])
        return json_response(control.to_dict())

    async def resume(self, request: Request) -> Response:
        control = await self.call(self.fleet.resume, request.path_params["type"])
        return json_response(control.to_dict())

    async def limit(self, request: Request) -> Response:
        data = await self.body(request)
        unknown = sorted(set(data) - set(LIMITS))
        if unknown or not data:
            raise ValidationError(f"give concurrency and/or rate (unknown: {', '.join(unknown)})")
        given = {name: data[name] for name in LIMITS if name in data}
        control = await self.call(self.fleet.limit, request.path_params["type"], **given)
        return json_response(control.to_dict())
