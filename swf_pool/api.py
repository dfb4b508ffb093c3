"""The REST API: the Go server's endpoints under /api/v1, with its defects fixed; and the
dashboard (`dashboard.py`) at /.

A Starlette app over the same `Client` as everything else (no second data-access path).
Client errors are 4xx with `{"error": "..."}`; a 500 happens only for a real fault and is
logged with the request id that the response carries. `X-API-Key` (optional, compared in
constant time) guards everything except /health and /openapi.json. Needs `swf-pool[api]`.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .api_fleet import FleetEndpoints
from .client import MAX_LIST_LIMIT, Client
from .dashboard import Dashboard
from .errors import ConfigError, DatabaseError, RunNotFound
from .fleet import Fleet
from .guard import ClientError, Guard, default_hosts, error, json_response, not_allowed, not_found
from .metrics import PrometheusMetrics
from .migrate import ensure_ready
from .models import DEFAULT_LIST_LIMIT
from .openapi import spec
from .ticker import TickerThread
from .tracebacks import run_view
from .waiting import FINISHED, MAX_WAIT_SECONDS

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "default_hosts"]
log = logging.getLogger("swf_pool.api")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# request bodies: what each accepts (anything else is ignored, as the Go server does)
SUBMIT_FIELDS = ("payload", "priority", "idempotency_key", "max_attempts")
SCHEDULE_FIELDS = ("payload", "timezone", "priority", "max_attempts", "missed", "catch_up_limit")
UPDATE_FIELDS = ("cron", *SCHEDULE_FIELDS)
UNSET_BY_ZERO = ("priority", "max_attempts")


class Endpoints:
    """The handlers, over one `Client`."""

    def __init__(self, client: Client, max_body_bytes: int, secured: bool) -> None:
        self.client = client
        self.max_body_bytes = max_body_bytes
        self.metrics = PrometheusMetrics()
        self.document = orjson.dumps(spec(secured))
        self.schedules_changed: Callable[[], None] = lambda: None  # wakes our ticker, if any

    async def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking Client call off the event loop."""
        return await run_in_threadpool(func, *args, **kwargs)

    async def body(self, request: Request) -> dict[str, Any]:
        size = 0
        chunks = []
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ClientError(413, f"request body larger than {self.max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            value = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise ClientError(400, f"malformed JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ClientError(400, "the request body must be a JSON object")
        return value

    def routes(self) -> list[Route]:
        v1 = "/api/v1"
        return [
            Route(f"{v1}/workflows", self.submit, methods=["POST"]),
            Route(f"{v1}/workflows", self.list_runs, methods=["GET"]),
            Route(f"{v1}/workflows/{{id}}", self.get_run, methods=["GET"]),
            Route(f"{v1}/workflows/{{id}}", self.cancel_run, methods=["DELETE"]),
            Route(f"{v1}/workflows/{{id}}/events", self.run_events, methods=["GET"]),
            Route(f"{v1}/workflows/{{id}}/retry", self.retry_run, methods=["POST"]),
            Route(f"{v1}/schedules", self.create_schedule, methods=["POST"]),
            Route(f"{v1}/schedules", self.list_schedules, methods=["GET"]),
            Route(f"{v1}/schedules/{{id}}", self.update_schedule, methods=["PATCH"]),
            Route(f"{v1}/schedules/{{id}}", self.delete_schedule, methods=["DELETE"]),
            Route(f"{v1}/schedules/{{id}}/pause", self.pause_schedule, methods=["PATCH"]),
            Route(f"{v1}/schedules/{{id}}/resume", self.resume_schedule, methods=["PATCH"]),
            Route(f"{v1}/health", self.health, methods=["GET"]),
            Route(f"{v1}/stats", self.stats, methods=["GET"]),
            Route(f"{v1}/metrics", self.prometheus, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *FleetEndpoints(Fleet(self.client.backend), self.call, self.body).routes(v1),
        ]

    # -- runs ---------------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        data = await self.body(request)
        _required(data, "type")
        options = _picked(data, SUBMIT_FIELDS)
        if data.get("run_after") is not None:
            options["run_at"] = _timestamp("run_after", data["run_after"])
        submitted = await self.call(self.client.submit, data["type"], **options)
        if not submitted.created:
            return error(
                409,
                f"a run with idempotency key {data['idempotency_key']!r} already exists",
                id=submitted.id,
            )
        return json_response({"id": submitted.id}, 201)

    async def list_runs(self, request: Request) -> Response:
        query = request.query_params
        found = await self.call(
            self.client.list,
            type=query.get("type") or None,
            status=query.get("status") or None,
            idempotency_key=query.get("idempotency_key") or None,
            created_after=_time_query(query, "created_after"),
            created_before=_time_query(query, "created_before"),
            limit=min(_int(query, "limit", DEFAULT_LIST_LIMIT), MAX_LIST_LIMIT),
            offset=_int(query, "offset", 0),
        )
        return json_response(found)

    async def get_run(self, request: Request) -> Response:
        """With `?wait=SECONDS`, a long poll: the run as soon as it has finished, or as it is
        when the seconds are up (the waits of every request share the client's listener)."""
        run_id = _uuid(request)
        wait = _wait_seconds(request.query_params.get("wait"))

        async def read() -> dict[str, Any] | None:
            found: dict[str, Any] | None = await self.call(run_view, self.client, run_id)
            return found

        if wait:
            run = await self.client.waits.until_async(run_id, read, _finished, wait)
        else:
            run = await read()
        if run is None:
            raise RunNotFound(f"workflow run {run_id} not found")
        return json_response(run)

    async def run_events(self, request: Request) -> Response:
        run_id = _uuid(request)
        if await self.call(self.client.get, run_id) is None:
            raise RunNotFound(f"workflow run {run_id} not found")
        return json_response(await self.call(self.client.events, run_id))

    async def cancel_run(self, request: Request) -> Response:
        await self.call(self.client.cancel, _uuid(request))
        return json_response({"status": "cancelled"})

    async def retry_run(self, request: Request) -> Response:
        await self.call(self.client.retry, _uuid(request))
        return json_response({"status": "pending"})

    # -- schedules ----------------------------------------------------------------------------

    async def create_schedule(self, request: Request) -> Response:
        data = await self.body(request)
        _required(data, "type", "cron")
        options = _picked(data, SCHEDULE_FIELDS)
        schedule_id = await self.call(
            self.client.schedule, data["type"], cron=data["cron"], **options
        )
        self.schedules_changed()
        return json_response({"id": schedule_id}, 201)

    async def list_schedules(self, request: Request) -> Response:
        return json_response(await self.call(self.client.schedules.list))

    async def update_schedule(self, request: Request) -> Response:
        schedule_id = _uuid(request)
        changes = _picked(await self.body(request), UPDATE_FIELDS)
        updated = await self.call(self.client.schedules.update, schedule_id, **changes)
        self.schedules_changed()
        return json_response(updated)

    async def pause_schedule(self, request: Request) -> Response:
        await self.call(self.client.schedules.pause, _uuid(request))
        return json_response({"status": "paused"})

    async def resume_schedule(self, request: Request) -> Response:
        await self.call(self.client.schedules.resume, _uuid(request))
        self.schedules_changed()
        return json_response({"status": "resumed"})

    async def delete_schedule(self, request: Request) -> Response:
        await self.call(self.client.schedules.delete, _uuid(request))
        return json_response({"status": "deleted"})

    # -- operations ---------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        try:  # the database answers and the schema is migrated
            await self.call(ensure_ready, self.client.backend)
        except DatabaseError as exc:
            log.warning("health check failed: %s", exc)
            return error(503, "database unhealthy")
        return json_response({"status": "ok"})

    async def stats(self, request: Request) -> Response:
        return json_response((await self.call(self.client.stats)).to_json())

    async def prometheus(self, request: Request) -> Response:
        self.metrics.record_queue_stats(await self.call(self.client.stats))
        self.metrics.record_pools(await self.call(self.client.fleet.pools))
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        return Response(self.document, media_type="application/json")


def create_app(
    client: Client,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    schedules: bool = False,
    allowed_hosts: Sequence[str] = ("*",),
) -> Starlette:
    """The ASGI app. `client` stays open for the app's life (the caller closes it); with
    `schedules`, a schedule ticker runs for as long as the app does. `allowed_hosts`: the
    host names it answers to (`*`: any)."""
    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key must not be empty (leave it out for no key)")
    endpoints = Endpoints(client, max_body_bytes, api_key is not None)
    dashboard = Dashboard(client, endpoints.call, api_key)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not schedules:
            yield
            return
        with TickerThread(client) as ticker:
            endpoints.schedules_changed = ticker.ticker.wake  # SQLite has no NOTIFY
            yield

    app = Starlette(
        routes=[*endpoints.routes(), *dashboard.routes()],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed},
    )
    app.add_middleware(Guard, api_key=api_key, allowed_hosts=allowed_hosts)
    return app


def _required(data: dict[str, Any], *names: str) -> None:
    missing = [name for name in names if data.get(name) is None]
    if missing:
        raise ClientError(400, f"missing required field(s): {', '.join(missing)}")


def _picked(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The fields given. A `priority` or `max_attempts` of 0 means "not set" (the default,
    100 and 3), as on the Go server, whose clients send 0 for a field they leave out."""
    return {
        name: data[name]
        for name in names
        if data.get(name) is not None and not (name in UNSET_BY_ZERO and _zero(data[name]))
    }


def _finished(view: dict[str, Any]) -> bool:
    return view["status"] in FINISHED


def _wait_seconds(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT_SECONDS:  # also refuses nan
        raise ClientError(400, f"wait must be seconds from 0 to {MAX_WAIT_SECONDS:g}, got {text!r}")
    return seconds


def _zero(value: object) -> bool:
    return type(value) is int and value == 0


def _uuid(request: Request) -> str:
    text = str(request.path_params["id"])
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ClientError(400, f"id must be a UUID, got {text!r}") from None


def _int(query: Any, name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ClientError(400, f"{name} must be an integer, got {text!r}") from None


def _time_query(query: Any, name: str) -> datetime | None:
    text = query.get(name)
    return _timestamp(name, text) if text else None


def _timestamp(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise ClientError(400, f"{name} must be an RFC 3339 timestamp string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ClientError(400, f"{name} is not an RFC 3339 timestamp: {value!r}") from None
    if moment.tzinfo is None:
        raise ClientError(400, f"{name} needs a time zone offset (e.g. Z or +02:00)")
    return moment
