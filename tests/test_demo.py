"""The README's demo works: `scripts/demo --self-test` brings the stack up and the printed curl
and openai snippets succeed against it."""

import subprocess
import sys

from harness import REPO_ROOT


def test_demo_self_test(cargo_build) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--self-test"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo self-test: ok" in out.stdout
