"""Shared limits: three keygate replicas behind one Envoy (round robin) and one real Redis.
Together they admit the limit, not three times it; Redis going away never fails a request
(local fallback, counted) and sharing resumes when it is back."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from harness import render, start_envoy, start_keygate, start_mock
from harness.keygate import Keygate, counter
from harness.paths import REPO_ROOT
from harness.ports import free_port
from harness.procs import Proc
from harness.redis import command, start_redis
from harness.stack import KEYGATE_LOG, SECRETS, providers, standard_consumers

LIMIT = 150


class Replicas:
    def __init__(self, workdir: Path, redis_port: int) -> None:
        self.mock, mock_port = start_mock(workdir)
        self.keys, consumers = standard_consumers()
        provs = providers()
        provs["openai"]["limits"] = {"requests_per_hour": LIMIT}
        config = {
            "providers": provs,
            "consumers": consumers,
            "limits": {"backend": "redis", "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "timeout": "20ms", "replicas": 3}},
        }
        self.keygates: list[Keygate] = []
        for i in range(3):
            sub = workdir / f"replica{i}"
            sub.mkdir()
            self.keygates.append(start_keygate(sub, config, SECRETS, env={"KEYGATE_LOG": KEYGATE_LOG}))
        self.envoy_port = free_port()
        rendered = render(REPO_ROOT / "envoy" / "ext_proc.yaml", workdir / "envoy.yaml", listen_port=self.envoy_port,
                          admin_port=free_port(), keygate_port=self.keygates[0].grpc_port, upstream_port=mock_port)
        envoy_config = yaml.safe_load(rendered.read_text())
        cluster = next(c for c in envoy_config["static_resources"]["clusters"] if c["name"] == "keygate")
        cluster["lb_policy"] = "ROUND_ROBIN"
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": k.grpc_port}}}}
            for k in self.keygates
        ]
        rendered.write_text(yaml.safe_dump(envoy_config))
        self.envoy: Proc = start_envoy(rendered, workdir)

    def statuses(self, n: int) -> list[int]:
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", self.envoy_port, timeout=10)
        for _ in range(n):
            conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {self.keys['openai'].key}"})
            r = conn.getresponse()
            r.read()
            out.append(r.status)
        return out

    def total(self, name: str, **labels: str) -> float:
        return sum(counter(k.metrics(), name, **labels) for k in self.keygates)

    def stop(self) -> None:
        self.envoy.stop()
        for k in self.keygates:
            k.proc.stop()
        self.mock.stop()


@pytest.fixture
def redis(cargo_build, workdir) -> Iterator[tuple[Proc, int]]:
    proc, port = start_redis(workdir)
    yield proc, port
    proc.stop()


def test_three_replicas_admit_the_limit_once(redis, workdir) -> None:
    replicas = Replicas(workdir, redis[1])
    try:
        statuses = replicas.statuses(3 * LIMIT)
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 429}
        assert abs(admitted - LIMIT) <= LIMIT * 0.01, f"{admitted} admitted for a limit of {LIMIT}"
        served = [counter(k.metrics(), "keygate_requests_total", consumer="team-openai") for k in replicas.keygates]
        assert all(n > LIMIT / 3 for n in served), f"round robin reached every replica: {served}"
        assert replicas.total("keygate_limits_fallback_total") == 0
    finally:
        replicas.stop()


def test_redis_outage_falls_back_without_errors_and_sharing_resumes(redis, workdir) -> None:
    proc, port = redis
    replicas = Replicas(workdir, port)
    try:
        assert set(replicas.statuses(30)) == {200}
        proc.kill()
        during = replicas.statuses(60)
        assert all(s in (200, 429) for s in during), f"no 5xx while Redis is down: {set(during)}"
        assert 200 in during
        assert replicas.total("keygate_limits_fallback_total") > 0
        assert any("redis unavailable" in k.proc.log_text() for k in replicas.keygates)

        restarted, _ = start_redis(workdir, port=port)
        try:
            deadline = time.monotonic() + 10
            while b"keygate:b:team-openai" not in command(port, "KEYS", "keygate:*"):
                assert time.monotonic() < deadline, "limits were not shared again after Redis came back"
                replicas.statuses(3)
                time.sleep(0.2)
            assert any("redis is back" in k.proc.log_text() for k in replicas.keygates)
        finally:
            restarted.stop()
    finally:
        replicas.stop()
