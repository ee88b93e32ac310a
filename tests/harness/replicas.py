"""Several keygate replicas behind one Envoy (round robin), optionally sharing Redis."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import yaml

from . import leaks
from .envoy_config import hold_responses, render, start_envoy
from .keygate import Keygate, counter, start_keygate
from .mock import start_mock
from .paths import REPO_ROOT
from .ports import free_port
from .procs import Proc
from .stack import KEYGATE_LOG, SECRETS, providers, standard_consumers

LIMIT = 150


class Replicas:
    def __init__(self, workdir: Path, redis_port: int | None, extra: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        """Three replicas; with `redis_port` they share limits and the admin broadcast through
        Redis, without it they share nothing but what `extra` names (a state file)."""
        self.workdir = workdir
        self.mock, mock_port = start_mock(workdir)
        self.keys, consumers = standard_consumers()
        provs = providers()
        provs["openai"]["limits"] = {"requests_per_hour": LIMIT}
        config: dict[str, Any] = {"providers": provs, "consumers": consumers}
        if redis_port is not None:
            config["limits"] = {
                "backend": "redis",
                "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "timeout": "20ms", "replicas": 3},
            }
        config.update(extra or {})
        self.keygates: list[Keygate] = []
        self.admin_ports: list[int] = []
        self.alert_ports: list[int] = []  # leaks.github.listen, one per replica
        for i in range(3):
            sub = workdir / f"replica{i}"
            sub.mkdir()
            replica_config = dict(config)
            if "admin" in config:
                self.admin_ports.append(free_port())
                replica_config["admin"] = {**config["admin"], "listen": f"127.0.0.1:{self.admin_ports[-1]}"}
            if "github" in config.get("leaks", {}):
                self.alert_ports.append(free_port())
                github = {**config["leaks"]["github"], "listen": f"127.0.0.1:{self.alert_ports[-1]}"}
                replica_config["leaks"] = {**config["leaks"], "github": github}
            self.keygates.append(start_keygate(sub, replica_config, SECRETS, env={"KEYGATE_LOG": KEYGATE_LOG, **(env or {})}))
        self.envoy_port = free_port()
        rendered = render(REPO_ROOT / "envoy" / "ext_proc.yaml", workdir / "envoy.yaml", listen_port=self.envoy_port,
                          admin_port=free_port(), keygate_port=self.keygates[0].grpc_port, upstream_port=mock_port)
        # One Envoy, three keygates: the response observer's stream could reach another one.
        envoy_config = hold_responses(yaml.safe_load(rendered.read_text()))
        cluster = next(c for c in envoy_config["static_resources"]["clusters"] if c["name"] == "keygate")
        cluster["lb_policy"] = "ROUND_ROBIN"
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": k.grpc_port}}}}
            for k in self.keygates
        ]
        rendered.write_text(yaml.safe_dump(envoy_config))
        self.envoy: Proc = start_envoy(rendered, workdir)

    def statuses(self, n: int) -> list[int]:
        return self.statuses_with(self.keys["openai"].key, n)

    def statuses_with(self, key: str, n: int) -> list[int]:
        """`n` requests with `key` through Envoy (round robin over the replicas)."""
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", self.envoy_port, timeout=10)
        for _ in range(n):
            conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {key}"})
            r = conn.getresponse()
            r.read()
            out.append(r.status)
        return out

    def restart(self, i: int) -> None:
        """Stops replica `i` (SIGTERM: it drains) and starts it again on the same ports and
        files (its ledger among them)."""
        old = self.keygates[i]
        old.proc.stop()
        proc = Proc(old.proc.cmd, old.proc.log_path.parent, name="keygate", env=old.proc.env)
        self.keygates[i] = Keygate(proc, old.grpc_port, old.admin_port, old.config_path, old.config)
        proc.wait_http(f"http://127.0.0.1:{old.admin_port}/readyz", timeout=30, expect_status=200)

    def total(self, name: str, **labels: str) -> float:
        return sum(counter(k.metrics(), name, **labels) for k in self.keygates)

    def stop(self) -> None:
        """Stop everything, then scan every replica's and Envoy's log for secrets (harness.leaks)."""
        self.envoy.stop()
        for k in self.keygates:
            k.proc.stop()
        self.mock.stop()
        leaks.assert_no_leaks(self.workdir, [*SECRETS.values(), *(k.key for k in self.keys.values())])


