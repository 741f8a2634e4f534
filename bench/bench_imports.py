"""What `orchestrator run` costs in memory before it does anything: RSS after each import.

    .venv/bin/python bench/bench_imports.py [--reps 3] [--output results/imports-<date>.json]

Each row is a fresh interpreter that imports a list of modules in order and reads its own RSS
(`/proc/self/status`) after each one; a module that an earlier one already pulled in costs nothing
where it is listed. Three lists:

- `stack`: only the libraries DESIGN.md puts on the run path (asyncio on uvloop, redis-py with
  hiredis, arq, aiohttp's server), without a line of ours: the floor any build of this design
  starts from.
- `stack + config`: the same, then pydantic and pydantic-settings (settings and manifests).
- `orchestrator run`: what `orchestrator run` imports before it starts its components.

The idle process itself (after start-up, its pools and components live) is measured by
`bench/run` (footprint); this script says how much of that is imports, and whose.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
STACK = ["asyncio", "uvloop", "hiredis", "redis.asyncio", "arq", "aiohttp.web"]
LISTS = {
    "stack": STACK,
    "stack + config": [*STACK, "pydantic", "pydantic_settings"],
    "orchestrator run": ["asyncio", "uvloop", "orchestrator.cli.main", "orchestrator.app"],
}

_PROBE = """
import importlib, json, sys
def status():
    out = {}
    with open('/proc/self/status') as fh:
        for line in fh:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'RssAnon', 'RssFile'):
                out[key] = int(value.split()[0]) / 1024
    return out
steps = [['interpreter', status()]]
for name in sys.argv[1:]:
    importlib.import_module(name)
    steps.append([name, status()])
print(json.dumps(steps))
"""


def probe(modules: list[str]) -> list[tuple[str, dict[str, float]]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, check=True)
    return [(name, values) for name, values in json.loads(out.stdout)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()
    result: dict[str, Any] = {"python": sys.version.split()[0], "lists": {}}
    for label, modules in LISTS.items():
        runs = [probe(modules) for _ in range(args.reps)]
        rows = []
        for i, (name, _) in enumerate(runs[0]):
            rss = statistics.median(r[i][1]["VmRSS"] for r in runs)
            prev = statistics.median(r[i - 1][1]["VmRSS"] for r in runs) if i else 0.0
            rows.append({"import": name, "rss_mb": round(rss, 1), "step_mb": round(rss - prev, 1) if i else None})
        last = runs[0][-1][1]
        result["lists"][label] = {
            "rows": rows,
            "rss_mb": rows[-1]["rss_mb"],
            "rss_anon_mb": round(last["RssAnon"], 1),
            "rss_file_mb": round(last["RssFile"], 1),
        }
        print(f"\n{label}: {rows[-1]['rss_mb']} MB (medians of {args.reps})\n")
        print("| import | RSS after, MB | step, MB |\n|---|---|---|")
        for row in rows:
            print(f"| {row['import']} | {row['rss_mb']} | {'' if row['step_mb'] is None else row['step_mb']} |")
    output = args.output or BENCH / "results" / f"imports-{datetime.date.today().isoformat()}.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {output}")


if __name__ == "__main__":
    main()
