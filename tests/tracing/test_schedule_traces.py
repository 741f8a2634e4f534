"""A fired schedule slot is the root of its job's trace (a real scheduler on a real Redis and lease,
its clock moved by the test; spans to a real OTLP/HTTP receiver)."""

from __future__ import annotations

from orchestrator.schedules.model import job_id_for
from orchestrator.tracing import build as tracing
from orchestrator.tracing.settings import TracingSettings
from tests.schedules.conftest import Rig
from tests.tracing.receiver import otlp_receiver

S0 = 1_000_020.0  # a slot of an every-10s schedule


async def test_a_fired_slot_is_the_root_of_the_trace_its_job_joins(rig: Rig) -> None:
    await rig.client.add_schedule(id="tick", plugin="probe", every="10s", overlap="allow")
    rig.clock.t = S0 - 9.5
    async with otlp_receiver() as receiver:
        spans = tracing.build(TracingSettings(otel_exporter_otlp_endpoint=receiver.url))
        try:
            async with rig.scheduler(tracing=spans) as sched:
                await rig.at(sched, S0)
        finally:
            await spans.aclose()  # flushes: the span is at the receiver when this returns
    job = await rig.client.status(job_id_for("tick", S0))
    assert job is not None
    (fire,) = receiver.named("schedule.fire")
    assert fire.parent_id == "" and job["trace_id"] == fire.trace_id
    assert fire.attributes["schedule.id"] == "tick" and fire.attributes["schedule.slot"].startswith("1970-01-12T")
