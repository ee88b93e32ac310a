"""Shared limits: three keygate replicas behind one Envoy (round robin) and one real Redis.
Together they admit the limit, not three times it; Redis going away never fails a request
(local fallback, counted) and sharing resumes when it is back."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from harness.keygate import counter
from harness.procs import Proc
from harness.redis import command, start_redis
from harness.replicas import LIMIT, Replicas


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


def allowed(replicas: Replicas) -> list[float]:
    """team-openai's allowed requests so far, per replica."""
    return [counter(k.metrics(), "keygate_requests_total", consumer="team-openai", outcome="allowed")
            for k in replicas.keygates]


def test_redis_outage_falls_back_without_errors_and_sharing_resumes(redis, workdir) -> None:
    """While Redis is down each replica enforces its share of the limit (`replicas: 3`: a third
    of 150 per hour, 50, all of it available as burst) on its own, plus what its lease of the
    shared bucket still held. A lease keeps 1 % of the limit per replica on hand (at least 1),
    and holds at most twice that when a decision's miss and the background top-up are granted
    together: round robin sends each about 70 of 210 requests, and each admits its 50 and at
    most two more."""
    proc, port = redis
    replicas = Replicas(workdir, port)
    try:
        assert set(replicas.statuses(30)) == {200}
        proc.kill()
        share = LIMIT // 3
        before = allowed(replicas)
        during = replicas.statuses(3 * share + 60)
        assert all(s in (200, 429) for s in during), f"no 5xx while Redis is down: {set(during)}"
        per_replica = [a - b for a, b in zip(allowed(replicas), before)]
        assert all(share <= n <= share + 2 for n in per_replica), \
            f"each replica admits its share of {LIMIT}/3 (and its lease) during the outage: {per_replica}"
        assert replicas.total("keygate_limits_fallback_total") > 0
        assert any("redis unavailable" in k.proc.log_text() for k in replicas.keygates)

        restarted, _ = start_redis(workdir, port=port)
        try:
            deadline = time.monotonic() + 10
            while b"keygate:b:{team-openai}" not in command(port, "KEYS", "keygate:*"):
                assert time.monotonic() < deadline, "limits were not shared again after Redis came back"
                replicas.statuses(3)
                time.sleep(0.2)
            assert any("redis is back" in k.proc.log_text() for k in replicas.keygates)
        finally:
            restarted.stop()
    finally:
        replicas.stop()
