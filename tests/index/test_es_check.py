"""`orchestrator es check` as a real CLI subprocess, with the real `elasticsearch` client over HTTP
against the ES-protocol double of tests/index/esdouble.py (no Elasticsearch can run here)."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path

from tests.index.esdouble import EsDouble
from tests.jobs.helpers import cli, make_settings
from tests.redis.servers import make_certs

RULES = {"rules": [{"name": "teachers", "table": "teachers", "index": {"name": "teachers"}}]}


async def test_es_check_reports_the_connection_and_the_target_indices(
    tmp_path: Path, redis_url: str, double: EsDouble
) -> None:
    settings = make_settings(tmp_path, redis_url)
    env = {
        "ORCH_CDC": json.dumps(RULES),
        "ES_HOSTS": f"{double.url},http://localhost:{double.port}",
        "ES_USERNAME": "u",
        "ES_PASSWORD": "p",
    }
    rules = await cli(settings, "cdc", "rules", **env)
    assert rules.rc == 0 and "-> index teachers" in rules.out, rules
    missing = await cli(settings, "es", "check", **env)
    assert missing.rc == 1, missing
    assert (
        "teachers: MISSING (rules: teachers)" in missing.out
        and "cluster double version 9.0.0 (2 host(s))" in missing.out
    )
    assert double.auth_seen[-1] == "Basic " + base64.b64encode(b"u:p").decode()

    double.indices["teachers"] = {}
    ok = await cli(settings, "es", "check", "--index", "other", "--json", **env)
    report = json.loads(ok.out)
    assert ok.rc == 1 and report["indices"] == [
        {"index": "other", "rules": [], "exists": False},
        {"index": "teachers", "rules": ["teachers"], "exists": True},
    ]
    double.indices["other"] = {}
    assert (await cli(settings, "es", "check", "--index", "other", **env)).rc == 0

    await double.stop()
    down = await cli(settings, "es", "check", **env)
    assert down.rc == 1 and "elasticsearch: unreachable" in down.err + down.out


async def test_es_check_without_es_hosts_is_a_config_error(tmp_path: Path, redis_url: str) -> None:
    result = await cli(make_settings(tmp_path, redis_url), "es", "check", ES_HOSTS="", ORCH_ES_HOSTS="")
    assert result.rc == 2 and "ES_HOSTS" in result.err


async def test_es_check_over_tls_with_the_ca_file_or_without_verification(tmp_path: Path, redis_url: str) -> None:
    certs = make_certs(tmp_path / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs["server_crt"], certs["server_key"])
    double = EsDouble()
    double.ssl_context = context
    double.indices["teachers"] = {}
    await double.start()
    try:
        settings = make_settings(tmp_path, redis_url)
        env = {"ORCH_CDC": json.dumps(RULES), "ES_HOSTS": double.url, "ES_API_KEY": "aWQ6a2V5"}
        trusted = await cli(settings, "es", "check", ES_CA_FILE=str(certs["ca"]), **env)
        assert trusted.rc == 0 and "teachers: exists" in trusted.out, trusted
        assert double.auth_seen[-1] == "ApiKey aWQ6a2V5"
        wrong = await cli(settings, "es", "check", ES_CA_FILE=str(certs["wrong_ca"]), **env)
        assert wrong.rc == 1 and "certificate verify failed" in wrong.err + wrong.out, wrong
        unverified = await cli(settings, "es", "check", ES_CA_FILE="", ES_VERIFY_CERTS="false", **env)
        assert unverified.rc == 0, unverified
    finally:
        await double.stop()
