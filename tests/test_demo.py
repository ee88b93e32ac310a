"""The README's demo works, and its first hour has no guesses:

- `scripts/demo --self-test` brings the stack up on the ports the flags name, the printed curl
  and openai snippets succeed against it, and it removes its $TMPDIR/keygate-demo-* folder;
- a port already taken stops it with one line that names the port and the flag to change it;
- the interactive demo prints the path of the config keygate runs, a copy of the example in
  the same layout, so that a consumer block written like the example's, with a key from
  `keygate keys create`, can be appended and works once keygate reloads; a bad edit's reload
  error is printed on the demo's terminal; Ctrl-C stops it and removes its folder."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from harness import REPO_ROOT, free_port, keygate_bin, mint_key

DEMO = [sys.executable, str(REPO_ROOT / "scripts" / "demo.py")]
PORT_FLAGS = ("--envoy-port", "--grpc-port", "--metrics-port", "--envoy-admin-port")


def env_with_tmpdir(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, TMPDIR=str(tmp_path))


def leftovers(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("keygate-demo-*"))


def test_demo_self_test_on_the_ports_given_and_cleans_up(cargo_build, tmp_path) -> None:
    ports = {flag: free_port() for flag in PORT_FLAGS}
    out = subprocess.run(
        [*DEMO, "--self-test", *(arg for flag, port in ports.items() for arg in (flag, str(port)))],
        capture_output=True, text=True, timeout=120, check=False, env=env_with_tmpdir(tmp_path),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo self-test: ok" in out.stdout
    for flag, port in ports.items():
        assert f"{flag[2:].replace('-', '_')}={port}" in out.stdout, flag
    assert leftovers(tmp_path) == []


def test_demo_rotation_rotates_the_demo_credential_end_to_end(cargo_build, tmp_path) -> None:
    """`scripts/demo --rotation --self-test`: the provider keys in OpenBao, the mock provider
    playing OpenAI's admin API and enforcing keys; the commands the demo prints, run with the
    environment it prints: `keygate rotate openai/development` mints, health-checks, stores
    version 2 and switches keygate, requests work before and after, and (the grace period cut
    to 2s in the working config) `keygate rotate --due` revokes the old key, which the mock then
    refuses. The folder (OpenBao included) is gone afterwards."""
    out = subprocess.run([*DEMO, "--self-test", "--rotation"], capture_output=True, text=True, timeout=180,
                         check=False, env=env_with_tmpdir(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("openai/development: health check: ok",
                 "openai/development: stored as version 2 of secret/ai-providers/openai/development",
                 "openai/development: switched: 1 replica(s) confirmed", "openai/development: rotated",
                 "openai/development: grace period over: ", "demo rotation self-test: ok"):
        assert line in out.stdout, line
    assert leftovers(tmp_path) == []


def test_demo_port_taken_is_one_clear_line(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([*DEMO, "--free-ports", "--envoy-port", str(port)], capture_output=True, text=True,
                             timeout=60, check=False, env=env_with_tmpdir(tmp_path))
    assert out.returncode != 0
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert f"port {port}" in lines[0] and "in use" in lines[0] and "--envoy-port" in lines[0], lines[0]
    assert leftovers(tmp_path) == []


class Demo:
    """The interactive demo, its output read line by line."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = subprocess.Popen([*DEMO, "--free-ports"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env_with_tmpdir(tmp_path), start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, "the demo exited:\n" + "\n".join(self.seen)
                continue
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.seen))

    def close(self) -> None:
        """SIGTERM first: the demo then stops the processes it started and removes its folder."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def chat(envoy_port: int, key: str) -> int:
    return httpx.post(f"http://127.0.0.1:{envoy_port}/v1/chat/completions",
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                      timeout=10).status_code


def test_demo_config_to_edit_reloads_and_reports_reload_errors(cargo_build, tmp_path) -> None:
    demo = Demo(tmp_path)
    try:
        envoy_port = int(demo.wait_for(r"127\.0\.0\.1:(\d+)\s+Envoy: send requests here").group(1))
        demo.wait_for(r"The config keygate is running; edit it")
        config = Path(demo.wait_for(r"^\s+(/\S+keygate\.yaml)$").group(1))
        assert config.parent.parent == tmp_path and config.parent.name.startswith("keygate-demo-")
        demo.wait_for(r"keygate keys create --consumer NAME")

        # The copy is the example, line for line, but for the two listener addresses.
        example = (REPO_ROOT / "examples" / "keygate.yaml").read_text().splitlines()
        copy = config.read_text().splitlines()
        assert len(copy) == len(example)
        changed = [(a, b) for a, b in zip(example, copy) if a != b]
        assert [a.split(":")[0] for a, _ in changed] == ["  grpc", "  admin"], changed

        # A consumer written like the example's, with a fresh key, works after the reload.
        minted = mint_key("demo-new", env="test")
        assert chat(envoy_port, minted.key) == 401
        with open(config, "a") as f:
            f.write(f"""
  - name: demo-new
    team: demo
    environment: development
    provider: openai
    keys:
      - hash: {minted.hash}
        env: test
    scope:
      routes:
        - POST /v1/chat/completions
""")
        demo.wait_for(r"^keygate: configuration reloaded \(3 consumers\)$")
        assert chat(envoy_port, minted.key) == 200

        # A bad edit: the error, with its field path, on the demo's own output.
        config.write_text(config.read_text().replace("    team: demo\n    environment: development\n    provider: openai\n    keys:\n      - hash: " + minted.hash,
                                                     "    team: demo\n    statuz: active\n    environment: development\n    provider: openai\n    keys:\n      - hash: " + minted.hash))
        m = demo.wait_for(r"^keygate: reload rejected, still running the previous config: (.+)$")
        assert "consumers[2]" in m.group(1) and "statuz" in m.group(1), m.group(1)
        assert chat(envoy_port, minted.key) == 200

        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(30) == 0
        assert not config.parent.exists()
        assert leftovers(tmp_path) == []
    finally:
        demo.close()


def test_running_it_for_real_works_as_written(cargo_build, tmp_path) -> None:
    """README "Running it for real", run line by line in a fresh folder with the repository's
    examples/, envoy/ and .venv: the files it copies exist, `keygate check` passes on the copy,
    and the Envoy command names an Envoy that exists and a config it accepts. (The release
    build is the suite's debug build here; serve binds fixed ports, so it is not started.)"""
    section = (REPO_ROOT / "README.md").read_text().split("## Running it for real", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
    for name in ("examples", "envoy", ".venv", "target"):
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    release = "target/release/keygate"
    ran = []
    for command in commands:
        argv = command.split()
        if argv[:2] == ["cargo", "build"]:
            continue
        if argv[0] == release:
            argv[0] = str(keygate_bin())
            if argv[1] == "serve":
                assert argv[2:] == ["--config", "keygate.yaml"]
                continue
        if argv[0].endswith("envoy"):
            argv += ["--mode", "validate"]
        out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, f"{command}:\n{out.stdout}\n{out.stderr}"
        ran.append(argv[0].rsplit("/", 1)[-1])
    assert ran == ["cp", "cp", "keygate", "envoy"], ran
