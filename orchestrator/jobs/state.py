"""Job records in Redis: the atomic transitions, the indexes by state and plugin, and stats.

Every transition is one round trip (a Lua script or a pipelined MULTI): the record, the state
indexes, arq's keys and the wake-up/done notifications change together or not at all.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix

from orchestrator.jobs.model import STATES, TERMINAL, Keys, decode_record, encode_record, now, record_to_json

logger = logging.getLogger(__name__)

# KEYS: record, arq job, queue zset, state zset, plugin zset, all-jobs zset
# ARGV: job_id, ttl_ms, arq payload, queue score, index score, wake channel, field, value, ...
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[1])
return 1
"""

# KEYS: record, state:queued, state:deferred, state:running, instance-running set, queue-running zset
# ARGV: job_id, instance id, now
# Returns the record after the transition, or the untouched record when it is already final
# (cancelled while arq was picking it up): the caller then does not run it.
_START = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return nil end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then
  return redis.call('HGETALL', KEYS[1])
end
redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[3], 'instance', ARGV[2])
redis.call('HDEL', KEYS[1], 'finished_at', 'duration_s', 'exit_code', 'error', 'error_type', 'traceback')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: record, arq job, queue zset, arq in-progress, state:queued, state:deferred, state:cancelled, arq abort zset
# ARGV: job_id, now, ttl_ms, done channel
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return st end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[2], 'error', 'cancelled before it started')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  redis.call('ZADD', KEYS[7], ARGV[2], ARGV[1])
  redis.call('PUBLISH', ARGV[4], 'cancelled')
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
redis.call('ZADD', KEYS[8], math.floor(ARGV[2] * 1000), ARGV[1])
redis.call('PUBLISH', 'orch:cancel', ARGV[1])
return 'cancelling'
"""

# Put back every job a dead instance was running: arq's in-progress key would otherwise hold
# them until the job timeout. KEYS: instance-running set, instances hash, state:running, state:queued
# ARGV: instance id, now. Returns the released job ids.
_RELEASE = """
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
  local rec = 'orch:job:' .. id
  redis.call('DEL', 'arq:in-progress:' .. id)
  if redis.call('HGET', rec, 'state') == 'running' then
    local q = redis.call('HGET', rec, 'queue')
    redis.call('HINCRBY', rec, 'attempt', -1)
    redis.call('HSET', rec, 'state', 'queued', 'interrupted', ARGV[2])
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZADD', KEYS[4], ARGV[2], id)
    if q then
      redis.call('ZREM', 'orch:queue-running:' .. q, id)
      redis.call('PUBLISH', 'orch:wake:' .. q, id)
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', 'orch:heartbeat:' .. ARGV[1])
return ids
"""


class JobStore:
    """Reads and writes job records. Shared by the client, the workers and the monitor.

    Args:
        redis: an arq connection (a redis.asyncio client); the caller owns and closes it.
        result_ttl_s: how long finished records, results and logs are kept.
    """

    def __init__(self, redis: ArqRedis, *, result_ttl_s: float) -> None:
        self.redis = redis
        self.ttl_ms = int(result_ttl_s * 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._start = redis.register_script(_START)
        self._cancel = redis.register_script(_CANCEL)
        self._release = redis.register_script(_RELEASE)

    # -- writes --
    async def enqueue(self, record: dict[str, Any], *, arq_payload: bytes, score: int) -> bool:
        """Create the record and the arq job at once; False (nothing written) if the id exists."""
        job_id = record["job_id"]
        fields = encode_record(record)
        args: list[Any] = [job_id, self.ttl_ms, arq_payload, score, record["enqueued_at"]]
        args.append(Keys.wake_channel(record["queue"]))
        for k, v in fields.items():
            args += [k, v]
        keys = [
            Keys.job(job_id),
            job_key_prefix + job_id,
            Keys.queue(record["queue"]),
            Keys.state(record["state"]),
            Keys.plugin_jobs(record["plugin"]),
            Keys.all_jobs,
        ]
        return bool(await self._enqueue(keys=keys, args=args))

    async def start(self, job_id: str, queue: str, instance_id: str) -> dict[str, Any] | None:
        keys = [
            Keys.job(job_id),
            Keys.state("queued"),
            Keys.state("deferred"),
            Keys.state("running"),
            Keys.instance_running(instance_id),
            Keys.queue_running(queue),
        ]
        flat = await self._start(keys=keys, args=[job_id, instance_id, now()])
        if not flat:
            return None
        return decode_record(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def finish(self, record: dict[str, Any], new_state: str, fields: dict[str, Any], *, instance_id: str) -> None:
        """Leave `running` for `new_state` (a final state, `deferred` for a retry, `queued` when put back)."""
        job_id = record["job_id"]
        ts = now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(Keys.job(job_id), mapping=encode_record({**fields, "state": new_state}))
            pipe.pexpire(Keys.job(job_id), self.ttl_ms)
            pipe.zrem(Keys.state("running"), job_id)
            pipe.zadd(Keys.state(new_state), {job_id: ts})
            pipe.srem(Keys.instance_running(instance_id), job_id)
            pipe.zrem(Keys.queue_running(record["queue"]), job_id)
            if new_state in TERMINAL:
                pipe.publish(Keys.done_channel(job_id), new_state)
            await pipe.execute()

    async def mark_final_without_run(self, job_id: str, state: str, error: str) -> None:
        """arq gave up on a job before our code ran (aborted before start, expired payload)."""
        ts = now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(Keys.job(job_id), mapping={"state": state, "finished_at": str(ts), "error": error})
            pipe.pexpire(Keys.job(job_id), self.ttl_ms)
            for s in STATES:
                if s != state:
                    pipe.zrem(Keys.state(s), job_id)
            pipe.zadd(Keys.state(state), {job_id: ts})
            pipe.publish(Keys.done_channel(job_id), state)
            await pipe.execute()

    async def cancel(self, job_id: str, queue: str) -> str:
        """'cancelled' (it was waiting), 'cancelling' (it runs: its worker stops it), a final state, or 'missing'."""
        keys = [
            Keys.job(job_id),
            job_key_prefix + job_id,
            Keys.queue(queue),
            in_progress_key_prefix + job_id,
            Keys.state("queued"),
            Keys.state("deferred"),
            Keys.state("cancelled"),
            abort_jobs_ss,
        ]
        result = await self._cancel(keys=keys, args=[job_id, now(), self.ttl_ms, Keys.done_channel(job_id)])
        return result.decode() if isinstance(result, bytes) else str(result)

    async def release_instance(self, instance_id: str) -> list[str]:
        keys = [Keys.instance_running(instance_id), Keys.instances, Keys.state("running"), Keys.state("queued")]
        ids = await self._release(keys=keys, args=[instance_id, now()])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def append_log(self, job_id: str, lines: list[tuple[str, str]], *, max_lines: int) -> None:
        if not lines:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, line in lines:
                pipe.xadd(Keys.log(job_id), {"s": stream, "l": line}, maxlen=max_lines, approximate=True)
            pipe.pexpire(Keys.log(job_id), self.ttl_ms)
            await pipe.execute()

    async def forget_retry_counter(self, job_id: str) -> None:
        # arq counts its own tries and gives up after max_tries; ours are counted in the record.
        await self.redis.delete(retry_key_prefix + job_id)

    # -- reads --
    async def get(self, job_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(Keys.job(job_id))  # type: ignore[misc]
        return decode_record(raw) if raw else None

    async def get_many(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        if not job_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(Keys.job(job_id))
            raws = await pipe.execute()
        return [decode_record(r) if r else None for r in raws]

    async def states_of(self, job_ids: list[str]) -> list[str | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(Keys.job(job_id), "state")
            raws = await pipe.execute()
        return [r.decode() if r else None for r in raws]

    async def list_jobs(
        self, *, state: str | None = None, plugin: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Newest first."""
        index = Keys.plugin_jobs(plugin) if plugin else Keys.state(state) if state else Keys.all_jobs
        # Filtering a plugin index by state needs to read past the rows it drops.
        window = limit * 10 if (plugin and state) else limit
        ids = [i.decode() for i in await self.redis.zrevrange(index, 0, window - 1)]
        out = []
        for record in await self.get_many(ids):
            if record is None or (state and record.get("state") != state):
                continue
            out.append(record_to_json(record))
            if len(out) >= limit:
                break
        return out

    async def stats(self, queues: dict[str, int]) -> dict[str, Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in STATES:
                pipe.zcard(Keys.state(s))
            for q in queues:
                pipe.zcard(Keys.queue(q))
                pipe.zcard(Keys.queue_running(q))
            counts = await pipe.execute()
        states = dict(zip(STATES, counts[: len(STATES)], strict=True))
        out_queues = {}
        rest = counts[len(STATES) :]
        for i, (q, concurrency) in enumerate(queues.items()):
            total, running = rest[2 * i], rest[2 * i + 1]
            # arq keeps a running job in its queue set until it finishes
            out_queues[q] = {"depth": max(total - running, 0), "running": running, "concurrency": concurrency}
        return {"states": states, "queues": out_queues}

    async def trim_indexes(self) -> int:
        """Drop index entries whose records have expired (older than the result TTL)."""
        cutoff = now() - self.ttl_ms / 1000
        removed = 0
        keys = [Keys.state(s) for s in STATES] + [Keys.all_jobs]
        async for key in self.redis.scan_iter(match="orch:plugin-jobs:*", count=200):
            keys.append(key.decode() if isinstance(key, bytes) else key)
        for key in keys:
            removed += await self.redis.zremrangebyscore(key, "-inf", cutoff)
        return removed

    async def read_log(self, job_id: str, after: str = "-", count: int = 1000) -> list[tuple[str, str, str]]:
        """(entry id, stream, line) after the given stream id."""
        start = "-" if after == "-" else f"({after}"
        entries = await self.redis.xrange(Keys.log(job_id), min=start, max="+", count=count)
        return [(eid.decode(), f[b"s"].decode(), f[b"l"].decode()) for eid, f in entries]

    async def published_json(self, key: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(key)  # type: ignore[misc]
        return {k.decode(): json.loads(v) for k, v in raw.items()}
