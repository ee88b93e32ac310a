"""keygate's lifecycle behind real Envoy: fail closed when it is down, hot reload on SIGHUP and
on a change of the config or the secrets file, a bad config keeps the old one, readiness
follows credentials."""

from __future__ import annotations

import copy
import json
import signal
import time
from typing import Iterator

import openai
import pytest

from harness import leaks
from harness.keygate import counter, mint_key
from harness.mock import header_values, mock_clear, mock_requests
from harness.stack import KEYGATE_LOG, SECRETS, Stack, consumer, start_stack


@pytest.fixture(params=["ext_proc", "ext_authz"])
def stack(request: pytest.FixtureRequest, cargo_build, workdir) -> Iterator[Stack]:
    """A stack per test; stop() scans its logs for every secret, keys minted in the test too."""
    s = start_stack(workdir, request.param)
    yield s
    s.stop()


def chat(s: Stack, key: str) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key=key, max_retries=0, timeout=10)
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def test_keygate_down_means_5xx_and_nothing_forwarded(stack: Stack) -> None:
    key = stack.keys["openai"].key
    chat(stack, key)
    stack.keygate.proc.kill()
    mock_clear(stack.mock_port)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as caught:
            chat(stack, key)
        assert 500 <= caught.value.status_code < 600
    assert mock_requests(stack.mock_port) == []


def test_sighup_and_file_change_reload_and_bad_config_keeps_old(stack: Stack) -> None:
    kg = stack.keygate
    new_key = mint_key("newcomer")
    config = copy.deepcopy(kg.config)
    config["consumers"].append(consumer("newcomer", "openai", ["POST /v1/chat/completions"], new_key))

    with pytest.raises(openai.AuthenticationError):
        chat(stack, new_key.key)

    # A config with a typo is rejected, counted, and the running config keeps serving.
    broken = copy.deepcopy(config)
    broken["consumers"][-1]["scope"]["routes"] = ["POTS /v1/chat/completions"]
    kg.write_config(broken)
    wait_until(lambda: counter(kg.metrics(), "keygate_config_reload_total", result="error") >= 1)
    assert 'consumers[6].scope.routes[0]: unknown method "POTS"' in kg.proc.log_text()
    chat(stack, stack.keys["openai"].key)
    with pytest.raises(openai.AuthenticationError):
        chat(stack, new_key.key)

    # The fixed file is picked up by the watcher without a signal.
    kg.write_config(config)
    wait_until(lambda: counter(kg.metrics(), "keygate_config_reload_total", result="ok") >= 1)
    assert chat(stack, new_key.key).choices

    # Suspending by editing the file and sending SIGHUP takes effect at once.
    config["consumers"][-1]["status"] = "suspended"
    kg.config_path.write_text(json.dumps(config))
    kg.proc.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: counter(kg.metrics(), "keygate_config_reload_total", result="ok") >= 2)
    with pytest.raises(openai.PermissionDeniedError):
        chat(stack, new_key.key)


def test_readiness_and_missing_credential_on_reload(stack: Stack) -> None:
    kg = stack.keygate
    status, body = kg.admin("/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert kg.admin("/healthz")[0] == 200

    # A consumer pointing at a credential the secrets file lacks: the reload is refused.
    config = copy.deepcopy(kg.config)
    config["providers"]["openai"]["credentials"]["staging"] = "openai/staging"
    extra = mint_key("stager")
    config["consumers"].append(
        {**consumer("stager", "openai", ["POST /v1/chat/completions"], extra), "environment": "staging"}
    )
    kg.write_config(config)
    wait_until(lambda: counter(kg.metrics(), "keygate_config_reload_total", result="error") >= 1)
    assert "openai/staging" in kg.proc.log_text()
    with pytest.raises(openai.AuthenticationError):
        chat(stack, extra.key)
    assert kg.admin("/readyz")[0] == 200


def test_secrets_file_change_swaps_the_provider_key(stack: Stack) -> None:
    """Rotating a provider key in the secrets file alone (the config is untouched) is picked up
    by the watcher: the mock then sees the new key, and only the new key, in `authorization`."""
    kg = stack.keygate
    key = stack.keys["openai"].key
    old, new = SECRETS["openai/production"], "sk-proj-ROTATED-openai-0a1b2c3d4e5f"
    chat(stack, key)
    assert header_values(mock_requests(stack.mock_port)[-1], "authorization") == [f"Bearer {old}"]
    config_before = kg.config_path.read_bytes()

    kg.write_secrets({**SECRETS, "openai/production": new})

    def upstream_key() -> str:
        chat(stack, key)
        return header_values(mock_requests(stack.mock_port)[-1], "authorization")[0]

    wait_until(lambda: upstream_key() == f"Bearer {new}", interval=0.1)
    mock_clear(stack.mock_port)
    for _ in range(5):
        chat(stack, key)
    assert [header_values(r, "authorization") for r in mock_requests(stack.mock_port)] == [[f"Bearer {new}"]] * 5
    assert kg.config_path.read_bytes() == config_before
    assert kg.admin("/readyz")[0] == 200


def test_removing_a_credential_from_the_secrets_file_takes_effect_at_the_next_reload(stack: Stack) -> None:
    """A provider key removed from the secrets file (a compromised key pulled by hand) stops
    being used when the watcher reloads, not up to `max_stale` later: its consumers get 503
    `credential_unavailable` and the mock sees no further request with it. The reload itself is
    rejected (the config still names the credential) and counted."""
    kg = stack.keygate
    key = stack.keys["openai"].key
    chat(stack, key)
    secrets = {ref: k for ref, k in SECRETS.items() if ref != "openai/production"}
    kg.write_secrets(secrets)
    wait_until(lambda: counter(kg.metrics(), "keygate_config_reload_total", result="error") >= 1)
    mock_clear(stack.mock_port)
    with pytest.raises(openai.APIStatusError) as caught:
        chat(stack, key)
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "credential_unavailable"
    assert mock_requests(stack.mock_port) == []
    assert kg.admin("/readyz")[0] == 503


def test_unix_domain_socket_listener(cargo_build, workdir) -> None:
    """ext_proc over keygate's Unix socket works, the socket is removed on shutdown, and no
    secret is in the logs."""
    from harness import render, start_envoy, start_keygate, start_mock
    from harness.paths import REPO_ROOT
    from harness.ports import free_port
    from harness.stack import providers, standard_consumers

    mock, mock_port = start_mock(workdir)
    keys, consumers = standard_consumers()
    sock = workdir / "keygate.sock"
    kg = start_keygate(
        workdir, {"listeners": {"grpc_uds": str(sock)}, "providers": providers(), "consumers": consumers}, SECRETS,
        env={"KEYGATE_LOG": KEYGATE_LOG},
    )
    envoy_port = free_port()
    config = render(
        REPO_ROOT / "envoy" / "ext_proc.yaml", workdir / "envoy-uds.yaml", listen_port=envoy_port,
        admin_port=free_port(), keygate_uds=sock, upstream_port=mock_port,
    )
    envoy = start_envoy(config, workdir)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{envoy_port}/v1", api_key=keys["openai"].key, max_retries=0)
        assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices
        kg.proc.stop()
        assert not sock.exists(), "keygate removes its socket on shutdown"
    finally:
        for p in (envoy, kg.proc, mock):
            p.stop()
    leaks.assert_no_leaks(workdir, [*SECRETS.values(), *(k.key for k in keys.values())])


def test_sighup_applies_a_changed_detect_section_and_names_restart_only_settings(
    cargo_build, workdir
) -> None:
    """With the file watcher off, SIGHUP alone reloads: a canary detector switched from
    `alert` to `suspend` acts on its next detection, and a changed restart-only setting
    (`admin.audit_log`) is named in the log instead of silently ignored."""
    extra = {
        "detect": {"cooldown": "1s", "canary": {"action": "alert"}},
        "reload": {"watch_interval": "1h"},
    }
    s = start_stack(workdir, "ext_proc", extra, canaries=("canary-wiki",))
    try:
        kg = s.keygate
        trap = s.keys["canary-wiki"].key
        detections = lambda action: counter(  # noqa: E731
            kg.metrics(), "keygate_detections_total", detector="canary", action=action
        )
        with pytest.raises(openai.PermissionDeniedError):
            chat(s, trap)
        wait_until(lambda: detections("alert") == 1)

        config = copy.deepcopy(kg.config)
        config["detect"]["canary"]["action"] = "suspend"
        config["admin"] = {**config.get("admin", {}), "audit_log": str(workdir / "moved-audit.log")}
        kg.write_config(config)
        time.sleep(1.2)  # past the detector's cooldown
        with pytest.raises(openai.PermissionDeniedError):
            chat(s, trap)
        wait_until(lambda: detections("alert") == 2)
        assert counter(kg.metrics(), "keygate_config_reload_total") == 0, "the watcher is off"

        kg.proc.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: counter(kg.metrics(), "keygate_config_reload_total", result="ok") == 1)
        time.sleep(1.2)
        with pytest.raises(openai.PermissionDeniedError):
            chat(s, trap)
        wait_until(lambda: detections("suspend") == 1)
        assert detections("alert") == 2
        log = kg.proc.log_text()
        assert "admin.audit_log" in log and "takes effect after a restart" in log
    finally:
        s.stop()
