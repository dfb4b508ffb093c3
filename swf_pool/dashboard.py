"""The web dashboard, served by `swf-pool serve` at /: overview (with the pools of the fleet
and the paused and limited types), runs, a run, schedules.

Server-rendered HTML (Jinja2 templates and static files shipped in the package; no CDN, no
build step). The overview refreshes itself every 2 s by fetching its fragment. Actions are
plain form POSTs (the page asks for confirmation first) answered by a redirect that says what
happened. With an API key, a login form puts it in an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .argtypes import format_age
from .client import Client
from .errors import SwfError, ValidationError
from .fleet import Fleet, PoolMember, TypeControl
from .models import QueueStats, Status
from .schedules import Schedule, upcoming
from .tracebacks import latest, traceback_of, without_traceback

PAGE_SIZE = 50
THROUGHPUT_MINUTES = 60
COOKIE = "swf_api_key"
CHART_WIDTH, CHART_HEIGHT = 600, 120


class Dashboard:
    def __init__(self, client: Client, call: Any, api_key: str | None) -> None:
        self.client = client
        self.call = call  # runs a blocking Client call off the event loop
        self.api_key = api_key
        self.fleet = Fleet(client.backend)
        self.templates = Environment(
            loader=PackageLoader("swf_pool", "templates"),
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["age"] = format_age
        self.templates.filters["pretty"] = _pretty
        self.templates.filters["without_traceback"] = without_traceback

    def routes(self) -> list[Route | Mount]:
        static = StaticFiles(directory=Path(__file__).with_name("static"))
        return [
            Route("/", self.overview, methods=["GET"]),
            Route("/ui/overview", self.overview_fragment, methods=["GET"]),
            Route("/runs", self.runs, methods=["GET"]),
            Route("/runs/retry-failed", self.retry_failed, methods=["POST"]),
            Route("/runs/{id}", self.run, methods=["GET"]),
            Route("/runs/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/runs/{id}/retry", self.retry, methods=["POST"]),
            Route("/schedules", self.schedules, methods=["GET"]),
            Route("/schedules/{id}/{action:str}", self.schedule_action, methods=["POST"]),
            Route("/types/{action:str}", self.type_action, methods=["POST"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Mount("/static", static, name="static"),
        ]

    def page(self, name: str, request: Request, status: int = 200, **values: Any) -> Response:
        values.setdefault("done", request.query_params.get("done"))
        values.setdefault("failed", request.query_params.get("failed"))
        html = self.templates.get_template(name).render(request=request, **values)
        return HTMLResponse(html, status_code=status)

    # -- overview -----------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        return self.page("overview.html", request, **await self._overview())

    async def overview_fragment(self, request: Request) -> Response:
        return self.page("_overview.html", request, **await self._overview())

    async def _overview(self) -> dict[str, Any]:
        stats: QueueStats = await self.call(self.client.stats)
        series = await self.call(self.client.throughput, THROUGHPUT_MINUTES + 1)
        pools: list[PoolMember] = await self.call(self.fleet.pools)
        controls: list[TypeControl] = await self.call(self.fleet.controls)
        registered = {pool.id for pool in pools}
        queued = {t.type for t in stats.types}
        return {
            "stats": stats,
            "totals": stats.totals(),
            "bars": _bars(stats),
            "throughput": _throughput(series, stats.at),
            "pools": pools,
            # lease holders with no pool row: Go workers, or pools from before migration 0009
            "unlisted": {w: n for w, n in stats.workers.items() if w not in registered},
            "controls": {c.type: c for c in controls},
            "idle_controls": [c for c in controls if c.type not in queued],
        }

    async def type_action(self, request: Request) -> Response:
        """Pause or resume a type (form field `type`: a type name may hold any character)."""
        action = str(request.path_params["action"])
        methods = {"pause": self.fleet.pause, "resume": self.fleet.resume}
        if action not in methods:
            return self.page("missing.html", request, 404, what=f"action {action}")
        name = str((await request.form()).get("type") or "")
        return await self._act("/", f"{action}d {name}", methods[action], name)

    # -- runs ---------------------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        query = request.query_params
        form = {name: query.get(name, "") for name in ("type", "status", "key", "from", "to")}
        offset = max(0, _int(query.get("offset")))
        try:
            found = await self.call(
                self.client.list,
                type=form["type"] or None,
                status=form["status"] or None,
                idempotency_key=form["key"] or None,
                created_after=_local_time(form["from"]),
                created_before=_local_time(form["to"]),
                limit=PAGE_SIZE + 1,
                offset=offset,
            )
        except SwfError as exc:
            return self.page("runs.html", request, 400, form=form, runs=[], error=str(exc))
        kept = {k: v for k, v in form.items() if v}
        return self.page(
            "runs.html",
            request,
            form=form,
            runs=found[:PAGE_SIZE],
            statuses=[s.value for s in Status],
            offset=offset,
            previous=urlencode({**kept, "offset": max(0, offset - PAGE_SIZE)}) if offset else None,
            next=urlencode({**kept, "offset": offset + PAGE_SIZE})
            if len(found) > PAGE_SIZE
            else None,
        )

    async def run(self, request: Request) -> Response:
        run_id = str(request.path_params["id"])
        run = await self.call(self.client.get, run_id)
        if run is None:
            return self.page("missing.html", request, 404, what=f"run {run_id}")
        events = await self.call(self.client.events, run.id)
        failure = latest(events) if run.last_error else None
        trace = traceback_of(failure)
        return self.page("run.html", request, run=run, events=events, failure=failure, trace=trace)

    async def cancel(self, request: Request) -> Response:
        run_id = str(request.path_params["id"])
        return await self._act(f"/runs/{run_id}", f"cancelled {run_id}", self.client.cancel, run_id)

    async def retry(self, request: Request) -> Response:
        run_id = str(request.path_params["id"])
        return await self._act(f"/runs/{run_id}", f"requeued {run_id}", self.client.retry, run_id)

    async def retry_failed(self, request: Request) -> Response:
        run_type = str((await request.form()).get("type") or "")
        back = "/runs?" + urlencode({"status": "failed", "type": run_type})
        if not run_type:
            return _redirect(back, failed="name the type whose failed runs to retry")
        try:
            count = await self.call(self.client.retry_many, type=run_type)
        except SwfError as exc:
            return _redirect(back, failed=str(exc))
        return _redirect(back, done=f"requeued {count} failed {run_type} run(s)")

    # -- schedules ----------------------------------------------------------------------------

    async def schedules(self, request: Request) -> Response:
        found: list[Schedule] = await self.call(self.client.schedules.list)
        rows = [(s, _next_fires(s)) for s in found]
        return self.page("schedules.html", request, rows=rows)

    async def schedule_action(self, request: Request) -> Response:
        schedule_id = str(request.path_params["id"])
        action = str(request.path_params["action"])
        methods = {"pause": self.client.schedules.pause, "resume": self.client.schedules.resume}
        if action not in methods:
            return self.page("missing.html", request, 404, what=f"action {action}")
        done = f"{action}d {schedule_id}"
        return await self._act("/schedules", done, methods[action], schedule_id)

    async def _act(self, back: str, done: str, func: Any, *args: Any) -> Response:
        try:
            await self.call(func, *args)
        except SwfError as exc:
            return _redirect(back, failed=str(exc))
        return _redirect(back, done=done)

    # -- login --------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.page("login.html", request, next=request.query_params.get("next", "/"))

    async def login(self, request: Request) -> Response:
        form = await request.form()
        given = str(form.get("key") or "")
        target = str(form.get("next") or "/")
        if not target.startswith("/") or target[1:2] in ("/", "\\"):
            target = "/"  # only back into this site (a browser reads /\host as //host)
        if self.api_key is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            return self.page("login.html", request, 401, next=target, error="wrong API key")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict")
        return response


def _redirect(path: str, **message: str) -> Response:
    joiner = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{joiner}{urlencode(message)}", status_code=303)


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _local_time(text: str) -> datetime | None:
    """A `datetime-local` form value, read as UTC (the pages show UTC) unless it says."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValidationError(f"not a date and time: {text!r}") from None


def _next_fires(schedule: Schedule) -> list[tuple[datetime, datetime]]:
    """The next three fire times, in the schedule's zone and in UTC."""
    try:
        zone = ZoneInfo(schedule.timezone)
        fires = [schedule.next_run_at, *upcoming(schedule.cron, zone, schedule.next_run_at, 2)]
    except (SwfError, ValueError, KeyError):
        return []
    return [(fire.astimezone(zone), fire.astimezone(UTC)) for fire in fires]


def _bars(stats: QueueStats) -> list[dict[str, Any]]:
    """Horizontal bars of pending and leased runs per type, as fractions of the largest."""
    largest = max((t.pending + t.leased for t in stats.types), default=0) or 1
    return [
        {
            "type": t.type,
            "pending": t.pending,
            "leased": t.leased,
            "pending_width": round(100 * t.pending / largest, 2),
            "leased_width": round(100 * t.leased / largest, 2),
        }
        for t in stats.types
    ]


def _throughput(series: list[tuple[datetime, int, int]], now: datetime) -> dict[str, Any]:
    """An SVG polyline per outcome over the last hour, one point a minute. The minute under
    way is left out: drawn, it would show as a dip that is not one."""
    start = now.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(
        minutes=THROUGHPUT_MINUTES
    )
    by_minute = {
        minute.astimezone(UTC).replace(second=0, microsecond=0): (s, f) for minute, s, f in series
    }
    minutes = [start + timedelta(minutes=i) for i in range(THROUGHPUT_MINUTES)]
    succeeded = [by_minute.get(m, (0, 0))[0] for m in minutes]
    failed = [by_minute.get(m, (0, 0))[1] for m in minutes]
    top = max([*succeeded, *failed, 1])
    step = CHART_WIDTH / (THROUGHPUT_MINUTES - 1)

    def points(values: list[int]) -> str:
        return " ".join(
            f"{i * step:.1f},{CHART_HEIGHT - CHART_HEIGHT * v / top:.1f}"
            for i, v in enumerate(values)
        )

    return {
        "succeeded": points(succeeded),
        "failed": points(failed),
        "top": top,
        # the totals count the minute under way too: only its point would mislead
        "total_succeeded": sum(s for minute, s, _ in series if minute.astimezone(UTC) >= start),
        "total_failed": sum(f for minute, _, f in series if minute.astimezone(UTC) >= start),
        "minutes": THROUGHPUT_MINUTES,
        "last": f"{minutes[-1]:%H:%M} UTC",
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
    }


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
