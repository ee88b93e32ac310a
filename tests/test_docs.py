"""The documentation can be navigated: every relative link in README.md and docs/*.md (and the
READMEs next to the files they describe, bench/ and deploy/*/) resolves to a file inside the
repository and, when it names an anchor, to a heading of that file under GitHub's anchor rules;
and the README's map (its "Documentation" table) lists every page in docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target); the text may hold inline code but no nested brackets.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def documents() -> list[Path]:
    pages = [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md")), REPO_ROOT / "bench" / "README.md",
             *sorted((REPO_ROOT / "deploy").glob("*/README.md"))]
    return [p for p in pages if p.is_file()]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (link targets, emphasis markers and
    code backticks dropped), lowercased, every character that is not a letter, digit, space,
    '-' or '_' dropped, each space turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file; a repeated slug gets -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        result.add(slug if n == 0 else f"{slug}-{n}")
    return result


def links(path: Path) -> list[str]:
    targets = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        targets += LINK.findall(INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line))
    return targets


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("//")


def test_slug_follows_githubs_rules() -> None:
    assert github_slug("Istio: enable a namespace in one step") == "istio-enable-a-namespace-in-one-step"
    assert github_slug("Running against Vault (or OpenBao)") == "running-against-vault-or-openbao"
    assert github_slug("Quickstart (fresh machine)") == "quickstart-fresh-machine"
    assert github_slug("The `keygate check` command") == "the-keygate-check-command"
    assert github_slug("Limits and budgets") == "limits-and-budgets"


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading(doc: Path) -> None:
    broken = []
    for target in links(doc):
        if not is_relative(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        try:
            resolved.relative_to(REPO_ROOT)
        except ValueError:
            broken.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor:
            if resolved.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not markdown")
            elif anchor not in anchors(resolved):
                broken.append(f"{target}: no heading with that anchor in {resolved.relative_to(REPO_ROOT)}")
    assert broken == [], f"{doc.relative_to(REPO_ROOT)}: " + "; ".join(broken)


def test_no_page_names_a_file_outside_the_repository() -> None:
    for doc in documents():
        text = doc.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, doc
        assert "../shared" not in text, doc


def test_readme_map_lists_every_docs_page_once() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Documentation\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| [")]
    listed = [LINK.search(row).group(1) for row in rows]
    pages = sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))
    assert len(pages) >= 8, pages
    assert sorted(listed) == pages, "the README's map and docs/ differ"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 3 and all(cells), f"a map row says who the page is for and what it answers: {row}"
