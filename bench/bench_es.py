"""The index sink: changes per second from MySQL commit to `_bulk` accepted, and HTTP requests per 1,000 changes.

    .venv/bin/python bench/bench_es.py [--changes 20000] [--rounds 3] [--batch 500] [--loop uvloop|asyncio]

No Elasticsearch can run here: the sink talks, with the real `elasticsearch` async client over
HTTP, to the ES-protocol double of tests/index/esdouble.py, running in the same process (so the
double's own work is counted against the sink: a real cluster would take that elsewhere). Starts a
private MariaDB and Redis like bench_cdc.py. Per round, on a fresh table with the capture triggers:

- **live**: the ChangePoller (50 ms poll) and the IndexSink run; a writer commits `--changes` rows
  in 100-row INSERTs as fast as it can. Changes/s from the first COMMIT until the double has
  accepted the last document, and the double's HTTP requests per 1,000 changes.
- **backlog**: the same rows are committed first, then the poller and the sink start: the drain rate.
Prints JSON; medians over `--rounds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cdc import Bench  # type: ignore[import-not-found,unused-ignore]

from orchestrator.config import Settings
from orchestrator.index.es_client import es_client
from orchestrator.index.sink import IndexSink
from tests.index.esdouble import EsDouble
from tests.services import MariaDBServer, RedisServer


async def one_round(bench: Bench, changes: int, batch: int, *, live: bool) -> dict[str, Any]:
    await bench.reset()
    double = EsDouble()
    await double.start()
    settings = bench.settings.model_copy(update={"es_hosts": [double.url]})

    async def write() -> None:
        for start in range(0, changes, 100):
            values = ", ".join(f"('paid', {i}.50, 'row {start + i}')" for i in range(min(100, changes - start)))
            await bench.sql(f"INSERT INTO orders (status, total, note) VALUES {values}")

    if not live:
        await write()
    poller, tasks, redis = await bench.poller(0.05)
    es = es_client(settings)
    sink = IndexSink(es, redis, ["orders"], max_actions=batch, max_wait_s=settings.es_bulk_max_wait_s)
    started = time.perf_counter()
    cpu0 = time.process_time()
    tasks += [asyncio.create_task(poller.run()), asyncio.create_task(sink.run())]
    if live:
        await write()
    while True:  # a benchmark may poll: the double is the finish line
        if len(double.docs("orders")) >= changes:
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await es.close()
    await redis.aclose()
    await double.stop()
    return {
        "changes": changes,
        "seconds": round(elapsed, 3),
        "per_s": round(changes / elapsed),
        "bulk_requests": double.bulk_calls,
        "http_requests_per_1000": round(double.requests * 1000 / changes, 2),
        "cpu_s": round(cpu, 2),
    }


async def main(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    bench = Bench(settings)
    out: dict[str, Any] = {
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "loop": args.loop,
            "load_avg": os.getloadavg(),
        },
        "batch": args.batch,
    }
    for mode in ("live", "backlog"):
        runs = [await one_round(bench, args.changes, args.batch, live=mode == "live") for _ in range(args.rounds)]
        out[mode] = {
            "rounds": runs,
            "median_per_s": statistics.median(r["per_s"] for r in runs),
            "median_http_requests_per_1000": statistics.median(r["http_requests_per_1000"] for r in runs),
        }
    return out


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="es_bulk_max_actions")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-es-") as tmp:
        base = Path(tmp)
        (base / "redis").mkdir()
        (base / "mariadb").mkdir()
        redis_server = RedisServer.from_env_or_start(base / "redis")
        mariadb = MariaDBServer.from_env_or_start(base / "mariadb")
        (base / "plugins").mkdir()
        rule = {"name": "orders", "table": "orders", "index": {"name": "orders"}}
        settings = Settings(
            redis_url=redis_server.url,
            database_url=mariadb.url,
            plugins_dir=base / "plugins",
            state_dir=base / "state",
            cdc={"rules": [rule]},
        )
        try:
            if args.loop == "uvloop":
                import uvloop

                result = uvloop.run(main(args, settings))
            else:
                result = asyncio.run(main(args, settings))
        finally:
            for server in (mariadb, redis_server):
                if not server.external:
                    server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    cli()
