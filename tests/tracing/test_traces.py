"""One trace from the caller to the plugin child, against a real OTLP/HTTP receiver and real
`orchestrator run` processes: parent links, the pooled plugin's own span, retries, and tracing off."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from orchestrator.client import Client, connect_redis
from orchestrator.tracing import build as tracing
from orchestrator.tracing.settings import TracingSettings
from tests.jobs.conftest import StartRun
from tests.jobs.helpers import cli, make_settings, read_events, wait_for
from tests.tracing.helpers import make_traced_plugin, otel_env, otel_site
from tests.tracing.receiver import Receiver, Span, otlp_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with otlp_receiver() as r:
        yield r


@pytest.fixture
async def caller(receiver: Receiver) -> AsyncIterator[TracerProvider]:
    """The calling application's own OpenTelemetry set-up (not the orchestrator's); flushed by `flush`."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")))
    yield provider
    await flush(provider)


async def flush(provider: TracerProvider) -> None:
    await asyncio.to_thread(provider.shutdown)  # posts to the receiver on this loop: off the loop


def one(receiver: Receiver, name: str) -> Span:
    spans = receiver.named(name)
    assert len(spans) == 1, (name, receiver.spans)
    return spans[0]


async def test_a_triggered_job_is_one_trace_from_the_callers_span_to_the_plugin(
    receiver: Receiver, caller: TracerProvider, tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    make_traced_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    record = tmp_path / "seen.jsonl"
    run = await start_run(settings, tmp_path / "run.log", **otel_env(receiver.url))
    spans = tracing.build(TracingSettings(otel_exporter_otlp_endpoint=receiver.url))
    try:
        async with Client(connect_redis(redis_url), owns_redis=True, tracing=spans) as client:
            await wait_for(client.queues)
            with caller.get_tracer("caller").start_as_current_span("caller"):
                job_id = (await client.trigger("traced", {"record": str(record)})).job_id
            job = await client.result(job_id, timeout_s=20)
            # a batch is one trigger span: its jobs join that trace (no caller span around it here)
            [batch_job] = (await client.batch([{"plugin": "traced", "params": {}}]))["job_ids"]
            assert (await client.result(batch_job, timeout_s=20))["state"] == "succeeded"
    finally:
        await spans.aclose()
    await flush(caller)
    assert job["state"] == "succeeded", job

    # the job span ends last (after the outcome is stored): wait for both jobs' spans
    await wait_for(lambda: len(receiver.named("job")) == 2 and len(receiver.named("trigger")) == 2)
    root = one(receiver, "caller")
    trigger, job_span, plugin = (
        next(s for s in receiver.named(n) if s.trace_id == root.trace_id) for n in ("trigger", "job", "plugin")
    )
    assert {s.trace_id for s in (root, trigger, job_span, plugin)} == {root.trace_id}
    assert (trigger.parent_id, job_span.parent_id, plugin.parent_id) == (
        root.span_id,
        trigger.span_id,
        job_span.span_id,
    )
    batch_job_span = next(s for s in receiver.named("job") if s.attributes["job.id"] == batch_job)
    batch_trigger = next(s for s in receiver.named("trigger") if s.span_id == batch_job_span.parent_id)
    assert batch_trigger.parent_id == "" and batch_trigger.attributes["batch.size"] == 1
    assert job_span.service == "orch-test" and trigger.service == "orchestrator"
    assert job_span.attributes["job.id"] == job_id and job_span.attributes["job.outcome"] == "succeeded"
    assert job_span.attributes["job.plugin"] == "traced" and job_span.attributes["job.queue"] == "default"
    assert job_span.attributes["job.attempt"] == 1 and job_span.attributes["job.queue_wait_s"] >= 0
    # the child got the plugin span's context in its environment, and the job page shows the trace
    (seen,) = read_events(record)
    assert seen["traceparent"].split("-")[1:3] == [plugin.trace_id, plugin.span_id]
    assert job["trace_id"] == root.trace_id
    # the worker's JSON log lines of the job point at its span
    assert {"trace_id": job_span.trace_id, "span_id": job_span.span_id} == job_log_ids(run.log(), job_id, "job.end")


def job_log_ids(log: str, job_id: str, event: str) -> dict[str, str]:
    """trace_id/span_id of the JSON log line of `event` for `job_id` (empty when it has none)."""
    lines = [json.loads(x) for x in log.splitlines() if x.startswith("{") and job_id in x]
    (line,) = [x for x in lines if x.get("event") == event]
    return {k: line[k] for k in ("trace_id", "span_id") if k in line}


async def test_a_pooled_plugins_own_span_lands_in_the_trace_of_an_http_trigger(
    receiver: Receiver, caller: TracerProvider, tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    make_traced_plugin(tmp_path / "plugins", isolation="pooled")
    settings = make_settings(tmp_path, redis_url, http_port=0)
    run = await start_run(settings, tmp_path / "run.log", ORCH_API_TOKEN="secret", **otel_env(receiver.url))
    # the HTTP API's port: the one the log names (port 0 was asked for)
    port = int((await wait_for(lambda: re.search(r"listening on http://127\.0\.0\.1:(\d+)", run.log()))).group(1))
    params = {"endpoint": f"{receiver.url}/v1/traces", "otel_site": otel_site()}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # the second job runs in the warm child the first one started
            headers = {"Authorization": "Bearer secret"}
            with caller.get_tracer("caller").start_as_current_span("caller"):
                propagate.inject(headers)
            async with http.post(
                f"http://127.0.0.1:{port}/api/jobs", json={"plugin": "traced", "params": params}, headers=headers
            ) as response:
                assert response.status == 201, await response.text()
                job_id = (await response.json())["job_id"]
            async with Client(connect_redis(redis_url), owns_redis=True) as client:
                assert (await client.result(job_id, timeout_s=20))["state"] == "succeeded"
    await flush(caller)
    await wait_for(lambda: len(receiver.named("job")) == 2 and len(receiver.named("plugin.work")) == 2)

    for root in receiver.named("caller"):
        in_trace = {s.name: s for s in receiver.spans if s.trace_id == root.trace_id}
        assert set(in_trace) == {"caller", "trigger", "job", "plugin", "plugin.work"}, in_trace
        assert in_trace["trigger"].parent_id == root.span_id
        assert in_trace["plugin"].attributes["plugin.isolation"] == "pooled"
        assert in_trace["plugin.work"].parent_id == in_trace["plugin"].span_id
        assert in_trace["plugin.work"].service == "traced-plugin"


async def test_a_retried_job_shows_two_job_spans_the_second_linked_to_the_first(
    receiver: Receiver, tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    make_traced_plugin(tmp_path / "plugins", max_retries=1, retry_backoff=0.1)
    settings = make_settings(tmp_path, redis_url)
    record = tmp_path / "seen.jsonl"
    await start_run(settings, tmp_path / "run.log", **otel_env(receiver.url))
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        await wait_for(client.queues)
    # the CLI as the caller, inside a trace it was handed the way plugins are (TRACEPARENT)
    triggered = await cli(
        settings, "trigger", "traced", "-p", f"record={record}", "-p", "fail_first=yes",
        TRACEPARENT="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01", **otel_env(receiver.url),
    )  # fmt: skip
    assert triggered.rc == 0, triggered.err
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        job = await client.result(triggered.out.strip(), timeout_s=20)
    assert job["state"] == "succeeded" and job["attempt"] == 2, job
    await wait_for(lambda: len(receiver.named("job")) == 2 and receiver.named("trigger"))

    trigger = one(receiver, "trigger")
    assert (trigger.trace_id, trigger.parent_id) == ("ab" * 16, "cd" * 8)
    first, second = sorted(receiver.named("job"), key=lambda s: s.attributes["job.attempt"])
    assert (first.attributes["job.outcome"], second.attributes["job.outcome"]) == ("retried", "succeeded")
    assert first.error and not second.error
    assert first.parent_id == second.parent_id == trigger.span_id
    assert second.links == [(first.trace_id, first.span_id)] and first.links == []


async def test_without_the_variables_nothing_is_imported_created_or_sent(
    receiver: Receiver, tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    make_traced_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    record = tmp_path / "seen.jsonl"
    # -X importtime: the process lists every module it imports on stderr (its log)
    run = await start_run(settings, tmp_path / "run.log", PYTHONPROFILEIMPORTTIME="1")
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        await wait_for(client.queues)
        job_id = (await client.trigger("traced", {"record": str(record)})).job_id
        job = await client.result(job_id, timeout_s=20)
    assert job["state"] == "succeeded" and job["trace_id"] is None
    (seen,) = read_events(record)
    assert "traceparent" not in seen
    assert await run.signal_and_wait(2) == 0  # SIGINT: a clean stop flushes whatever a provider would hold
    log = run.log()
    assert "import time:" in log and "orchestrator.jobs.runner" in log  # the listing is there
    assert "opentelemetry" not in log and "tracing: on" not in log
    assert job_log_ids(log, job_id, "job.end") == {}
    assert receiver.posts == 0 and receiver.spans == []
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # nothing installed a global one here
