"""The leak scan: every secret a test handed out must stay out of keygate's and Envoy's logs.

Secrets register themselves: `mint_key` registers each consumer key it mints, `start_keygate`
and `Keygate.write_secrets` every provider key they write to a secrets file; tests add keys
they make up (a typo of a real key) with `register`. `Stack.stop()` and `Replicas.stop()` then
scan every keygate and Envoy log under their work directory (restarted processes included)
for every registered secret. The registry is per process (one per xdist worker), so a stack
is also checked against keys minted by earlier tests: those must not show up either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

# Logs of processes that see secrets and must never write them. The mock provider's log is
# not scanned: it plays the provider, which is meant to receive the provider key.
SCANNED_LOGS = ("keygate*.log", "envoy*.log")

_REGISTERED: dict[str, None] = {}  # insertion-ordered set


def register(*secrets: str) -> None:
    """Add secrets that must never appear in a scanned log."""
    for secret in secrets:
        if secret:
            _REGISTERED[secret] = None


def registered() -> list[str]:
    """Every secret registered in this process so far, oldest first."""
    return list(_REGISTERED)


def scanned_logs(root: Path) -> list[Path]:
    """keygate's and Envoy's log files anywhere under `root`."""
    return sorted({p for pattern in SCANNED_LOGS for p in Path(root).rglob(pattern)})


def redacted(secret: str) -> str:
    """Enough of a secret to tell which one it was, not enough to use it."""
    return secret[:10] + "…"


def assert_no_leaks(root: Path, secrets: Iterable[str] = ()) -> int:
    """Fail if any of `secrets` or any registered secret occurs in a keygate or Envoy log under
    `root`; return how many log files were scanned. The failure names the file and the line
    number, and only a prefix of the secret."""
    everything = list(dict.fromkeys([*secrets, *registered()]))
    logs = scanned_logs(root)
    found: list[str] = []
    for log in logs:
        text = log.read_text(encoding="utf-8", errors="replace")
        for secret in everything:
            at = text.find(secret)
            if at >= 0:
                found.append(f"{log} line {text.count(chr(10), 0, at) + 1}: {redacted(secret)}")
    assert not found, "secrets leaked into logs:\n" + "\n".join(found)
    return len(logs)


def assert_absent(text: str, where: str, secrets: Iterable[str] = ()) -> None:
    """Fail if any of `secrets` or any registered secret occurs in `text` (a command's output,
    which has no log file for assert_no_leaks); `where` names it in the failure."""
    for secret in dict.fromkeys([*secrets, *registered()]):
        assert secret not in text, f"{redacted(secret)} is in {where}"
