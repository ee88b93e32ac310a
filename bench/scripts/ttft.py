"""Streaming time to first token through Envoy with and without keygate (ext_proc with usage
accounting: responses observed as shipped, and held as before issue 16), with the real openai
SDK, and the floor of the observed path: the same Envoy config in front of `null-processor`, a
do-nothing processor that exchanges the same messages (bench/loadgen's row n). Run:
`.venv/bin/python bench/scripts/ttft.py` (after `cargo build --release`; KEYGATE_BIN /
MOCK_PROVIDER_BIN / NULL_PROCESSOR_BIN select other builds; NULL_PROCESSOR_BIN defaults to
$KEYGATE_BENCH_BIN_DIR/null-processor when bench/run sets that).

Each configuration runs `--streams` chat completions with `stream=True`; TTFT is measured from
the request to the first content chunk, total from the request to the end of the stream. The
four configurations alternate request by request so machine drift hits all alike."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("KEYGATE_BIN", str(ROOT / "target" / "release" / "keygate"))
os.environ.setdefault("MOCK_PROVIDER_BIN", str(ROOT / "target" / "release" / "mock-provider"))
BIN_DIR = Path(os.environ.get("KEYGATE_BENCH_BIN_DIR", ROOT / "target" / "release"))
NULL_PROCESSOR_BIN = Path(os.environ.get("NULL_PROCESSOR_BIN", BIN_DIR / "null-processor"))
FLOOR = "do-nothing processor, observed path's messages (floor)"

import openai  # noqa: E402
import yaml  # noqa: E402

from harness import Proc, free_port, render, start_envoy  # noqa: E402
from harness.envoy_config import OBSERVER_FILTER, hold_responses  # noqa: E402
from harness.stack import OPENAI_SECRET, start_stack  # noqa: E402


def baseline_envoy(work: Path, mock_port: int):
    port = free_port()
    path = render(ROOT / "envoy" / "ext_proc.yaml", work / "baseline.yaml", listen_port=port,
                  admin_port=free_port(), keygate_port=free_port(), upstream_port=mock_port)
    config = yaml.safe_load(path.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    gate = {"envoy.filters.http.ext_proc", OBSERVER_FILTER}
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in gate]
    path.write_text(yaml.safe_dump(config))
    return start_envoy(path, work), port


def held_envoy(work: Path, mock_port: int, keygate_port: int):
    """The shipped config with held responses, in front of the same keygate."""
    port = free_port()
    path = render(ROOT / "envoy" / "ext_proc.yaml", work / "held.yaml", listen_port=port,
                  admin_port=free_port(), keygate_port=keygate_port, upstream_port=mock_port)
    path.write_text(yaml.safe_dump(hold_responses(yaml.safe_load(path.read_text()))))
    return start_envoy(path, work), port


def start_null(work: Path) -> tuple[Proc, int]:
    """`null-processor` as bench/loadgen's e2e starts it for row n (no flags: it listens on a
    free loopback port and prints `listening on ADDR`)."""
    proc = Proc([NULL_PROCESSOR_BIN], work, name="null-processor")
    try:
        address = proc.wait_for_line(r"^listening on (\S+)$", timeout=20).group(1)
    except BaseException:
        proc.stop()
        raise
    return proc, int(address.rsplit(":", 1)[1])


def floor_envoy(work: Path, mock_port: int, null_port: int):
    """The shipped config, rendered as for the observed path, in front of `null-processor`: it
    asks for the request body as keygate does (the shipped `initial_metadata` marker tells it
    responses are observed) and reads the observer's stream without answering."""
    port = free_port()
    path = render(ROOT / "envoy" / "ext_proc.yaml", work / "floor.yaml", listen_port=port,
                  admin_port=free_port(), keygate_port=null_port, upstream_port=mock_port)
    return start_envoy(path, work), port


def one(client: openai.OpenAI, extra: dict) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "tell me a short story"}],
        stream=True, max_tokens=32, extra_headers={"x-mock-chunk-delay-ms": "2", **extra},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    return (first or 0.0) * 1000, (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="keygate-ttft-"))
    stack = start_stack(work, "ext_proc")
    envoy, port = baseline_envoy(work, stack.mock_port)
    held, held_port = held_envoy(work, stack.mock_port, stack.keygate.grpc_port)
    null, null_port = start_null(work)
    floor, floor_port = floor_envoy(work, stack.mock_port, null_port)
    try:
        key = stack.keys["openai"].key
        keygate = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0)
        holding = openai.OpenAI(base_url=f"http://127.0.0.1:{held_port}/v1", api_key=key, max_retries=0)
        plain = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=OPENAI_SECRET, max_retries=0)
        # The do-nothing processor neither swaps the key nor routes: the client does, as for baseline.
        nothing = openai.OpenAI(base_url=f"http://127.0.0.1:{floor_port}/v1", api_key=OPENAI_SECRET, max_retries=0)
        clients = {"baseline": (plain, {"x-keygate-provider": "openai"}), "keygate": (keygate, {}),
                   "keygate, held responses": (holding, {}),
                   FLOOR: (nothing, {"x-keygate-provider": "openai"})}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for _ in range(10):
            for client, extra in clients.values():
                one(client, extra)
        for _ in range(args.streams):
            for name, (client, extra) in clients.items():
                results[name].append(one(client, extra))
        lines = [
            "## Streaming time to first token (openai SDK, through Envoy)",
            "",
            f"{args.streams} streams each, 32 chunks 2 ms apart, the four configurations alternating.",
            "",
            "| configuration | TTFT p50 ms | TTFT p90 ms | stream total p50 ms |",
            "| --- | --- | --- | --- |",
        ]
        for name, rows in results.items():
            ttft = sorted(r[0] for r in rows)
            total = [r[1] for r in rows]
            lines.append(
                f"| {name} | {statistics.median(ttft):.3f} | {ttft[int(len(ttft) * 0.9)]:.3f} | {statistics.median(total):.3f} |"
            )
        base = statistics.median(r[0] for r in results["baseline"])
        added = statistics.median(r[0] for r in results["keygate"]) - base
        added_held = statistics.median(r[0] for r in results["keygate, held responses"]) - base
        added_floor = statistics.median(r[0] for r in results[FLOOR]) - base
        lines += ["", f"Added TTFT at p50: {added:+.3f} ms (held responses: {added_held:+.3f} ms)",
                  "", f"Floor at p50 (the observed path's messages to a do-nothing processor): "
                  f"{added_floor:+.3f} ms, so keygate's own share of the observed path is {added - added_floor:+.3f} ms"]
        print("\n".join(lines))
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")
    finally:
        envoy.stop()
        held.stop()
        floor.stop()
        null.stop()
        stack.stop()


if __name__ == "__main__":
    main()
