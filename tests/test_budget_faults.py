"""The budget promise under faults: three keygate replicas behind one Envoy share budgets
through a real Redis while JSON and streaming traffic from four consumers (two with their own
budget, two sharing a team budget) runs against small monthly budgets, and the test kills
Redis, restarts it empty, and restarts one replica. At the end every budget holds within the
documented bound, the spend the clients were served equals the spend keygate counted (nothing
lost, nothing counted twice), and no client saw an error other than the budget's 429."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import openai

from harness.keygate import counter, mint_key
from harness.redis import command, start_redis
from harness.replicas import Replicas
from harness.stack import consumer, providers

PRICE_PER_TOKEN_MICRO_USD = 10  # $10 per million tokens, input and output
PRICING = [{"provider": "openai", "model": "gpt-test", "input_per_mtok_usd": 10.0, "output_per_mtok_usd": 10.0}]
OWN_BUDGET_USD = 0.03
TEAM_BUDGET_USD = 0.04
CAP = 200  # default_max_tokens, written into every request
ANSWER = 150  # tokens the mock answers (under the cap)
CHAT = ["POST /v1/chat/completions"]


class Client:
    """One consumer's client: alternates JSON and streaming requests, records what it was
    served (from the usage the provider returned) and every status."""

    def __init__(self, name: str, key: str, port: int) -> None:
        self.name = name
        self.sdk = openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=20)
        self.served_micro_usd = 0
        self.served = 0
        self.refused = 0
        self.errors: list[str] = []
        self.n = 0

    def one(self) -> bool:
        """One request; False when the budget refused it."""
        self.n += 1
        messages = [{"role": "user", "content": f"request {self.n} from {self.name}"}]
        headers = {"x-mock-output-tokens": str(ANSWER)}
        try:
            if self.n % 2:
                r = self.sdk.chat.completions.create(model="gpt-test", messages=messages, extra_headers=headers)
                usage = r.usage
            else:
                usage = None
                for chunk in self.sdk.chat.completions.create(model="gpt-test", messages=messages,
                                                              extra_headers=headers, stream=True):
                    usage = chunk.usage or usage
            assert usage is not None, "keygate adds include_usage: the stream ends with usage"
            self.served_micro_usd += (usage.prompt_tokens + usage.completion_tokens) * PRICE_PER_TOKEN_MICRO_USD
            self.served += 1
            return True
        except openai.RateLimitError as e:
            if e.code != "insufficient_quota":
                self.errors.append(f"429 {e.code}")
            self.refused += 1
            return False
        except openai.APIError as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            return False

    def run(self, n: int) -> None:
        for _ in range(n):
            self.one()

    def until_refused(self, limit: int = 60) -> None:
        """Until the budget refuses four in a row."""
        streak = 0
        for _ in range(limit):
            streak = 0 if self.one() else streak + 1
            if streak == 4:
                return


def phase(clients: list[Client], run) -> None:
    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def counted_micro_usd(port: int, key: str) -> int:
    """What every replica counted against budget `key` this month: the sum of their published
    month totals in Redis."""
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    reply = command(port, "HGETALL", f"{{keygate}}:budget:{month}:{key}").decode().split("\r\n")
    items = [line for line in reply[1:] if line and not line.startswith("$")]
    fields = dict(zip(items[0::2], items[1::2]))
    return sum(int(v) for f, v in fields.items() if f.startswith("t:"))


def test_budgets_hold_through_redis_loss_an_empty_redis_and_a_replica_restart(cargo_build, workdir: Path) -> None:
    redis, port = start_redis(workdir)
    keys = {n: mint_key(n) for n in ("solo-a", "solo-b", "pool-c", "pool-d")}
    limits = {"default_max_tokens": CAP}
    consumers = [
        consumer(n, "openai", CHAT, keys[n], limits={**limits, "monthly_budget_usd": OWN_BUDGET_USD})
        for n in ("solo-a", "solo-b")
    ] + [
        {**consumer(n, "openai", CHAT, keys[n], limits=limits), "team": "pool"} for n in ("pool-c", "pool-d")
    ]
    replicas = Replicas(workdir, port, extra={
        "providers": providers(),
        "consumers": consumers,
        "teams": {"pool": {"monthly_budget_usd": TEAM_BUDGET_USD}},
        "usage": {"pricing": PRICING},
    })
    clients = [Client(n, k.key, replicas.envoy_port) for n, k in keys.items()]
    try:
        phase(clients, lambda c: c.run(4))
        redis.kill()
        # While Redis is away each replica admits its share of what was left, until refused.
        phase(clients, lambda c: c.until_refused(24))
        during_outage = sum(c.served for c in clients)
        redis, _ = start_redis(workdir, port=port)
        time.sleep(1.5)  # the rebuild window: replicas republish their ledgers
        phase(clients, lambda c: c.run(4))
        replicas.restart(1)
        phase(clients, lambda c: c.until_refused())
        time.sleep(1.0)  # the last totals reach Redis

        fallback = replicas.total("keygate_limits_fallback_total", operation="budget")
        served = {c.name: c.served_micro_usd for c in clients}
        counted = {n: counted_micro_usd(port, n) for n in keys}
        counted_team = counted_micro_usd(port, "team:pool")
        # What a refused request would have reserved at most: its body as input and the cap.
        reservation = (600 + CAP) * PRICE_PER_TOKEN_MICRO_USD
        for name, budget, spent, clients_of_key in (
            ("solo-a", OWN_BUDGET_USD, counted["solo-a"], 1),
            ("solo-b", OWN_BUDGET_USD, counted["solo-b"], 1),
            ("team pool", TEAM_BUDGET_USD, counted_team, 2),
        ):
            budget_micro = int(budget * 1e6)
            bound = 2 * reservation * clients_of_key // 3
            print(f"{name}: budget {budget_micro} µUSD, admitted {spent}, overshoot {spent - budget_micro} "
                  f"(bound {bound})")
            assert spent <= budget_micro + bound, f"{name} spent {spent} of {budget_micro}"
            assert spent >= budget_micro // 2, f"{name}: the budget was used, not refused throughout: {spent}"
        print(f"{during_outage} requests served before and during the outage")
        for c in clients:
            print(f"{c.name}: served {c.served} requests, {c.served_micro_usd} µUSD; counted {counted[c.name]}; "
                  f"refused {c.refused}")
            assert c.errors == [], f"{c.name} saw errors other than the budget's 429: {c.errors[:5]}"
        assert served == counted, "what the clients were served is what keygate counted, once"
        assert counted_team == counted["pool-c"] + counted["pool-d"]
        assert fallback > 0, "the outage was served from the replicas' shares"
        allowed_metric = replicas.total("keygate_requests_total", outcome="allowed")
        assert allowed_metric > 0
        assert counter(replicas.keygates[1].metrics(), "keygate_spend_month_to_date_usd", consumer="solo-a") >= 0
    finally:
        replicas.stop()
        redis.stop()
