"""The typed status: each component's status() type is the one `/status` gives its key, a leader's
published status reads back as status() returned it, and live `/status` bodies fit StatusBody
(the type its OpenAPI schema is derived from)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any, get_type_hints

import aiohttp
from pydantic import TypeAdapter

import orchestrator
from orchestrator.components import BaseComponent
from orchestrator.monitor.status import ProcessStatus, StatusBody
from tests.jobs.helpers import make_plugin, make_settings, run_app, wait_for

_SCHEDULE = {"id": "hourly", "plugin": "probe", "every": "1h"}


def _components() -> list[type[BaseComponent]]:
    # Every module is imported first: a component class exists only once its module is, and which
    # ones the tests before this one imported depends on the order (the binlog reader's was missed
    # when this file ran alone).
    for module in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: list[type[BaseComponent]] = []
    todo = list(BaseComponent.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("orchestrator."):
            found.append(cls)
    return found


def test_each_component_status_has_the_type_of_its_key() -> None:
    keys = get_type_hints(ProcessStatus)
    checked = set()
    for cls in _components():
        if cls.status is BaseComponent.status:
            continue
        # a class whose key depends on the instance declares the keys it can have
        for key in cls.__dict__.get("status_keys") or (cls.__dict__.get("status_key", cls.name),):
            assert key in keys, f"{cls.__name__}: no {key!r} in ProcessStatus"
            assert get_type_hints(cls.status)["return"] == keys[key], cls.__name__
            checked.add(key)
    # every component key of ProcessStatus is some component's
    assert checked == set(keys) - {"role", "components"}


async def test_published_status_reads_back_as_status_returned_it(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    leader_settings = make_settings(tmp_path, redis_url, schedules=[_SCHEDULE])
    async with run_app(leader_settings) as leader:
        assert leader.supervisor is not None
        supervisor = leader.supervisor
        leader_only = [s.component for s in supervisor.slots if s.component.leader_only]
        assert {c.name for c in leader_only} >= {"scheduler", "housekeeping"}

        async def same() -> bool:
            published = await supervisor.lease.published()
            for c in leader_only:
                entry = published.get(c.name)
                if entry is None or entry["status"][c.status_key] != json.loads(json.dumps(await c.status())):
                    return False
            return True

        await wait_for(same, timeout_s=20)
        scheduler = next(c for c in leader_only if c.name == "scheduler")
        assert [row["id"] for row in await scheduler.status()] == ["hourly"]  # type: ignore[index]

        # a worker-only instance shows them as the leader published them, in the same /status type
        async with run_app(make_settings(tmp_path, redis_url), role="worker") as worker:
            assert worker.http is not None
            body = await _status(worker.http.bound_port)
            assert body["schedules"] == json.loads(json.dumps(await scheduler.status()))
            assert body["leader"]["instance_id"] == leader.identity.instance_id and not body["leader"]["is_leader"]
            assert body["components"]["scheduler"]["state"] == "standby"
            _fits(body)
        assert leader.http is not None
        _fits(await _status(leader.http.bound_port))


async def _status(port: int | None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/status") as r:
        assert r.status == 200
        return dict(await r.json())


def _fits(body: dict[str, Any]) -> None:
    """Strict: no coercion (a string where an int belongs fails); keys beyond the type are welcome."""
    TypeAdapter(StatusBody).validate_json(json.dumps(body), strict=True)
    for key in ("leader", "redis", "http", "loop", "heartbeat", "workers", "venvs", "plugin_reload"):
        assert key in body, key
    for spilled in ("is_leader", "eligible", "redis_connections", "redis_sentinel"):
        assert spilled not in body, spilled
