"""The bodies of the core commands: run, health, config, plugins, trigger, status, batch, jobs (parser: main.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from orchestrator.cli.context import Command
from orchestrator.cli.exit_codes import FAILED, OK, USAGE
from orchestrator.cli.render import (
    Output,
    job_detail,
    jobs_table,
    plugins_table,
    queues_table,
    stats_table,
    styled,
)
from orchestrator.config import format_validation_error
from orchestrator.errors import JobError, NotFoundError
from orchestrator.logs import mask_secrets, mask_url
from orchestrator.trust import make_undumpable, protect_state_dir

if TYPE_CHECKING:
    from orchestrator.cli.local_plugins import LocalPlugins
    from orchestrator.client import Client


# -- run / health / config --
async def run(args: argparse.Namespace, cmd: Command) -> int:
    from orchestrator.app import Orchestrator  # the whole app: only this command runs it

    make_undumpable()  # before any plugin starts: none may read our environment or ptrace us
    await asyncio.to_thread(protect_state_dir, cmd.settings.state_dir)
    out = cmd.out
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    app = Orchestrator(cmd.settings, role=args.role, queues=queues)
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_signal() -> None:
        # First signal: graceful. Second: stop waiting for running jobs.
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            app.stop()
        else:
            out.note("second signal: exiting now")
            for task in asyncio.all_tasks(loop):
                task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await app.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return OK


async def health(args: argparse.Namespace, cmd: Command) -> int:
    settings, out = cmd.settings, cmd.out
    host = "127.0.0.1" if settings.http_host in {"0.0.0.0", "::", ""} else settings.http_host  # noqa: S104  compared, not bound
    url = (args.url or f"http://{host}:{settings.http_port}").rstrip("/") + "/health"
    try:
        async with asyncio.timeout(args.timeout):
            status, body = await asyncio.to_thread(_get_json, url, args.timeout)
        healthy = status == 200
    except (OSError, TimeoutError, ValueError, http.client.HTTPException) as e:  # ValueError: not JSON, a bad URL
        error = mask_secrets(str(e)) or type(e).__name__
        body, healthy = {"status": "unreachable", "url": mask_url(url), "error": error}, False
    if args.json:
        out.json(body)
    elif healthy:
        out.line("healthy")
    else:
        failing = {k: v for k, v in (body.get("components") or {}).items() if v.get("status") != "ok"}
        out.line(f"unhealthy: {json.dumps(failing or body)}")
    return OK if healthy else FAILED


def _get_json(url: str, timeout_s: float) -> tuple[int, Any]:
    """(status, JSON body) of one GET. The standard library's client, not aiohttp's: this command is
    the container's health check, a process every 15 s, and aiohttp's client alone costs it ~0.2 s of
    CPU at import (bench/README.md, "The container's health check"). Proxies are not used, as with
    aiohttp's default: the check asks the instance itself."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        msg = "not an http(s) URL"
        raise ValueError(msg)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=timeout_s)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


async def show_config(args: argparse.Namespace, cmd: Command) -> int:
    out = cmd.out
    data = cmd.settings.masked()
    if args.json:
        out.json(data)
    else:
        for key, value in data.items():
            out.line(f"{key} = {json.dumps(value)}")
    return OK


# -- plugins --
async def plugins(args: argparse.Namespace, cmd: Command) -> int:
    out = cmd.out
    action = args.plugins_command
    if action == "new":
        from orchestrator.cli.local_plugins import LocalPlugins

        out.line(str(LocalPlugins(cmd.settings).create(args.name)))
        return OK
    local = await cmd.plugins()
    if action == "reload":
        await (await cmd.client(local_plugins=True)).reload_plugins(args.name)
        out.line(f"reload of {args.name or 'every plugin'} requested from every running instance")
        return OK
    if action == "throttle":
        return await _throttle(args, cmd)
    if action in {"enable", "disable"}:
        local.get(args.name)  # NotFoundError for a plugin that is not in the folder
        await (await cmd.client(write=True, local_plugins=True)).set_enabled(args.name, action == "enable")
        out.line(f"{args.name} {action}d")
        return OK
    if action == "list":
        flags = await cmd.enabled_flags()
        rows = [{**p.to_json(), "enabled": flags.get(p.name, p.enabled)} for p in local.all()]
        out.json(rows) if args.json else out.out.print(plugins_table(rows))
        return OK
    if action == "install":
        return await _install(local, args.names, out)
    info = local.get(args.name)
    if action == "show":
        data = info.to_json()
        out.json(data) if args.json else out.out.print_json(json.dumps(data, default=str))
        return OK
    return await _test_plugin(args, local, out)


async def _throttle(args: argparse.Namespace, cmd: Command) -> int:
    """`plugins throttle NAME [--concurrency N] [--rate R] [--key T] [--max-queued N] [--reset]`."""
    out, name = cmd.out, args.name
    changes = {
        field: (None if value == "none" else value)
        for field, value in (
            ("concurrency", args.concurrency), ("rate", args.rate), ("key", args.key), ("max_queued", args.max_queued),
        )
        if value is not None
    }  # fmt: skip
    if args.reset:
        client = await cmd.client(write=True)
        await client.reset_throttle(name)
        out.line(f"{name}: live limits dropped; every instance writes its config's back")
        return OK
    if changes:
        client = await cmd.client(write=True)
        try:
            limits = await client.set_throttle(name, **changes)
        except ValueError as e:  # pydantic's ValidationError is one: one line naming the field
            raise JobError(f"{name}: {format_validation_error(e) if isinstance(e, ValidationError) else e}") from e
    else:
        client = await cmd.client()
        limits = await client.throttle(name)
    use = (await client.throttles()).get(name)
    if args.json:
        out.json({"plugin": name, "limits": limits.model_dump(exclude_none=True) if limits else None, "use": use})
        return OK
    described = ", ".join(f"{k} {v}" for k, v in (limits.model_dump(exclude_none=True) if limits else {}).items())
    live = " (set live)" if use and use["live"] else ""
    out.line(f"{name}: {described or 'no limits'}{live}")
    for key in use["keys"] if use else []:
        out.line(f"  {key['key'] or '(all)'}: {key['running']} running, {key['held']} held")
    return OK


async def _install(local: LocalPlugins, names: list[str], out: Output) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    wanted = names or [p.name for p in local.all() if p.state != "invalid"]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out.err) as bar:
        task = bar.add_task("building virtualenvs", total=len(wanted))
        errors: dict[str, str | None] = {}
        for name in wanted:
            bar.update(task, description=f"building {name}")
            errors.update(await local.install([name]))
            bar.advance(task)
    for name, error in errors.items():
        out.line(f"{name}: {'ready' if error is None else 'FAILED: ' + error}")
    return FAILED if any(errors.values()) else OK


async def _test_plugin(args: argparse.Namespace, local: LocalPlugins, out: Output) -> int:
    params = local.params(args.name, args.param, args.params_json)
    result = await local.test(args.name, params, timeout_s=args.timeout)
    if args.json:
        out.json(result.to_json())
    elif result.ok:
        out.out.print_json(json.dumps(result.result, default=str))
    else:
        out.error(result.error or "failed")
        if result.traceback:
            out.note(result.traceback)
        if result.log_tail:
            out.note("--- log tail ---\n" + result.log_tail[-4000:])
    return OK if result.ok else FAILED


# -- jobs --
async def trigger(args: argparse.Namespace, cmd: Command) -> int:
    out = cmd.out
    params = (await cmd.plugins()).params(args.name, args.param, args.params_json)
    client = await cmd.client(write=True, local_plugins=True)
    triggered = await client.trigger(
        args.name,
        params,
        priority=args.priority,
        queue=args.queue,
        job_id=args.job_id,
        defer_s=args.defer,
        at=args.at,
        source="cli",
        # a script that runs inside a trace (a traced plugin, a CI step) passes it the way we pass it to plugins
        trace_parent={k: v for k in ("traceparent", "tracestate") if (v := os.environ.get(k.upper()))} or None,
    )
    if not triggered.created:
        out.note(f"job {triggered.job_id} already exists: not enqueued again")
    if not args.wait:
        out.json({"job_id": triggered.job_id, "created": triggered.created}) if args.json else out.line(
            triggered.job_id
        )
        return OK
    try:
        job = await client.result(triggered.job_id, timeout_s=args.timeout)
    except TimeoutError:
        out.error(f"job {triggered.job_id} not finished after {args.timeout}s")
        return FAILED
    return _print_job_outcome(job, out)


def _print_job_outcome(job: dict[str, Any], out: Output) -> int:
    if out.as_json:
        out.json(job)
    elif job["state"] == "succeeded":
        out.out.print_json(json.dumps(job["result"], default=str))
    else:
        out.error(f"job {job['job_id']} {job['state']}: {job.get('error')}")
        if job.get("log_tail"):
            out.note("--- log tail ---\n" + job["log_tail"][-4000:])
    return OK if job["state"] == "succeeded" else FAILED


async def status(args: argparse.Namespace, cmd: Command) -> int:
    out = cmd.out
    client = await cmd.client()
    job = await client.status(args.id)
    if job is None:
        try:
            batch = await client.batch_status(args.id)
        except NotFoundError:
            raise NotFoundError(f"no job or batch {args.id!r}") from None
        out.json(batch) if args.json else out.out.print(
            f"batch {batch['batch_id']}: {batch['total']} jobs, "
            + ", ".join(f"{styled(s)} {n}" for s, n in batch["states"].items() if n)
            + (" (done)" if batch["done"] else "")
        )
        return OK
    out.json(job) if args.json else out.out.print(job_detail(job))
    return OK if job["state"] != "failed" else FAILED


async def batch(args: argparse.Namespace, cmd: Command) -> int:
    out = cmd.out
    text = sys.stdin.read() if args.file == "-" else await asyncio.to_thread(Path(args.file).read_text)
    client = await cmd.client(write=True, local_plugins=True)
    created = await client.batch(json.loads(text))
    if not args.wait:
        out.json(created) if args.json else out.line(created["batch_id"])
        return OK
    state = await _follow_batch(client, created["batch_id"], len(created["job_ids"]), args.timeout, out)
    if args.json:
        out.json(state)
    failed = state["states"]["failed"] + state["states"]["cancelled"]
    return OK if state["done"] and not failed else FAILED


async def _follow_batch(client: Client, batch_id: str, total: int, timeout_s: float | None, out: Output) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(f"batch {batch_id[:8]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out.err,  # stdout stays clean for --json
        disable=out.as_json,
    )
    with progress, contextlib.suppress(TimeoutError):
        task = progress.add_task("jobs", total=total)
        async with asyncio.timeout(timeout_s):
            while True:
                state = await client.batch_status(batch_id)
                finished = sum(state["states"][s] for s in ("succeeded", "failed", "cancelled"))
                progress.update(task, completed=finished)
                if state["done"]:
                    break
                await asyncio.sleep(0.2)
    return await client.batch_status(batch_id)


async def jobs(args: argparse.Namespace, cmd: Command) -> int:
    out = cmd.out
    action = args.jobs_command
    write = action in {"cancel", "retry", "delete", "purge"}
    client = await cmd.client(write=write, local_plugins=action == "retry")
    if action == "list":
        rows = await client.list(state=args.state, plugin=args.plugin, limit=args.limit)
        out.json(rows) if args.json else out.out.print(jobs_table(rows))
    elif action == "stats":
        data = await client.stats()
        if args.json:
            out.json(data)
        else:
            out.out.print(stats_table(data))
            out.out.print(queues_table(data))
    elif action == "logs":
        if await client.status(args.id) is None:
            raise NotFoundError(f"no job {args.id!r}")
        async for stream, line in client.logs(args.id, follow=args.follow):
            (sys.stderr if stream == "stderr" else sys.stdout).write(line + "\n")
    elif action == "cancel":
        state = await client.cancel(args.id)
        out.json({"job_id": args.id, "state": state}) if args.json else out.line(f"{args.id} {state}")
        return OK if state == "cancelled" else FAILED
    elif action == "retry":
        new_id = await client.retry(args.id)
        out.json({"job_id": new_id, "retry_of": args.id}) if args.json else out.line(new_id)
    elif action == "delete":
        await client.delete(args.id)
        out.json({"deleted": 1}) if args.json else out.line(f"{args.id} deleted")
    elif action == "purge":
        return await _purge(client, args, out)
    return OK


async def _purge(client: Client, args: argparse.Namespace, out: Output) -> int:
    what = f"{args.state} jobs" + (f" of {args.plugin}" if args.plugin else "")
    what += f" older than {args.older_than:g}s" if args.older_than else ""
    if not args.yes:
        count = await client.purge_count(state=args.state, older_than_s=args.older_than, plugin=args.plugin)
        if count == 0:
            out.line(f"no {what}")
            return OK
        if not sys.stdin.isatty():
            out.error(f"would delete {count} {what}: add --yes to confirm (no terminal to ask on)")
            return USAGE
        answer = await asyncio.to_thread(input, f"delete {count} {what}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            out.note("nothing deleted")
            return OK
    deleted = await client.purge(state=args.state, older_than_s=args.older_than, plugin=args.plugin)
    out.json({"deleted": deleted}) if args.json else out.line(f"deleted {deleted} {what}")
    return OK
