"""A real Prometheus server for a test: scrape keygate's admin /metrics, load rule files,
and query the HTTP API.

Uses the `prometheus` binary on PATH (Debian's package; 2.x). The server binds
127.0.0.1 on a free port, keeps its TSDB in the test's work directory, and is a harness
`Proc`, so it is stopped with everything else.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from .ports import HOST, free_port
from .procs import Proc

READY_TIMEOUT = 30.0
JOB = "keygate"


class PrometheusError(RuntimeError):
    """The Prometheus HTTP API answered with an error (e.g. a PromQL parse error)."""


def prometheus_bin() -> str:
    """The `prometheus` executable on PATH."""
    found = shutil.which("prometheus")
    if not found:
        raise FileNotFoundError("prometheus not found on PATH (Debian: apt-get install prometheus)")
    return found


@dataclass
class Prometheus:
    """A running Prometheus; see start_prometheus()."""

    proc: Proc
    port: int
    workdir: Path
    config_path: Path
    scrape_interval: float

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. http://127.0.0.1:41234."""
        return f"http://{HOST}:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return its `data`; raise PrometheusError on an API error."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback only)
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            try:
                body = json.loads(err.read())
            except ValueError:
                raise PrometheusError(f"GET {url}: HTTP {err.code}") from err
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')} (GET {url})")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate an instant query; return its result list (empty: no data).

        Vector results are returned as-is (`[{"metric": {...}, "value": [t, "v"]}, ...]`);
        a scalar or string result is wrapped as a single `{"metric": {}, "value": [t, v]}`.
        Raises PrometheusError if the expression is invalid or fails to evaluate.
        """
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets (/api/v1/targets)."""
        return list(self.api("targets", state="active")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule, flattened over groups (/api/v1/rules)."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def wait_for_targets_up(self, timeout: float = 30.0, scrapes: int = 1) -> None:
        """Wait until every active target has been scraped successfully (health "up"), then
        `scrapes - 1` more scrape intervals, so that rate() has samples to work with."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                break
            if time.monotonic() > deadline or not self.proc.alive():
                detail = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
                raise TimeoutError(f"targets not up after {timeout}s: {detail}\n{self.proc.log_tail()}")
            time.sleep(self.scrape_interval / 4)
        self.wait_scrapes(scrapes - 1)

    def wait_scrapes(self, n: int) -> None:
        """Sleep for `n` scrape intervals (plus a little slack)."""
        if n > 0:
            time.sleep(n * self.scrape_interval + 0.25)

    def stop(self) -> None:
        """Stop the server."""
        self.proc.stop()


def write_config(
    path: Path,
    targets: Sequence[str],
    *,
    job: str = JOB,
    scrape_interval: float = 1.0,
    rule_files: Sequence[Path] = (),
) -> Path:
    """Write a Prometheus config scraping `targets` ("host:port") as `job` every
    `scrape_interval` seconds (rules evaluated as often); return `path`."""
    interval = f"{int(scrape_interval * 1000)}ms"
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": list(targets)}]}
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def start_prometheus(
    workdir: Path,
    targets: Sequence[str],
    *,
    job: str = JOB,
    scrape_interval: float = 1.0,
    rule_files: Sequence[Path] = (),
    ready_timeout: float = READY_TIMEOUT,
) -> Prometheus:
    """Start Prometheus scraping `targets` (e.g. [f"127.0.0.1:{keygate.admin_port}"]) and wait
    for /-/ready. Config, TSDB and log live under <workdir>/prometheus/."""
    home = Path(workdir) / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    config_path = write_config(
        home / "prometheus.yml", targets, job=job, scrape_interval=scrape_interval, rule_files=rule_files
    )
    port = free_port()
    proc = Proc(
        [
            prometheus_bin(),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ],
        home,
        name="prometheus",
    )
    try:
        proc.wait_http(f"http://{HOST}:{port}/-/ready", timeout=ready_timeout, expect_status=200)
    except BaseException:
        proc.stop()
        raise
    return Prometheus(proc, port, home, config_path, scrape_interval)
