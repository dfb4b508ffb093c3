"""What stands in front of the REST API's handlers: the host, cross-site writes, the API key,
request ids, and every error turned into `{"error": ...}` with its status."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response

from .dashboard import COOKIE
from .errors import (
    DatabaseError,
    DataRejected,
    RunAlreadyFinished,
    RunNotFound,
    RunNotRetryable,
    ScheduleNotFound,
    SwfError,
    ValidationError,
)

log = logging.getLogger("swf_pool.api")

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = ("/api/v1/health", "/openapi.json", "/login")  # and /static/
STATUS = {
    ValidationError: 400,
    RunNotFound: 404,
    ScheduleNotFound: 404,
    RunAlreadyFinished: 409,
    RunNotRetryable: 409,
    DataRejected: 400,  # input our checks let through and the database refused
    DatabaseError: 503,
}


class ClientError(Exception):
    """A bad request that never reached the Client: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NAIVE_UTC),
        status_code=status,
        media_type="application/json",
    )


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, **extra}, status)


def default_hosts(bind: str) -> list[str]:
    """The host names a server listening on `bind` answers to unless told otherwise: the
    loopback names for a loopback address, else any."""
    return list(LOOPBACK_HOSTS) if bind in LOOPBACK_HOSTS or bind.startswith("127.") else ["*"]


class Guard(BaseHTTPMiddleware):
    """Request ids, the host, the API key, and every error as `{"error": ...}`."""

    def __init__(self, app: Any, api_key: str | None, allowed_hosts: Sequence[str]) -> None:
        super().__init__(app)
        self.api_key = api_key.encode() if api_key else None
        self.hosts = None if "*" in allowed_hosts else {h.lower() for h in allowed_hosts}

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        response = await self._answer(request, call_next, request_id)
        response.headers["X-Request-Id"] = request_id
        return response

    async def _answer(
        self, request: Request, call_next: RequestResponseEndpoint, request_id: str
    ) -> Response:
        path = request.url.path
        host = request.headers.get("host", "")
        if self.hosts is not None and (urlsplit("//" + host).hostname or "") not in self.hosts:
            # a name that only leads here through DNS rebinding (a page elsewhere reaching a
            # server on loopback through the operator's browser), or a misdirected request
            return error(400, f"this server does not answer to host {host!r} (--allowed-hosts)")
        if request.method not in SAFE_METHODS and _cross_site(request):
            # a page on another site posting here with the operator's browser (CSRF): with
            # no API key, or the key in a cookie, nothing else would stop it
            return error(403, "cross-site requests are refused")
        if self.api_key is not None and path not in OPEN_PATHS and not path.startswith("/static/"):
            given = request.headers.get("x-api-key") or request.cookies.get(COOKIE, "")
            if not hmac.compare_digest(given.encode(), self.api_key):
                if path.startswith("/api/"):
                    return error(401, "missing or invalid API key (X-API-Key)")
                return RedirectResponse("/login?" + urlencode({"next": path}), status_code=303)
        try:
            return await call_next(request)
        except ClientError as exc:
            return error(exc.status, str(exc))
        except SwfError as exc:
            for kind, status in STATUS.items():
                if isinstance(exc, kind):
                    if status >= 500:
                        log.warning("request %s: %s", request_id, exc)
                    return error(status, str(exc))
            return _fault(request, request_id, exc)
        except ClientDisconnect:  # it went away mid-body: nobody to answer, nothing wrong here
            log.info("request %s %s %s: the client went away", request_id, request.method,
                     request.url.path)  # fmt: skip
            return error(400, "the client went away before sending the whole body")
        except Exception as exc:
            return _fault(request, request_id, exc)


def _cross_site(request: Request) -> bool:
    """True when a browser says the request comes from another site (clients such as curl
    or the Go library send neither header)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc != request.headers.get("host", "")


def _fault(request: Request, request_id: str, exc: Exception) -> Response:
    log.error("request %s %s %s failed", request_id, request.method, request.url.path, exc_info=exc)
    return error(500, "internal server error", request_id=request_id)


async def not_found(request: Request, exc: Exception) -> Response:
    return error(404, f"no such endpoint: {request.url.path}")


async def not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, f"method {request.method} not allowed on {request.url.path}")
