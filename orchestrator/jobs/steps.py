"""The job side of workflows: the Lua snippet (lua/workflow.lua) that advances a workflow when one
of its jobs ends, inside the finish and cancel scripts, and the key names it derives from an id.

The workflows package builds and reads workflows; it composes its own scripts with this snippet,
so both sides start a step the one way.
"""

from __future__ import annotations

from typing import Final

from arq.constants import abort_jobs_ss, job_key_prefix

from orchestrator.jobs.model import Keys
from orchestrator.redis import scripts as lua

# Each prefix is made by the Keys function itself, so the Lua names keys exactly as Python does.
WORKFLOW_CONSTANTS: Final[dict[str, lua.LuaValue]] = {
    "WF_PREFIX": Keys.workflow(""),
    "JOB_PREFIX": Keys.job(""),
    "LOG_PREFIX": Keys.log(""),
    "ARQ_JOB_PREFIX": job_key_prefix,
    "QUEUE_PREFIX": Keys.queue(""),
    "STATE_PREFIX": Keys.state(""),
    "PLUGIN_JOBS_PREFIX": Keys.plugin_jobs(""),
    "ALL_JOBS": Keys.all_jobs,
    "WAKE_PREFIX": Keys.wake_channel(""),
    "DONE_PREFIX": Keys.done_channel(""),
    "WF_DONE_PREFIX": Keys.workflow_done_channel(""),
    "WF_OUTCOMES": Keys.workflow_outcomes,
    "ABORT_KEY": abort_jobs_ss,
    "CANCEL_CHANNEL": Keys.cancel_channel,
}

WORKFLOW_STEP: Final[str] = lua.script("orchestrator.jobs", "workflow.lua", constants=WORKFLOW_CONSTANTS)
