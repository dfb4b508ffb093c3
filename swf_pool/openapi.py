"""The OpenAPI 3.0 document of the REST API, served at /openapi.json.

Written by hand next to the handlers in `api.py`: every status code a handler can answer with
is listed here, and a schemathesis test checks the live server against it.
"""

from __future__ import annotations

from typing import Any

from .models import EventType, Status
from .waiting import MAX_WAIT_SECONDS

JSON_VALUE: dict[str, Any] = {"description": "any JSON value", "nullable": True}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {**TIME, "nullable": True}
NULLABLE_TEXT = {"type": "string", "nullable": True}
INT32 = {"type": "integer", "format": "int32"}
UUID = {"type": "string", "format": "uuid"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {"error": {"type": "string"}, "id": UUID, "request_id": {"type": "string"}}, ["error"]
    ),
    "Id": _object({"id": UUID}, ["id"]),
    "Status": _object({"status": {"type": "string"}}, ["status"]),
    "Run": _object(
        {
            "id": UUID,
            "type": {"type": "string"},
            "payload": JSON_VALUE,
            "status": {"type": "string", "enum": [s.value for s in Status]},
            "priority": INT32,
            "run_at": TIME,
            "idempotency_key": NULLABLE_TEXT,
            "attempt": INT32,
            "max_attempts": INT32,
            "leased_by": NULLABLE_TEXT,
            "lease_until": NULLABLE_TIME,
            "last_error": NULLABLE_TEXT,
            "result": JSON_VALUE,
            "created_at": TIME,
            "updated_at": TIME,
            "traceback": {
                **NULLABLE_TEXT,
                "description": "GET /workflows/{id} only: the traceback of the attempt that "
                "set last_error (also in its retried or failed event's data)",
            },
        },
        ["id", "type", "status", "priority", "run_at", "attempt", "max_attempts", "created_at"],
    ),
    "Event": _object(
        {
            "id": {"type": "integer"},
            "workflow_id": UUID,
            "event_type": {"type": "string", "enum": [e.value for e in EventType]},
            "data": {
                **JSON_VALUE,
                "description": 'retried and failed: {"attempt", "error"}, and "traceback" '
                "when the handler raised",
            },
            "created_at": TIME,
        },
        ["id", "workflow_id", "event_type", "created_at"],
    ),
    "Schedule": _object(
        {
            "id": UUID,
            "type": {"type": "string"},
            "payload": JSON_VALUE,
            "cron": {"type": "string"},
            "timezone": {"type": "string"},
            "next_run_at": TIME,
            "last_run_at": NULLABLE_TIME,
            "enabled": {"type": "boolean"},
            "priority": INT32,
            "max_attempts": INT32,
            "missed_policy": {"type": "string", "enum": ["skip", "catch_up"]},
            "catch_up_limit": INT32,
            "last_error": NULLABLE_TEXT,
        },
        ["id", "type", "cron", "timezone", "next_run_at", "enabled"],
    ),
    "NewRun": _object(
        {
            "type": {"type": "string", "minLength": 1},
            "payload": JSON_VALUE,
            "priority": INT32,
            "idempotency_key": {"type": "string"},
            "max_attempts": {**INT32, "minimum": 1},
            "run_after": {**TIME, "description": "RFC 3339, with an offset"},
        },
        ["type"],
    ),
    "NewSchedule": _object(
        {
            "type": {"type": "string", "minLength": 1},
            "cron": {"type": "string", "description": "5 fields, or @hourly and friends"},
            "payload": JSON_VALUE,
            "timezone": {"type": "string", "description": "IANA zone (default UTC)"},
            "priority": INT32,
            "max_attempts": {**INT32, "minimum": 1},
            "missed": {"type": "string", "enum": ["skip", "catch_up"]},
            "catch_up_limit": {**INT32, "minimum": 1},
        },
        ["type", "cron"],
    ),
    "ScheduleChange": _object(
        {
            "cron": {"type": "string"},
            "payload": JSON_VALUE,
            "timezone": {"type": "string"},
            "priority": INT32,
            "max_attempts": {**INT32, "minimum": 1},
            "missed": {"type": "string", "enum": ["skip", "catch_up"]},
            "catch_up_limit": {**INT32, "minimum": 1},
        }
    ),
    "TypeStats": _object(
        {
            "type": {"type": "string"},
            "pending": {"type": "integer"},
            "due": {"type": "integer"},
            "leased": {"type": "integer"},
            "lag_seconds": {"type": "number", "nullable": True},
            "failed_last_hour": {"type": "integer"},
        },
        ["type", "pending", "due", "leased", "failed_last_hour"],
    ),
    "Stats": _object(
        {
            "at": TIME,
            "types": {"type": "array", "items": _ref("TypeStats")},
            "totals": _ref("TypeStats"),
            "workers": {"type": "object", "additionalProperties": {"type": "integer"}},
            "registered": {"type": "object", "additionalProperties": {"type": "string"}},
            "dead_tuples": {"type": "integer", "nullable": True},
        },
        ["at", "types", "totals", "workers", "registered"],
    ),
}

ERRORS = {
    400: "bad input: malformed JSON, a missing or invalid field, a malformed id",
    401: "missing or invalid X-API-Key",
    404: "no such run or schedule",
    409: "the run is not in a state that allows this",
    413: "request body too large",
    503: "the database is unavailable",
}


def _responses(ok: int, schema: dict[str, Any] | None, *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if schema is None:
        out[str(ok)] = {"description": "ok"}
    else:
        out[str(ok)] = {"description": "ok", "content": {"application/json": {"schema": schema}}}
    for code in (*errors, 503):
        out[str(code)] = {
            "description": ERRORS[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return out


def _operation(
    summary: str,
    ok: int,
    schema: dict[str, Any] | None,
    *errors: int,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": _responses(ok, schema, *errors)}
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        op["responses"].setdefault("400", _responses(ok, None, 400)["400"])
        op["responses"]["413"] = _responses(ok, None, 413)["413"]
    if params:
        op["parameters"] = params
    return op


ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": UUID}
WAIT_PARAM = {
    "name": "wait",
    "in": "query",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
    "description": (
        f"seconds (0 to {MAX_WAIT_SECONDS:g}): a long poll; the answer comes as soon as the "
        "run has finished (succeeded, failed or cancelled), or with the run as it is when the "
        "seconds are up"
    ),
}
LIST_PARAMS = [
    {"name": "type", "in": "query", "schema": {"type": "string"}},
    {
        "name": "status",
        "in": "query",
        "schema": {"type": "string", "enum": [s.value for s in Status]},
    },
    {"name": "idempotency_key", "in": "query", "schema": {"type": "string"}},
    {"name": "created_after", "in": "query", "schema": TIME, "description": "inclusive"},
    {"name": "created_before", "in": "query", "schema": TIME, "description": "exclusive"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]


def spec(secured: bool) -> dict[str, Any]:
    """The document; with `secured`, every operation but /health needs X-API-Key."""
    run_list = {"type": "array", "items": _ref("Run")}
    paths: dict[str, Any] = {
        "/api/v1/workflows": {
            "post": _operation("Submit a run", 201, _ref("Id"), 409, body="NewRun"),
            "get": _operation("List runs, newest first", 200, run_list, 400, params=LIST_PARAMS),
        },
        "/api/v1/workflows/{id}": {
            "parameters": [ID_PARAM],
            "get": _operation("A run", 200, _ref("Run"), 400, 404, params=[WAIT_PARAM]),
            "delete": _operation("Cancel a run", 200, _ref("Status"), 400, 404, 409),
        },
        "/api/v1/workflows/{id}/events": {
            "parameters": [ID_PARAM],
            "get": _operation(
                "A run's events, oldest first",
                200,
                {"type": "array", "items": _ref("Event")},
                400,
                404,
            ),
        },
        "/api/v1/workflows/{id}/retry": {
            "parameters": [ID_PARAM],
            "post": _operation(
                "Put a failed or cancelled run back to pending", 200, _ref("Status"), 400, 404, 409
            ),
        },
        "/api/v1/schedules": {
            "post": _operation("Create a schedule", 201, _ref("Id"), body="NewSchedule"),
            "get": _operation("List schedules", 200, {"type": "array", "items": _ref("Schedule")}),
        },
        "/api/v1/schedules/{id}": {
            "parameters": [ID_PARAM],
            "patch": _operation(
                "Change a schedule", 200, _ref("Schedule"), 404, body="ScheduleChange"
            ),
            "delete": _operation("Delete a schedule (soft)", 200, _ref("Status"), 400, 404),
        },
        "/api/v1/schedules/{id}/pause": {
            "parameters": [ID_PARAM],
            "patch": _operation("Pause a schedule", 200, _ref("Status"), 400, 404),
        },
        "/api/v1/schedules/{id}/resume": {
            "parameters": [ID_PARAM],
            "patch": _operation("Resume a schedule", 200, _ref("Status"), 400, 404),
        },
        "/api/v1/health": {
            "get": {
                "summary": "Liveness: the database answers",
                "security": [],
                "responses": _responses(200, _ref("Status")),
            }
        },
        "/api/v1/stats": {
            "get": _operation("Depth, lag, failures and workers", 200, _ref("Stats"))
        },
        "/api/v1/metrics": {
            "get": {
                "summary": "Prometheus metrics of the queue",
                "responses": {
                    "200": {"description": "text format", "content": {"text/plain": {}}},
                    **{k: v for k, v in _responses(200, None).items() if k != "200"},
                },
            }
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "swf-pool", "version": "1"},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if secured:
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }
        document["security"] = [{"apiKey": []}]
        for item in paths.values():
            for method, op in item.items():
                if method != "parameters" and op.get("security") != []:
                    op["responses"]["401"] = _responses(200, None, 401)["401"]
    return document
