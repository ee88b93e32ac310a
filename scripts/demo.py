"""The demo behind `scripts/demo`: starts the mock provider, keygate and Envoy like a user would.

keygate runs on a working copy of the config (examples/keygate.yaml unless --config says
otherwise), written in the same YAML style with only the listener addresses changed. The demo
prints that copy's path: edit it and keygate reloads it; reload results and errors are printed
here. Ctrl-C stops everything and removes the working folder (unless --workdir named one).
"""

from __future__ import annotations

import argparse
import errno
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import yaml  # noqa: E402

from harness import free_port, keygate_bin, render, start_envoy, start_mock  # noqa: E402
from harness.procs import Proc, ProcError  # noqa: E402

import demo_rotation  # noqa: E402

# Published demo keys; they match the hashes in examples/keygate.yaml and nothing else.
OPENAI_KEY = "kg_test_U6495exsEaIqrZ6nx1AZeZT6nZsehY_1wwHSo"
ANTHROPIC_KEY = "kg_test_R7cJtBRrE1Z1S3rsk1XaSG0rHEir7N_33RCv5"
HOST = "127.0.0.1"

# (flag, default, what listens there)
PORTS = [
    ("envoy_port", 10000, "Envoy: send requests here"),
    ("grpc_port", 50051, "keygate gRPC (ext_proc, for Envoy)"),
    ("metrics_port", 9090, "keygate metrics and health (listeners.admin): /metrics /healthz /readyz"),
    ("envoy_admin_port", 9901, "Envoy admin"),
]


class DemoError(Exception):
    """Something the user can fix; printed as one line, without a traceback."""


def say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def relpath(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_ports(ports: dict[str, int]) -> None:
    by_port: dict[int, str] = {}
    for flag, port in ports.items():
        if port in by_port:
            raise DemoError(f"--{by_port[port].replace('_', '-')} and --{flag.replace('_', '-')} are both {port}")
        by_port[port] = flag
    for flag, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError as e:
                what = "in use" if e.errno == errno.EADDRINUSE else e.strerror
                raise DemoError(
                    f"port {port} on {HOST} ({dict((p[0], p[2]) for p in PORTS)[flag]}) is {what}: "
                    f"choose another with --{flag.replace('_', '-')} PORT, or use --free-ports"
                ) from None


def working_config(source: Path, work: Path, grpc_port: int, admin_port: int) -> Path:
    """Copy `source` into `work` with only the listener addresses changed, keeping its
    comments and layout, so a block pasted from the README or examples/ fits in."""
    text = source.read_text()
    want = {"grpc": f"{HOST}:{grpc_port}", "admin": f"{HOST}:{admin_port}"}
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if re.match(r"listeners:\s*(#.*)?$", line))
    except StopIteration:
        block = ["listeners:", *(f"  {k}: {v}" for k, v in want.items())]
        first = next((i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")), len(lines))
        lines[first:first] = [*block, ""]
    else:
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " #"):
            end += 1
        indent = "  "
        for key, value in want.items():
            for i in range(start + 1, end):
                m = re.match(rf"(\s+){key}:\s*[^\s#]+(.*)$", lines[i])
                if m:
                    lines[i] = f"{m.group(1)}{key}: {value}{m.group(2)}"
                    indent = m.group(1)
                    break
            else:
                lines.insert(start + 1, f"{indent}{key}: {value}")
                end += 1
    target = work / "keygate.yaml"
    target.write_text("\n".join(lines) + "\n")
    config = yaml.safe_load(target.read_text())
    if {k: config["listeners"].get(k) for k in want} != want:
        raise DemoError(f"could not set the listeners in a copy of {source}; set them there by hand")
    # A file credential source is relative to the config: bring it along.
    creds = config.get("credentials") or {}
    if creds.get("source", "file") == "file" and creds.get("path") and not Path(creds["path"]).is_absolute():
        src = source.parent / creds["path"]
        if not src.exists():
            raise DemoError(f"{source}: credentials.path {creds['path']} not found next to it")
        dst = work / creds["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return target


def follow_reloads(log: Path, stop: threading.Event) -> None:
    """Print keygate's reload results from its log as they happen."""
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    with open(log, errors="replace") as f:
        f.seek(0, 2)
        buf = ""
        while not stop.is_set():
            chunk = f.read()
            if not chunk:
                time.sleep(0.2)
                continue
            buf += chunk
            *complete, buf = buf.split("\n")
            for line in complete:
                line = ansi.sub("", line)
                if "reload rejected" in line:
                    error = line.split("error=", 1)[1] if "error=" in line else line
                    print(f"keygate: reload rejected, still running the previous config: {error.strip()}", flush=True)
                elif "configuration reloaded" in line:
                    m = re.search(r"consumers=(\d+)", line)
                    print(f"keygate: configuration reloaded{f' ({m.group(1)} consumers)' if m else ''}", flush=True)


def snippets(base: str, ports: dict[str, int], config: Path, rotation: demo_rotation.RotationDemo | None) -> str:
    kg = relpath(keygate_bin())
    listening = "\n".join(f"  {HOST}:{ports[flag]:<6} {what}" for flag, _, what in PORTS)
    admin = (f"  {HOST}:{rotation.admin_port:<6} keygate admin API (token {demo_rotation.ADMIN_TOKEN})" if rotation
             else "  (keygate's admin API is off: the demo config sets no admin token)")
    return f"""
keygate demo is up: Envoy {base} -> keygate (ext_proc) -> mock provider

{listening}
{admin}

Try it (curl, or the openai SDK in the project's virtualenv, .venv/bin/python):

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
  Metrics: curl -s http://{HOST}:{ports['metrics_port']}/metrics | grep keygate_

The config keygate is running; edit it and keygate reloads it (results are printed here):
  {config}
Add a consumer: {kg} keys create --consumer NAME --env test
  prints the key on stdout and the `- hash: …` entry for the consumer's `keys:` on stderr.
""" + (rotation.snippet(kg) if rotation else "")


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
    print("demo self-test: ok", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "keygate.yaml",
                        help="keygate config to start from (default: examples/keygate.yaml); the demo runs a copy")
    for flag, default, what in PORTS:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int, metavar="PORT",
                            help=f"{what} (default {default})")
    parser.add_argument("--free-ports", action="store_true", help="pick free ports for whatever no flag sets")
    parser.add_argument("--workdir", type=Path, help="keep the working config and logs here (default: a "
                        "temporary folder, removed on exit)")
    parser.add_argument("--self-test", action="store_true", help="run the snippets against the demo, then stop "
                        "(free ports unless given)")
    parser.add_argument("--rotation", action="store_true", help="keep the provider keys in OpenBao and let the "
                        "mock provider play OpenAI's admin API, so that `keygate rotate` works (see the README)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    ports = {}
    for flag, default, _ in PORTS:
        given = getattr(args, flag)
        ports[flag] = given if given is not None else (free_port() if args.free_ports or args.self_test else default)
    try:
        check_ports(ports)
        if not args.config.is_file():
            raise DemoError(f"--config {args.config}: no such file")
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2

    if args.workdir:
        work = args.workdir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="keygate-demo-"))
    procs: list[Proc] = []
    rotation: demo_rotation.RotationDemo | None = None
    stop = threading.Event()
    try:
        config = working_config(args.config.resolve(), work, ports["grpc_port"], ports["metrics_port"])
        say(f"starting the mock provider, keygate ({relpath(keygate_bin())}) and Envoy; logs in {work}")
        mock, mock_port = start_mock(work)
        procs.append(mock)
        if args.rotation:
            say("starting OpenBao (bao server -dev) with the demo's provider keys")
            rotation = demo_rotation.start(work, config, mock_port)
        kg = Proc([keygate_bin(), "serve", "--config", config], work, name="keygate",
                  env=rotation.keygate_env() if rotation else None)
        procs.append(kg)
        kg.wait_http(f"http://{HOST}:{ports['metrics_port']}/readyz", timeout=20, expect_status=200)
        envoy_config = render(ROOT / "envoy" / "ext_proc.yaml", work / "envoy.yaml", listen_port=ports["envoy_port"],
                              admin_port=ports["envoy_admin_port"], keygate_port=ports["grpc_port"],
                              upstream_port=mock_port)
        procs.append(start_envoy(envoy_config, work))
        base = f"http://{HOST}:{ports['envoy_port']}"
        if args.self_test:
            print("ports: " + ", ".join(f"{flag}={port}" for flag, port in ports.items()), flush=True)
            self_test(base)
            if rotation:
                demo_rotation.self_test(rotation, lambda: self_test(base), mock_port)
            return 0
        print(snippets(base, ports, config, rotation), flush=True)
        say("running; Ctrl-C stops it" + ("" if args.workdir else f" and removes {work}"))
        # Block the signals before the log follower starts, so that only sigwait receives them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        threading.Thread(target=follow_reloads, args=(kg.log_path, stop), daemon=True).start()
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    except (ProcError, TimeoutError, OSError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"demo: could not start: {first}", file=sys.stderr)
        if procs:
            failed = next((p for p in procs if not p.alive()), procs[-1])
            print(f"--- last lines of {failed.name}'s log ---\n{failed.log_tail(15)}", file=sys.stderr)
        return 1
    finally:
        stop.set()
        for p in reversed(procs):
            p.stop()
        if rotation:
            rotation.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        if not args.self_test:
            say("stopped")


if __name__ == "__main__":
    sys.exit(main())
