"""Code vulture reports as unused that is alive where it cannot look (`.venv/bin/vulture`, scripts/test).

Reviewed one by one: each line names what reads it. vulture matches by name only, so a line here
keeps every definition of that name alive; keep the list short and re-check it when code goes.
Pydantic validators need no line: pyproject.toml ignores `@field_validator`/`@model_validator`.
Never imported by the project; ruff allows the bare attribute reads (B018) in this file.
"""

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# -- read by a library, by name --
_.model_config  # pydantic's class-level model configuration
_.settings_customise_sources  # pydantic-settings' hook on Settings (config.py): the source order
_.settings_cls  # (parameters of that hook's signature, given by pydantic-settings)
_.file_secret_settings  # (ditto)
_.exc_type  # `__aexit__`'s first argument (plugins/launcher.py), required by the protocol
_.data_received  # asyncio.Protocol callbacks (plugins/output.py, spawn.py, warm.py): the loop calls them
_.eof_received  # (ditto)
_.is_closing  # asyncio.SubprocessTransport methods of plugins/spawn.py's transport: asyncio calls them
_.get_extra_info  # (ditto)
_.caption  # rich's Table.caption (cli/schedules.py): rich prints it under the table
# plugins/shim.py hands an object with these attributes to `_json.make_scanner`, which reads them
# as a json.JSONDecoder's
_.strict
_.object_hook
_.object_pairs_hook
_.parse_float
_.parse_int
_.parse_constant
_.memo
_.WorkerSettings  # the arq peer's worker class (bench/peers/arq_bench.py), named on arq's command line
_.functions  # (arq reads these class attributes of WorkerSettings)
_.redis_settings  # (ditto)
_.poll_delay  # (ditto)
_.broker_url  # Celery's configuration (bench/peers/celery_bench.py), read by Celery
_.result_backend  # (ditto)

# -- fields read by serialisation, not by attribute --
_.interrupted  # JobRecord / RecordUpdate (jobs/model.py): Redis hash fields, mapped through dataclasses.fields
_.retried_as  # (ditto; written by Client.retry)
_.cancel_requested  # (ditto; set by the cancel script)
_.last_slot  # schedules' HistoryEntry (`dump()`: its __dict__ as JSON) and HistoryOut (an /api response)
_.memory_mb  # plugin.json `limits` (plugins/manifest.py): model_dump() to the child, applied by shim.py
_.cpu_seconds  # (ditto)
# /api response models (monitor/api_models.py, monitor/schedules_api.py, monitor/workflows_api.py):
# pydantic serialises them
_.created_at
_.depth
_.requested
_.uptime_s
_.next_run_at
_.last_job_id
_.last_state

# -- the public API (README, "Python API"): orchestrator.compat, the old calls --
_.trigger_plugin
_.get_task_status
_.batch_trigger_plugins
_.execute_plugin
_.enable_plugin
_.disable_plugin
_.reload_plugin
_.health_check

# -- read only in a string annotation (vulture does not parse those) --
_.Dumps  # plugins/shim.py's type alias, quoted because typing is not imported at run time

# -- read only by tests: hooks and probes the suite relies on (tests stay unchanged here) --
_.poke  # ChangePoller.poke / IndexSink.poke: start the next round now instead of after the interval
_.python_for  # VenvManager.python_for (tests/plugins/test_plugin_envs.py)
_.builds  # VenvManager.builds: venvs built, counted by the venv-sharing tests
_.spares_ready  # Launcher.spares_ready (tests/plugins/test_plugin_prestart.py)
_.pool_sizes  # Launcher.pool_sizes (tests/plugins/test_plugin_pool*.py)
_.holder  # LeaderLease.holder: the lease as last read (tests/jobs/test_leader.py)
_.from_environ  # TracingSettings.from_environ: for a Client used as a library (its docstring; the README)
_.acl_setuser  # the README's `ACL SETUSER` line, pinned by tests/redis/test_redis_acl.py

# -- fields of the /status TypedDicts (monitor/status.py and each package's status types): set where
# a status is built, read only as JSON (the /status body, the dashboard, `orchestrator top`, OpenAPI)
_.published_at
_.server_checks  # CdcOn/CdcOff (cdc/status.py): `orchestrator cdc status` with binlog rules
_.index_entries_trimmed
_.plugin_reload
_.reconcile
_.housekeeping
_.elasticsearch
_.valid
_.invalid
_.misfires
_.overlap_skips
# jobs/throttle.py PluginThrottle and monitor/api_models.py ThrottleOut: written and read as dict
# keys (`/status` `throttles`, the metrics' counters, the API's throttle view)
_.refused
_.over_cap
# cdc/binlog_capture.py: the /status keys a BinlogCapture can have (read by tests/monitor/test_status_types.py);
# monitor/status.py ProcessStatus: the key it has next to the poller
_.status_keys
_.cdc_binlog
# orchestrator/__init__.py: Python calls a module's __getattr__ for the lazily loaded names (PEP 562)
_.__getattr__
