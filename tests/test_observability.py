"""The SRE deliverables under deploy/: Prometheus alert rules (promtool), the example
Prometheus config, and the Grafana dashboard; then all of them against a live keygate (real
Envoy, the real openai and anthropic SDKs) scraped by a real Prometheus: every dashboard panel
has data, the rules load and evaluate, /metrics passes `promtool check metrics`, and 10 000
requests with random keys create no new series."""

from __future__ import annotations

import copy
import http.client
import json
import math
import os
import random
import re
import signal
import string
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import anthropic
import openai
import pytest
import yaml

from harness.keygate import counter
from harness.paths import REPO_ROOT
from harness.prometheus import Prometheus, PrometheusError, start_prometheus
from harness.stack import SECRETS, Stack, start_stack
from harness.webhook import WebhookReceiver

PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "keygate-alerts.yaml"
# promtool unit tests: keygate-alerts.test.yaml, and one file per later group of alerts
# (keygate-alerts-rotation.test.yaml).
RULE_TESTS = sorted(PROM_DIR.glob("keygate-alerts*.test.yaml"))
PROM_EXAMPLE = PROM_DIR / "prometheus.yaml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "keygate.json"

SEVERITIES = {"critical", "warning"}
ANNOTATIONS = {"summary", "description", "runbook"}

# What the live test substitutes for Grafana's variables ("All" for ours, fixed windows for
# the built-ins). Rates use 30s windows over a 1s scrape interval.
BUILTIN_VALUES = {"__rate_interval": "30s", "__interval": "30s", "__range": "5m"}
ALL_VALUE = ".*"
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
                    "__from", "__to", "__all", "__auto", "__dashboard", "__name", "__org", "__user", "timeFilter"}
VAR_REF = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")

# Dashboard queries (panel title, refId) that cannot return data in the live test stack, and
# why. Everything else must. Each entry is checked to still hold: the query must return nothing
# and its metrics must be absent from /metrics (when that changes, delete the entry).
NO_DATA_IN_TEST_STACK = {
    ("Credential refreshes and Vault calls", "B"):
        "keygate_vault_requests_total counts Vault API calls; the stack's credentials come from a secrets file",
    ("Config reloads, registry refreshes, ledger flushes", "B"):
        "keygate_registry_refresh_total counts polls of the Vault consumer store; the stack's consumers are in "
        "the config file",
}

# The live stack gives this consumer a monthly budget, so the budget queries have data.
BUDGET_CONSUMER = "team-openai"
BUDGET_USD = 250.0

# The live stack gives this credential a rotation policy and a rotation time (the secrets
# file's `rotated_at` field), so the rotation panels have data; it is far from due, so the
# rotation alerts stay quiet.
ROTATED_CREDENTIAL = "openai/production"
ROTATION_EVERY_S = 30 * 86400
ROTATED_AGO_S = 3 * 86400

SRE_DOC = REPO_ROOT / "docs" / "sre.md"
# A Rust string literal that is only a metric name (not a JSON value such as a scanner's
# `"type":"keygate_consumer_key"` in a test fixture).
METRIC_LITERAL = re.compile(r'(?<![:\w])"(keygate_[a-z_]+)"')

RANDOM_KEY_REQUESTS = 10_000
RANDOM_KEY_WARMUP = 1_000
# The live stack raises the failed-authentication guard (30 per minute per address by default)
# above every request the tests send from 127.0.0.1, so each random key reaches the key check
# and the lookup instead of being turned away with 429 after the first 30.
FAILED_AUTH_PER_MINUTE = 1_000_000
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


# ---------------------------------------------------------------- helpers


def promtool(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `promtool` (from PATH) with `args`; stdout and stderr captured as text."""
    return subprocess.run(
        ["promtool", *map(str, args)], input=stdin, capture_output=True, text=True, timeout=300, check=False
    )


def load_yaml(path: Path) -> Any:
    """Parse a YAML file."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule in the rules file, in order."""
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def dashboard() -> dict[str, Any]:
    """The parsed Grafana dashboard."""
    with open(DASHBOARD, encoding="utf-8") as fh:
        return json.load(fh)


def data_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-row panel, including panels nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def variable_refs(text: str) -> set[str]:
    """Names of Grafana variables referenced in `text` ($name, ${name}, ${name:fmt}, [[name]])."""
    return {next(g for g in m.groups() if g) for m in VAR_REF.finditer(text)}


def substitute(expr: str) -> str:
    """A panel query as Grafana would send it with every variable on "All"."""
    def value(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        return BUILTIN_VALUES.get(name, ALL_VALUE)

    return VAR_REF.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """keygate metric families a query reads (histogram suffixes stripped)."""
    return {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"\bkeygate_[a-z_]+\b", expr)}


def exposed_families(metrics_text: str) -> set[str]:
    """Metric families present in a /metrics exposition (histogram suffixes stripped)."""
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.sub(r"_(bucket|count|sum)$", "", re.split(r"[{ ]", line, maxsplit=1)[0]))
    return names


def series_set(metrics_text: str) -> set[str]:
    """Every series (name plus labels, without the value) in a /metrics exposition."""
    return {line.rsplit(" ", 1)[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    """True if an instant-query result holds at least one sample that is a number (not NaN)."""
    return any(math.isfinite(float(r["value"][1])) for r in result)


def random_key(valid_checksum: bool) -> str:
    """A random string shaped like a consumer key (`kg_live_<30 base62>_<6 base62>`).

    With `valid_checksum` its checksum is correct (CRC32 of the body in 6 base62 digits, as in
    src/auth/key.rs), so keygate looks it up and denies it as unknown_key; otherwise the
    checksum is random and it is denied as malformed_key before any lookup."""
    body = "kg_live_" + "".join(random.choices(BASE62, k=30))
    if not valid_checksum:
        return body + "_" + "".join(random.choices(BASE62, k=6))
    n = zlib.crc32(body.encode())
    digits = []
    for _ in range(6):
        digits.append(BASE62[n % 62])
        n //= 62
    return body + "_" + "".join(reversed(digits))


# ---------------------------------------------------------------- rules (static)


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", RULES)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 2, RULE_TESTS
    out = promtool("test", "rules", *RULE_TESTS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    cases = []
    for path in RULE_TESTS:
        tests = load_yaml(path)
        assert [Path(f).name for f in tests["rule_files"]] == [RULES.name], path
        cases += tests["tests"]
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts - firing == set(), f"alerts without a test case where they fire: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"alerts without a test case where they must not fire: {sorted(alerts - quiet)}"
    assert (firing | quiet) - alerts == set(), f"tests name alerts that do not exist: {sorted((firing | quiet) - alerts)}"


def test_every_alert_has_severity_and_annotations() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert [g["name"] for g in load_yaml(RULES)["groups"]] == ["keygate"]
    for rule in rules:
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        missing = ANNOTATIONS - set(rule.get("annotations", {}))
        assert not missing, f"{rule['alert']} lacks annotations {sorted(missing)}"


def test_example_prometheus_config_is_valid() -> None:
    out = promtool("check", "config", PROM_EXAMPLE)
    assert out.returncode == 0, out.stdout + out.stderr
    config = load_yaml(PROM_EXAMPLE)
    assert [j["job_name"] for j in config["scrape_configs"]] == ["keygate"]
    assert (PROM_DIR / config["rule_files"][0]).resolve() == RULES.resolve()


# ---------------------------------------------------------------- dashboard (static)


def test_dashboard_is_valid_and_every_variable_is_defined() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("consumer", "provider"):
        var = variables[name]
        assert var["type"] == "query" and var["multi"] and var["includeAll"], name
        assert "label_values(" in json.dumps(var["query"]), name
    panels = data_panels(dash)
    assert panels
    ids = [p["id"] for p in dash["panels"] + [q for p in dash["panels"] for q in p.get("panels", [])]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    undefined: dict[str, set[str]] = {}
    for panel in panels:
        assert panel.get("targets"), f"panel {panel['title']!r} has no target"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has an empty query"
        refs = variable_refs(json.dumps(panel)) - GRAFANA_BUILTINS - set(variables)
        if refs:
            undefined[panel["title"]] = refs
    refs = variable_refs(json.dumps(dash["templating"])) - GRAFANA_BUILTINS - set(variables)
    if refs:
        undefined["templating"] = refs
    assert not undefined, f"undefined variables: {undefined}"


def test_dashboard_consumer_queries_use_the_template_variables() -> None:
    """Queries over per-consumer metrics filter on $consumer (except the panel that is about
    consumer="unknown" on purpose)."""
    per_consumer = {"keygate_requests_total", "keygate_responses_total", "keygate_tokens_total",
                    "keygate_spend_usd_total", "keygate_spend_month_to_date_usd", "keygate_budget_usd",
                    "keygate_usage_estimated_total", "keygate_usage_unpriced_total", "keygate_request_bytes_total",
                    "keygate_response_bytes_total", "keygate_source_addresses"}
    unfiltered = []
    for panel in data_panels(dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            if metric_names(expr) & per_consumer and "$consumer" not in expr and 'consumer="unknown"' not in expr:
                unfiltered.append(f"{panel['title']}: {expr}")
    assert not unfiltered, "queries without consumer=~\"$consumer\":\n" + "\n".join(unfiltered)


# ---------------------------------------------------------------- metrics reference (static)


def source_metric_names() -> set[str]:
    """Every metric name keygate's Rust source spells out (`"keygate_…"` string literals: the
    name constants in src/telemetry.rs, src/detect, src/notify, src/audit.rs)."""
    names: set[str] = set()
    for path in (REPO_ROOT / "src").rglob("*.rs"):
        names |= set(METRIC_LITERAL.findall(path.read_text(encoding="utf-8")))
    return names


def sre_doc_metric_rows() -> list[str]:
    """Metric names in the first column of the metrics table in docs/sre.md (Metrics), in order;
    a row may list several (`a`, `b`)."""
    section = SRE_DOC.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `keygate_"):
            names += re.findall(r"`(keygate_[a-z_]+)`", line.split("|")[1])
    return names


def test_sre_doc_metrics_reference_lists_every_metric_once() -> None:
    rows = sre_doc_metric_rows()
    source = source_metric_names()
    assert len(source) >= 25, f"found only {sorted(source)} in src/"
    duplicates = sorted({n for n in rows if rows.count(n) > 1})
    assert not duplicates, f"listed more than once in docs/sre.md's metrics table: {duplicates}"
    assert sorted(source - set(rows)) == [], "metrics keygate exports that docs/sre.md's table lacks"
    assert sorted(set(rows) - source) == [], "docs/sre.md's table lists metrics keygate does not export"


# ---------------------------------------------------------------- live


@dataclass
class Live:
    """The stack, the Prometheus scraping it, and what its /metrics looked like after traffic."""

    stack: Stack
    prom: Prometheus
    metrics_after_traffic: str


def oai(s: Stack, key: str) -> openai.OpenAI:
    """An OpenAI SDK client pointed at Envoy."""
    return openai.OpenAI(base_url=f"{s.base_url}/v1", api_key=key, max_retries=0, timeout=10)


def ant(s: Stack, key: str) -> anthropic.Anthropic:
    """An Anthropic SDK client pointed at Envoy."""
    return anthropic.Anthropic(base_url=s.base_url, api_key=key, max_retries=0, timeout=10)


def raw(s: Stack, method: str, path: str, headers: dict[str, str]) -> int:
    """Send one request through Envoy byte for byte; return the status."""
    conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def drive_traffic(s: Stack) -> None:
    """One round of everything the dashboard shows: allowed calls with both SDKs (JSON and
    streaming, priced and unpriced models, cache and reasoning tokens), upstream errors, an
    interrupted stream (estimated usage), and one denial of each kind."""
    openai_client = oai(s, s.keys["openai"].key)
    openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"x-mock-cached-tokens": "2", "x-mock-reasoning-tokens": "3"},
    )
    chunks = list(openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count to five"}], stream=True, max_tokens=5,
    ))
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    openai_client.embeddings.create(model="text-embedding-3-small", input="embed me")
    assert openai_client.models.list().data
    with pytest.raises(openai.InternalServerError):
        openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers={"x-mock-status": "500"}
        )
    with pytest.raises(openai.RateLimitError):
        openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers={"x-mock-status": "429"}
        )
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises whatever a cut stream gives it
        for _ in openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "cut me off please"}], stream=True,
            max_tokens=20, extra_headers={"x-mock-interrupt-after": "3"},
        ):
            pass

    anthropic_client = ant(s, s.keys["anthropic"].key)
    cache = {"x-mock-cached-tokens": "5", "x-mock-cache-creation-tokens": "3"}
    anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}], extra_headers=cache
    )
    with anthropic_client.messages.stream(
        model="claude-haiku-4-5", max_tokens=6, messages=[{"role": "user", "content": "stream please"}],
        extra_headers=cache,
    ) as stream:
        assert stream.get_final_message().usage.output_tokens > 0
    anthropic_client.messages.create(  # no price for this model: counted as unpriced
        model="claude-test-model", max_tokens=4, messages=[{"role": "user", "content": "unpriced"}]
    )

    denied: list[tuple[Any, type[Exception]]] = [
        (lambda: oai(s, random_key(True)).models.list(), openai.AuthenticationError),
        (lambda: oai(s, "sk-proj-not-a-keygate-key").models.list(), openai.AuthenticationError),
        (lambda: oai(s, s.keys["expired"].key).models.list(), openai.AuthenticationError),
        (lambda: oai(s, s.keys["suspended"].key).models.list(), openai.PermissionDeniedError),
        (lambda: oai(s, s.keys["revoked"].key).models.list(), openai.PermissionDeniedError),
        (lambda: openai_client.files.list(), openai.PermissionDeniedError),
        (lambda: ant(s, random_key(True)).messages.create(
            model="claude-haiku-4-5", max_tokens=4, messages=[{"role": "user", "content": "x"}]),
         anthropic.AuthenticationError),
    ]
    for call, error in denied:
        with pytest.raises(error):
            call()
    assert raw(s, "GET", "/v1/models", {}) == 401
    assert raw(s, "POST", "/v1/chat/completions/%2e%2e/files",
               {"authorization": f"Bearer {s.keys['openai'].key}", "content-length": "0"}) in (400, 403, 404)


def give_budget(s: Stack, consumer: str, usd: float) -> None:
    """Set `limits.monthly_budget_usd` on one consumer in keygate's config file (as
    docs/limits-and-budgets.md shows) and wait for the reload to publish it as keygate_budget_usd."""
    config = copy.deepcopy(s.keygate.config)
    entry = next(c for c in config["consumers"] if c["name"] == consumer)
    entry["limits"] = {**entry.get("limits", {}), "monthly_budget_usd": usd}
    s.keygate.write_config(config)
    deadline = time.monotonic() + 10
    while counter(s.keygate.metrics(), "keygate_budget_usd", consumer=consumer) != usd:
        assert time.monotonic() < deadline, "keygate did not publish the new budget after the config reload"
        time.sleep(0.1)


def give_rotation_time(s: Stack, credential: str, ago_s: int) -> float:
    """Write `rotated_at` (`ago_s` seconds ago) next to the credential's key in the secrets
    file and wait for keygate to publish it; return that time (Unix seconds)."""
    rotated = int(time.time()) - ago_s
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rotated))
    s.keygate.write_secrets(SECRETS, {credential: {"rotated_at": stamp}})
    deadline = time.monotonic() + 10
    while counter(s.keygate.metrics(), "keygate_credential_rotated_timestamp_seconds", credential=credential) != rotated:
        assert time.monotonic() < deadline, "keygate did not publish the secrets file's rotated_at"
        time.sleep(0.1)
    return rotated


@pytest.fixture(scope="module")
def live(cargo_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Stack + Prometheus (scraping keygate every second, with the alert rules loaded), after
    two rounds of traffic with scrapes in between, so every rate() has samples."""
    workdir = tmp_path_factory.mktemp("observability")
    rotation = {"credentials": {ROTATED_CREDENTIAL: {"every": f"{ROTATION_EVERY_S // 86400}d"}}}
    stack = start_stack(workdir, "ext_proc", {"limits": {"failed_auth_per_minute": FAILED_AUTH_PER_MINUTE},
                                              "rotation": rotation})
    prom = None
    try:
        give_budget(stack, BUDGET_CONSUMER, BUDGET_USD)
        give_rotation_time(stack, ROTATED_CREDENTIAL, ROTATED_AGO_S)
        prom = start_prometheus(workdir, [f"127.0.0.1:{stack.keygate.admin_port}"], rule_files=[RULES])
        prom.wait_for_targets_up(scrapes=2)
        drive_traffic(stack)
        os.kill(stack.keygate.proc.pid, signal.SIGHUP)  # a config reload (keygate_config_reload_total)
        prom.wait_scrapes(3)
        drive_traffic(stack)
        prom.wait_scrapes(3)
        yield Live(stack, prom, stack.keygate.metrics())
    finally:
        if prom is not None:
            prom.stop()
        logs = stack.logs()
        stack.stop()
        for name, text in logs.items():
            for secret in stack.secrets():
                assert secret not in text, f"a secret appeared in {name}'s log"


def test_dashboard_variables_resolve_on_live_data(live: Live) -> None:
    providers = live.prom.api("label/provider/values", **{"match[]": "keygate_requests_total"})
    assert {"openai", "anthropic"} <= set(providers)
    consumers = live.prom.api("label/consumer/values", **{"match[]": 'keygate_requests_total{provider=~".*"}'})
    assert {"team-openai", "team-anthropic", "unknown"} <= set(consumers)


def test_every_dashboard_panel_has_data(live: Live) -> None:
    """Every query of every panel parses and returns a number, with "All" selected, except the
    few in NO_DATA_IN_TEST_STACK, whose metrics this stack cannot produce; those must really
    return nothing and their metrics be absent, so the list cannot go stale."""
    exposed = exposed_families(live.metrics_after_traffic)
    queries = {(panel["title"], target["refId"]): target["expr"]
               for panel in data_panels(dashboard()) for target in panel["targets"]}
    unknown = sorted(set(NO_DATA_IN_TEST_STACK) - set(queries))
    assert not unknown, f"NO_DATA_IN_TEST_STACK names queries the dashboard does not have: {unknown}"
    invalid: list[str] = []
    missing_metric: list[str] = []
    no_data: list[str] = []
    stale: list[str] = []
    for (title, ref), raw_expr in queries.items():
        expr = substitute(raw_expr)
        name = f"{title} [{ref}]"
        try:
            result = live.prom.query(expr)
        except PrometheusError as err:
            invalid.append(f"{name}: {err}")
            continue
        has_data = has_finite_value(result)
        absent = metric_names(expr) - exposed
        if (title, ref) in NO_DATA_IN_TEST_STACK:
            if has_data or not absent:
                stale.append(f"{name} ({NO_DATA_IN_TEST_STACK[title, ref]}) has data or its metric now: "
                             "remove it from NO_DATA_IN_TEST_STACK")
        elif not has_data:
            if absent:
                missing_metric.append(f"{name}: {expr} (not exported: {', '.join(sorted(absent))})")
            else:
                no_data.append(f"{name}: {expr}")
    problems = []
    if invalid:
        problems.append("invalid queries:\n  " + "\n  ".join(invalid))
    if missing_metric:
        problems.append("queries without data because keygate does not export their metric:\n  "
                        + "\n  ".join(missing_metric))
    if no_data:
        problems.append("queries without data although their metrics exist:\n  " + "\n  ".join(no_data))
    if stale:
        problems.append("stale allow-list entries:\n  " + "\n  ".join(stale))
    assert not problems, "\n".join(problems)


def test_budget_panel_shows_the_configured_budget(live: Live) -> None:
    """The month-to-date-vs-budget panel's budget query returns exactly the configured budget
    for the consumer that has one, and no series for consumers without one."""
    panel = next(p for p in data_panels(dashboard()) if p["title"] == "Month-to-date spend vs budget")
    budget_expr = next(t["expr"] for t in panel["targets"] if "keygate_budget_usd" in t["expr"])
    result = live.prom.query(substitute(budget_expr))
    assert {r["metric"]["consumer"]: float(r["value"][1]) for r in result} == {BUDGET_CONSUMER: BUDGET_USD}


def test_rotation_panel_shows_key_age_against_policy(live: Live) -> None:
    """The age-vs-policy panel shows the credential's age from its rotation time and its
    policy's period, for the credential with a policy only; the rotations panel has the
    credential's results, all 0."""
    panel = next(p for p in data_panels(dashboard()) if p["title"] == "Provider key age vs rotation policy")
    exprs = {t["refId"]: substitute(t["expr"]) for t in panel["targets"]}
    ages = {r["metric"]["credential"]: float(r["value"][1]) for r in live.prom.query(exprs["A"])}
    assert set(ages) == {ROTATED_CREDENTIAL}, ages
    assert ROTATED_AGO_S <= ages[ROTATED_CREDENTIAL] < ROTATED_AGO_S + 600, ages
    policy = {r["metric"]["credential"]: float(r["value"][1]) for r in live.prom.query(exprs["B"])}
    assert policy == {ROTATED_CREDENTIAL: ROTATION_EVERY_S}
    panel = next(p for p in data_panels(dashboard()) if p["title"].startswith("Provider key rotations by result"))
    [expr] = [substitute(t["expr"]) for t in panel["targets"]]
    results = {(r["metric"]["credential"], r["metric"]["result"]): float(r["value"][1]) for r in live.prom.query(expr)}
    assert results == {(ROTATED_CREDENTIAL, result): 0.0 for result in ("ok", "rolled_back", "failed")}


def test_alert_rules_load_and_evaluate_on_live_data(live: Live) -> None:
    """Every rule loads and evaluates, and on the healthy stack none would ever fire. The
    test runs seconds after the traffic, long before any `for:` period (1 to 10 minutes) could
    elapse, so "nothing is firing" alone proves nothing: instead no alert may even be pending
    (its expression true, waiting out `for:`), and each alert's expression, evaluated now by
    Prometheus itself, must return nothing. An alert whose condition holds on a healthy stack
    fails here at once rather than paging ten minutes into production."""
    rules = live.prom.rules()
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, f"rules failing to evaluate: {broken}"
    assert all(r.get("lastEvaluation", "").startswith("2") for r in rules), "every rule has been evaluated"
    active = live.prom.query("ALERTS")
    assert active == [], f"a healthy stack has pending or firing alerts: {[a['metric'] for a in active]}"
    would_fire = {r["alert"]: [x["metric"] for x in result] for r in alert_rules()
                  if (result := live.prom.query(r["expr"]))}
    assert not would_fire, f"alert conditions true on a healthy stack (they would fire after for:): {would_fire}"
    assert live.prom.query('up{job="keygate"} == 1'), "KeygateDown's up{job=\"keygate\"} does not match the scrape job"


def test_metrics_pass_promtool_check_metrics(live: Live) -> None:
    out = promtool("check", "metrics", stdin=live.stack.keygate.metrics())
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
        f"promtool check metrics:\n{out.stdout}{out.stderr}"
    )


def test_detection_and_notification_metrics_pass_promtool_check_metrics(cargo_build: Path, tmp_path: Path) -> None:
    """/metrics stays `promtool check metrics` clean once the containment metrics exist: a
    canary key is used (a detection) and the notification reaches a webhook."""
    hook = WebhookReceiver()
    stack = start_stack(tmp_path, "ext_proc", {"notify": {"webhooks": [{"url": hook.url, "format": "generic"}]}},
                        canaries=("canary-wiki",))
    try:
        with pytest.raises(openai.PermissionDeniedError):
            oai(stack, stack.keys["canary-wiki"].key).models.list()
        deadline = time.monotonic() + 10
        while True:
            text = stack.keygate.metrics()
            if counter(text, "keygate_notifications_total", result="sent") >= 1:
                break
            assert time.monotonic() < deadline, "no notification was sent for the canary"
            time.sleep(0.1)
        assert counter(text, "keygate_detections_total", consumer="canary-wiki", detector="canary") == 1
        out = promtool("check", "metrics", stdin=text)
    finally:
        stack.stop()
        hook.close()
    problems = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 0 and not problems, f"promtool check metrics:\n{out.stdout}{out.stderr}"


def _send_random_keys(port: int, count: int, seed: int) -> tuple[int, dict[int, int], dict[bool, int]]:
    """Send `count` requests with random key-shaped credentials over one keep-alive
    connection; return (requests sent, status counts, resends by valid checksum). A request
    Envoy answers with 504 (keygate missed the 0.5 s `message_timeout`, seen only under CI
    load) is sent again, up to three times; the last answer is the one counted."""
    rng = random.Random(seed)
    statuses: dict[int, int] = {}
    resent = {True: 0, False: 0}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers_for = [
        lambda k: {"authorization": f"Bearer {k}"},
        lambda k: {"x-api-key": k, "anthropic-version": "2023-06-01"},
        lambda k: {"api-key": k},
    ]
    paths = ["/v1/chat/completions", "/v1/models", "/v1/messages", "/v1/embeddings"]
    sent = 0
    for i in range(count):
        valid = i % 2 == 0
        key = random_key(valid_checksum=valid)
        path = rng.choice(paths) + ("" if i % 3 else f"?x={rng.randrange(1 << 30)}")
        headers = {**rng.choice(headers_for)(key), "x-keygate-consumer": f"spoof-{rng.randrange(1 << 30)}"}
        status, reconnected, again = None, False, 0
        while status is None:
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                if reconnected:
                    raise
                reconnected = True
                continue
            if resp.status == 504 and again < 3:
                again += 1
                continue
            status = resp.status
        resent[valid] += again
        statuses[status] = statuses.get(status, 0) + 1
        sent += 1
    conn.close()
    return sent, statuses, resent


def send_random_keys(port: int, total: int, threads: int = 4) -> tuple[dict[int, int], dict[bool, int]]:
    """Send `total` random-key requests through Envoy on `threads` keep-alive connections;
    return the count of each final response status, and how many requests were sent again
    after a 504 (by whether their key had a valid checksum)."""
    results: list[tuple[int, dict[int, int], dict[bool, int]]] = []
    errors: list[BaseException] = []

    def worker(seed: int, count: int) -> None:
        try:
            results.append(_send_random_keys(port, count, seed))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    shares = [total // threads + (1 if n < total % threads else 0) for n in range(threads)]
    pool = [threading.Thread(target=worker, args=(random.randrange(1 << 30), n)) for n in shares]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    assert sum(sent for sent, _, _ in results) == total
    statuses: dict[int, int] = {}
    resent = {True: 0, False: 0}
    for _, counts, again in results:
        for code, n in counts.items():
            statuses[code] = statuses.get(code, 0) + n
        for valid, n in again.items():
            resent[valid] += n
    return statuses, resent


def test_random_keys_create_no_new_series(live: Live) -> None:
    """Half the keys have a valid checksum (looked up, unknown_key), half not (malformed_key),
    and every one of them gets that 401: the live stack's failed-auth guard is raised out of
    the way, so all 11 000 reach the key check. A warm-up batch first lets any fixed-enum
    series appear; after it, only sample values may change. A request Envoy timed out on
    (504) is sent again, and keygate may still count it when it answers late: each count may
    exceed its share by at most the requests resent."""
    kg = live.stack.keygate
    warmup, _ = send_random_keys(live.stack.envoy_port, RANDOM_KEY_WARMUP)
    assert warmup == {401: RANDOM_KEY_WARMUP}, warmup
    before = kg.metrics()
    statuses, resent = send_random_keys(live.stack.envoy_port, RANDOM_KEY_REQUESTS)
    assert statuses == {401: RANDOM_KEY_REQUESTS}, "every random key is denied by the key check, none by the guard"
    extra = resent[True] + resent[False]
    # keygate counts a denial when it answers Envoy: poll until the last one is counted.
    deadline = time.monotonic() + 5
    while counter(after := kg.metrics(), "keygate_requests_total", consumer="unknown") < (
            counter(before, "keygate_requests_total", consumer="unknown") + RANDOM_KEY_REQUESTS):
        assert time.monotonic() < deadline, "not every random key was counted as consumer=\"unknown\""
        time.sleep(0.05)
    if extra:
        time.sleep(1)  # a resent request's first try may still be counted
        after = kg.metrics()

    new_series = series_set(after) - series_set(before)
    assert not new_series, f"{len(new_series)} new series, e.g. {sorted(new_series)[:5]}"
    assert series_set(before) - series_set(after) == set()

    def delta(**labels: str) -> float:
        return counter(after, "keygate_requests_total", **labels) - counter(before, "keygate_requests_total", **labels)

    assert RANDOM_KEY_REQUESTS <= delta(consumer="unknown") <= RANDOM_KEY_REQUESTS + extra, \
        "every random key counts as consumer=\"unknown\""
    half = RANDOM_KEY_REQUESTS // 2
    assert half <= delta(outcome="unknown_key") <= half + resent[True]
    assert half <= delta(outcome="malformed_key") <= half + resent[False]
    assert delta(outcome="auth_flood") == 0
