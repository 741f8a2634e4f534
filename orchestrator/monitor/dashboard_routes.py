"""The dashboard: the static page at `/` and the few read routes it needs beyond `/status` and `/api`.

The page is plain HTML, CSS and JavaScript in `dashboard/` (no build step, nothing from a CDN:
everything it loads ships in the wheel). It polls `/status`, `/api/jobs`, `/api/plugins` and the
routes below, and sends writes (retry, cancel) with the bearer token the user pasted, so the
routes' own token check is the only gate. Every number it shows comes from the same reads as
`/status` and `orchestrator top` (the read side of `Client`).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from orchestrator.errors import NotFoundError
from orchestrator.monitor import api_models as m
from orchestrator.monitor.context import ctx
from orchestrator.monitor.handlers import BadRequest, json_response, query

STATIC_DIR = Path(__file__).parent / "dashboard"

# Defence in depth behind the page's textContent-only rendering: no inline script or handler runs,
# and nothing loads from another origin.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
_ASSETS = frozenset({"app.js", "style.css"})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)


async def asset(request: web.Request) -> web.FileResponse:
    # Only the files that ship in dashboard/, by name: no path from the request reaches the disk.
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise NotFoundError(f"no dashboard file {name!r}")
    return web.FileResponse(STATIC_DIR / name, headers=_HEADERS)


async def job_logs(request: web.Request) -> web.Response:
    """Captured lines after stream id `after`, and the job's state (the page stops tailing once it
    is final and nothing more came)."""
    client = ctx(request).client
    job_id = request.match_info["job_id"]
    q = query(request, m.LogsQuery)
    job = await client.status(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    entries = await client.log_entries(job_id, after=q.after, limit=q.limit)
    return json_response({"job_id": job_id, "state": job["state"], "entries": entries})


async def throughput(request: web.Request) -> web.Response:
    """Jobs enqueued and finished per bucket over the window."""
    q = query(request, m.ThroughputQuery)
    if q.window_s / q.bucket_s > 1440:
        raise BadRequest("at most 1440 buckets: raise bucket_s or lower window_s")
    return json_response(await ctx(request).client.throughput(window_s=q.window_s, bucket_s=q.bucket_s))


async def finished(request: web.Request) -> web.Response:
    """The last jobs that reached a final state, newest first."""
    q = query(request, m.FinishedQuery)
    return json_response(await ctx(request).client.finished(limit=q.limit))
