"""Celery 5 peer: the app a worker is started from, and the load generator.

Worker (started by the harness, as a user would):
    celery -A celery_bench worker --pool solo|prefork|threads --concurrency C --loglevel WARNING
    celery -A celery_bench beat --schedule FILE --loglevel WARNING
Load generator (a separate process):
    python celery_bench.py {ready,throughput,latency} --redis-port P ...
    python celery_bench.py chord --redis-port P --n N   (bench/bench_workflows.py)

Broker and result backend are the same Redis (BENCH_REDIS_URL); results go through the Redis
backend, so `.get()` waits on pub/sub.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("celery_bench", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="join")
def join(results: list[object]) -> int:
    """A chord's body: gets every member's result (Celery's Redis backend counts the members)."""
    return len(results)


def chord_run(n: int, timeout_s: float, redis_port: int) -> dict[str, object]:
    """One chord of `n` no-op members and a join, from the first enqueue to the join's stored result.

    The join's end is read from its result key every 10 ms, not with `.get()`: in our first 10,000
    run `.get()` never returned although the join's result was stored (the figure would then be
    Celery's result wait, not its chord).
    """
    import json
    import time

    import redis
    from celery import chord

    r = redis.Redis(host="127.0.0.1", port=redis_port)
    started = time.perf_counter()
    result = chord(noop.s() for _ in range(n))(join.s())
    sent = time.perf_counter() - started
    key = f"celery-task-meta-{result.id}"
    while time.perf_counter() - started < timeout_s:
        raw = r.get(key)
        if raw is not None and json.loads(raw)["status"] in ("SUCCESS", "FAILURE"):
            meta = json.loads(raw)
            return {"n": n, "joined": meta["result"], "seconds": time.perf_counter() - started, "sent_s": sent}
        time.sleep(0.01)
    return {"n": n, "joined": None, "seconds": None, "sent_s": sent, "error": f"no join result in {timeout_s}s"}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import benchlib
    import redis

    if sys.argv[1:2] == ["chord"]:
        port, n = int(sys.argv[sys.argv.index("--redis-port") + 1]), int(sys.argv[sys.argv.index("--n") + 1])
        app.conf.broker_url = app.conf.result_backend = f"redis://127.0.0.1:{port}/0"
        noop.delay().get(timeout=30)  # the worker is up
        timeout_s = float(sys.argv[sys.argv.index("--timeout-s") + 1]) if "--timeout-s" in sys.argv else 600.0
        benchlib.emit(chord_run(n, timeout_s=timeout_s, redis_port=port))
        return

    args = benchlib.loadgen_args(["default"])
    url = f"redis://{args.redis_host}:{args.redis_port}/0"
    app.conf.broker_url = url
    app.conf.result_backend = url
    first = noop.delay()
    first.get(timeout=30 if args.mode == "ready" else 10)
    if args.mode == "ready":
        benchlib.emit({"ready": {"state": first.state}})
        return
    if args.mode == "throughput":
        r = redis.Redis(host=args.redis_host, port=args.redis_port)
        progress = benchlib.KeyProgress()
        prefix = "celery-task-meta-"

        def enqueue() -> None:
            progress.keys.append(prefix + noop.delay().id)

        out = benchlib.throughput_sync(args, enqueue, lambda: progress.done_sync(r.exists))
    else:

        def roundtrip() -> None:
            noop.delay().get(timeout=30)

        out = benchlib.latency_sync(args, roundtrip)
    out["variant"] = "delay().get()" if args.mode == "latency" else "delay()"
    benchlib.emit(out)


if __name__ == "__main__":
    main()
