"""The dashboard: the static page at `/` and the few read routes it needs beyond `/status` and `/api`.

The page is plain HTML, CSS and JavaScript in `dashboard/` (no build step, nothing from a CDN:
everything it loads ships in the wheel). It polls `/status`, `/api/jobs`, `/api/plugins` and the
routes below, and sends writes (retry, cancel) with the bearer token the user pasted, so the
routes' own token check is the only gate. Every number it shows comes from the same reads as
`/status` and `orchestrator top` (the read side of `Client`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from orchestrator.client import Client
from orchestrator.errors import JobError, NotFoundError
from orchestrator.monitor.http import CONTEXT

STATIC_DIR = Path(__file__).parent / "dashboard"

# Defence in depth behind the page's textContent-only rendering: no inline script or handler runs,
# and nothing loads from another origin.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def json_response(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda d: json.dumps(d, default=str))


def _client(request: web.Request) -> Client:
    """The app's client: the read side the page shares with `/status` and `orchestrator top`."""
    return request.app[CONTEXT].client


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(request.query.get(name, default))
    except ValueError as e:
        raise JobError(f"{name} must be a number") from e
    return min(max(value, low), high)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)


async def asset(request: web.Request) -> web.FileResponse:
    # Only the files that ship in dashboard/, by name: no path from the request reaches the disk.
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers=_HEADERS)


_ASSETS = frozenset({"app.js", "style.css"})


async def job_logs(request: web.Request) -> web.Response:
    """`GET /api/jobs/{job_id}/logs?after=ID`: captured lines after stream id ID, and the job's state
    (the page stops tailing once it is final and nothing more came)."""
    client = _client(request)
    job_id = request.match_info["job_id"]
    job = await client.status(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    limit = int(_number(request, "limit", 500, 1, 5000))
    entries = await client.log_entries(job_id, after=request.query.get("after", "-"), limit=limit)
    return json_response({"job_id": job_id, "state": job["state"], "entries": entries})


async def throughput(request: web.Request) -> web.Response:
    """`GET /api/throughput?window_s=3600&bucket_s=60`: jobs enqueued and finished per bucket."""
    window_s = _number(request, "window_s", 3600, 60, 7 * 24 * 3600)
    bucket_s = _number(request, "bucket_s", 60, 1, 24 * 3600)
    if window_s / bucket_s > 1440:
        raise JobError("at most 1440 buckets: raise bucket_s or lower window_s")
    return json_response(await _client(request).throughput(window_s=window_s, bucket_s=bucket_s))


async def finished(request: web.Request) -> web.Response:
    """`GET /api/finished?limit=N`: the last jobs that reached a final state, newest first."""
    limit = int(_number(request, "limit", 10, 1, 200))
    return json_response(await _client(request).finished(limit=limit))


def register(app: web.Application) -> None:
    """Add the page and its read routes to the status app (called once from `build_app`)."""
    app.router.add_get("/", index)
    app.router.add_get("/dashboard/{name}", asset)
    app.router.add_get("/api/jobs/{job_id}/logs", job_logs)
    app.router.add_get("/api/throughput", throughput)
    app.router.add_get("/api/finished", finished)
