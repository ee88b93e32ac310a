"""The secret-scanner patterns in deploy/scanners find real keygate keys and nothing else.

Keys are minted by `keygate keys create`. Each pattern is loaded from the shipped file itself
(gitleaks.toml, and the fields of github-secret-scanning.md), so the files cannot drift
from what is tested. Each runs in the regex engine of the scanner it is written for, as well
as in Python's `re`:

- gitleaks compiles its rules with Go's `regexp`, which is RE2: the gitleaks rule runs in
  RE2 itself (PyPI `google-re2`), which refuses what Go refuses (look-arounds, backreferences)
  and has Go's ASCII `\b`.
- GitHub secret scanning matches custom patterns with Hyperscan: the GitHub pattern (before,
  secret format, after) is compiled and scanned with Hyperscan itself (PyPI `hyperscan`).

gitleaks itself is not run: it is not packaged for this machine's Debian release and is
installed from nowhere else here. Its entropy and allowlist handling are checked by reading
the rule (test_real_keys_clear_the_entropy_floor…, test_github_doc_test_string…).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import tomllib
import zlib
from collections import Counter
from pathlib import Path

import hyperscan
import pytest
import re2

from harness.paths import REPO_ROOT, keygate_bin

SCANNERS = REPO_ROOT / "deploy" / "scanners"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RULE_ID = "keygate-consumer-key"


def gitleaks_rule() -> dict:
    config = tomllib.loads((SCANNERS / "gitleaks.toml").read_text())
    assert config["extend"]["useDefault"] is True
    [rule] = [r for r in config["rules"] if r["id"] == RULE_ID]
    return rule


def github_fields() -> dict[str, str]:
    """Each '### Field' section's first fenced block → {field: block}."""
    text = (SCANNERS / "github-secret-scanning.md").read_text()
    fields = {}
    for section in re.split(r"^### ", text, flags=re.M)[1:]:
        name, _, body = section.partition("\n")
        block = re.search(r"^```[a-z]*\n(.*?)\n```", body.split("\n## ")[0], re.M | re.S)
        if block:
            fields[name.strip()] = block.group(1)
    return fields


def gitleaks_regex() -> re.Pattern[str]:
    return re.compile(gitleaks_rule()["regex"], re.ASCII)


def github_regex() -> re.Pattern[str]:
    f = github_fields()
    # Hyperscan's \z is Python's \Z.
    before = f["Before secret"].replace(r"\z", r"\Z")
    after = f["After secret"].replace(r"\z", r"\Z")
    return re.compile(f"(?:{before})({f['Secret format']})(?:{after})", re.ASCII)


def found(pattern, text: str) -> list[str]:
    """The keys `pattern` finds in `text`: a compiled Python `re` or RE2 pattern (the secret is
    its last group, or the whole match), or a Hyperscan `Scanner`."""
    if isinstance(pattern, Scanner):
        return pattern.found(text)
    return [m.group(m.lastindex or 0) for m in pattern.finditer(text)]


def gitleaks_re2():
    """The gitleaks rule compiled by RE2, the engine of Go's regexp that gitleaks uses."""
    return re2.compile(gitleaks_rule()["regex"])


WORD = set(BASE62 + "_")


class Scanner:
    """The GitHub custom pattern in Hyperscan, GitHub's engine: `(?:before)secret(?:after)` as
    one expression (Hyperscan has no capture groups), scanned over the text's UTF-8 bytes. A
    match spans the before and after characters (none at the start or end of the text); the
    secret is what lies between them."""

    def __init__(self) -> None:
        f = github_fields()
        expression = f"(?:{f['Before secret']}){f['Secret format']}(?:{f['After secret']})"
        self.db = hyperscan.Database()
        self.db.compile(expressions=[expression.encode()], ids=[0], flags=[hyperscan.HS_FLAG_SOM_LEFTMOST])

    def found(self, text: str) -> list[str]:
        data = text.encode()
        spans: list[tuple[int, int]] = []
        self.db.scan(data, match_event_handler=lambda _id, start, end, _flags, _ctx: spans.append((start, end)))
        out = []
        for start, end in spans:
            match = data[start:end].decode()
            if match[:1] not in WORD:
                match = match[1:]
            if match[-1:] not in WORD:
                match = match[:-1]
            out.append(match)
        return out


PATTERNS = {"gitleaks": gitleaks_regex, "gitleaks-re2": gitleaks_re2, "github": github_regex,
            "github-hyperscan": Scanner}


def checksum(body: str) -> str:
    n = zlib.crc32(body.encode())
    digits = []
    for _ in range(6):
        n, r = divmod(n, 62)
        digits.append(BASE62[r])
    return "".join(reversed(digits))


def checksum_valid(key: str) -> bool:
    body, _, check = key.rpartition("_")
    return check == checksum(body)


def shannon(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def hash_key(key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(keygate_bin()), "keys", "hash"],
        input=key + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def keys(cargo_build: Path) -> list[str]:
    minted = []
    for env in ["live", "test", "live", "test", "live", "test"]:
        out = subprocess.run(
            [str(keygate_bin()), "keys", "create", "--consumer", "x", "--env", env],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        key = out.stdout.strip()
        assert key.startswith(f"kg_{env}_"), "keys create prints the key alone on stdout"
        minted.append(key)
    return minted


def test_gitleaks_rule_is_complete() -> None:
    rule = gitleaks_rule()
    assert rule["keywords"] == ["kg_live_", "kg_test_"]
    assert rule["description"]
    assert rule["regex"].startswith(r"\b") and rule["regex"].endswith(r"\b")
    assert 3.0 <= rule["entropy"] <= 4.0


CONTEXTS = {
    "dotenv": "KEYGATE_API_KEY={key}\nOTHER=1\n",
    "json": None,  # json.dumps below
    "python": 'client = openai.OpenAI(base_url="http://gw/v1", api_key="{key}")',
    "url_query": "https://gw.example.com/v1/models?api_key={key}&limit=5",
    "yaml": "api_key: '{key}'",
    "header": "curl -H 'Authorization: Bearer {key}' http://gw/v1/models",
    "start_of_text": "{key} is the key",
}


@pytest.mark.parametrize("scanner", PATTERNS)
@pytest.mark.parametrize("context", CONTEXTS)
def test_real_keys_match_in_realistic_text(keys: list[str], scanner: str, context: str) -> None:
    pattern = PATTERNS[scanner]()
    for key in keys:
        template = CONTEXTS[context]
        text = json.dumps({"api_key": key, "n": 1}) if template is None else template.format(key=key)
        assert found(pattern, text) == [key], text


def near_misses(key: str) -> dict[str, str]:
    prefix, env, random, check = key.split("_")
    return {
        "wrong_prefix": f"kg_prod_{random}_{check}",
        "upper_case_prefix": f"KG_{env.upper()}_{random}_{check}",
        "random_too_short": f"kg_{env}_{random[:-1]}_{check}",
        "random_too_long": f"kg_{env}_{random}A_{check}",
        "checksum_too_short": f"kg_{env}_{random}_{check[:-1]}",
        "checksum_too_long": f"kg_{env}_{random}_{check}A",
        "dash_in_random": f"kg_{env}_{random[:10]}-{random[11:]}_{check}",
        "plus_in_random": f"kg_{env}_{random[:10]}+{random[11:]}_{check}",
        "non_ascii_in_random": f"kg_{env}_{random[:10]}é{random[11:]}_{check}",
        "glued_before": f"xkg_{env}_{random}_{check}",
        "glued_after": f"{key}x",
        "glued_identifier": f"MY_{key}",
        "suffix": f"{key}_v2",
        "missing_checksum": f"kg_{env}_{random}",
        "openai_key": "sk-proj-" + random + random[:18] + "T3BlbkFJ" + check * 3,
        "openai_legacy": "sk-" + random + random[:18],
        "anthropic_key": "sk-ant-api03-" + random * 3,
    }


@pytest.mark.parametrize("scanner", PATTERNS)
def test_near_misses_do_not_match(keys: list[str], scanner: str) -> None:
    pattern = PATTERNS[scanner]()
    for key in keys[:2]:
        for name, text in near_misses(key).items():
            for wrapped in [text, f"API_KEY={text}\n", json.dumps({"k": text})]:
                assert found(pattern, wrapped) == [], f"{name}: {wrapped}"


def test_real_keys_clear_the_entropy_floor_and_placeholders_do_not(keys: list[str]) -> None:
    floor = gitleaks_rule()["entropy"]
    lowest = min(shannon(k) for k in keys)
    assert lowest > floor + 0.5, lowest
    for placeholder in ["kg_live_" + "X" * 30 + "_XXXXXX", "kg_test_" + "0" * 30 + "_000000"]:
        assert found(gitleaks_regex(), placeholder) == [placeholder]
        assert shannon(placeholder) < floor


def test_minted_keys_carry_a_valid_checksum(keys: list[str]) -> None:
    for key in keys:
        assert checksum_valid(key), key
        body, _, check = key.rpartition("_")
        wrong = BASE62[(BASE62.index(check[-1]) + 1) % 62]
        assert not checksum_valid(body + "_" + check[:-1] + wrong)


def test_keys_hash_confirms_a_match_and_rejects_a_bad_checksum(keys: list[str]) -> None:
    for key in keys[:2]:
        ok = hash_key(key)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        body, _, check = key.rpartition("_")
        typo = body + "_" + check[:-1] + BASE62[(BASE62.index(check[-1]) + 1) % 62]
        assert found(gitleaks_regex(), typo) == [typo], "a typo still has the key's shape"
        bad = hash_key(typo)
        assert bad.returncode != 0
        assert typo not in bad.stdout + bad.stderr, "keygate never echoes a presented key"


def test_github_doc_test_string_and_gitleaks_allowlist_hold_real_demo_keys(cargo_build: Path) -> None:
    fields = github_fields()
    for name in ["Pattern name", "Secret format", "Before secret", "After secret", "Test string"]:
        assert fields.get(name), f"github-secret-scanning.md lacks '### {name}'"
    [demo] = found(github_regex(), fields["Test string"])
    assert found(Scanner(), fields["Test string"]) == [demo], "Hyperscan highlights the same key"
    assert checksum_valid(demo)
    assert demo in (REPO_ROOT / "README.md").read_text(), "the test string is a published demo key"
    allow = gitleaks_rule()["allowlists"][0]["regexes"]
    assert any(re.fullmatch(a.strip("^$"), demo) for a in allow)
    for a in allow:
        allowed = a.strip("^$")
        assert checksum_valid(allowed)
        assert hash_key(allowed).returncode == 0
