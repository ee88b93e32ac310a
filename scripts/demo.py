"""The demo behind `scripts/demo`: starts mock provider, keygate and Envoy like a user would."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import yaml  # noqa: E402

from harness import free_port, keygate_bin, render, start_envoy, start_mock  # noqa: E402
from harness.procs import Proc  # noqa: E402

# Published demo keys; they match the hashes in examples/keygate.yaml and nothing else.
OPENAI_KEY = "kg_test_U6495exsEaIqrZ6nx1AZeZT6nZsehY_1wwHSo"
ANTHROPIC_KEY = "kg_test_R7cJtBRrE1Z1S3rsk1XaSG0rHEir7N_33RCv5"


def snippets(base: str) -> str:
    return f"""
keygate demo is up: Envoy {base} -> keygate (ext_proc) -> mock provider

  curl -s {base}/v1/chat/completions \\
    -H 'Authorization: Bearer {OPENAI_KEY}' \\
    -H 'content-type: application/json' \\
    -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hello"}}]}}'

  .venv/bin/python - <<'PY'
import openai
client = openai.OpenAI(base_url="{base}/v1", api_key="{OPENAI_KEY}")
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hello"}}])
print(reply.choices[0].message.content, reply.usage)
PY

  Anthropic SDK: anthropic.Anthropic(base_url="{base}", api_key="{ANTHROPIC_KEY}")
  Metrics: curl -s http://{{admin}}/metrics | grep keygate_
"""


def self_test(base: str) -> None:
    import openai

    out = subprocess.run(
        ["curl", "-sf", f"{base}/v1/chat/completions", "-H", f"Authorization: Bearer {OPENAI_KEY}",
         "-H", "content-type: application/json",
         "-d", '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'],
        capture_output=True, text=True, check=True, timeout=20,
    )
    assert '"chat.completion"' in out.stdout, out.stdout
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=OPENAI_KEY, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content
    print("demo self-test: ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--self-test", action="store_true", help="use free ports, run the snippets, stop")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="keygate-demo-"))
    procs: list[Proc] = []
    try:
        mock, mock_port = start_mock(work)
        procs.append(mock)
        config = yaml.safe_load((ROOT / "examples" / "keygate.yaml").read_text())
        shutil.copy(ROOT / "examples" / "secrets.yaml", work / "secrets.yaml")
        grpc_port, admin_port, envoy_port, envoy_admin = (50051, 9090, 10000, 9901)
        if args.self_test:
            grpc_port, admin_port, envoy_port, envoy_admin = (free_port() for _ in range(4))
        config["listeners"] = {"grpc": f"127.0.0.1:{grpc_port}", "admin": f"127.0.0.1:{admin_port}"}
        (work / "keygate.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        kg = Proc([keygate_bin(), "serve", "--config", work / "keygate.yaml"], work, name="keygate")
        procs.append(kg)
        kg.wait_http(f"http://127.0.0.1:{admin_port}/readyz", timeout=20, expect_status=200)
        envoy_config = render(ROOT / "envoy" / "ext_proc.yaml", work / "envoy.yaml", listen_port=envoy_port,
                              admin_port=envoy_admin, keygate_port=grpc_port, upstream_port=mock_port)
        procs.append(start_envoy(envoy_config, work))
        base = f"http://127.0.0.1:{envoy_port}"
        if args.self_test:
            self_test(base)
            return 0
        print(snippets(base).replace("{admin}", f"127.0.0.1:{admin_port}"))
        print(f"logs: {work}   (Ctrl-C to stop)")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    sys.exit(main())
