"""The Markdown documentation: every relative link resolves, and the README's
exit-code table is the runner's.

Links are read outside fenced code blocks and inline code (a sample
postmortem draft in a code block links to files of a run folder, not of the
repository). Anchors are checked against the target's headings, slugged the
way GitHub renders them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

# layout: i13-arch (the runner may move; EXIT is the single source of the codes)
from runbook.cli.run import EXIT

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target); the target ends at whitespace or ')'
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def doc_files() -> list[Path]:
    """README.md, CONTRIBUTING.md, CHANGELOG.md, docs/*.md and sandbox/**/*.md.

    >>> any(p.name == "README.md" for p in doc_files())
    True
    """
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted((ROOT / "sandbox").rglob("*.md"))
    return [p for p in files if p.exists()]


def prose_lines(text: str, keep_code: bool = False) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code removed
    unless `keep_code` (a heading's anchor is made from its code's text too).

    >>> prose_lines("a `[x](y)` b\\n```\\n[c](d)\\n```\\n[e](f)")
    [(1, 'a  b'), (5, '[e](f)')]
    """
    out: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line if keep_code else _INLINE_CODE.sub("", line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading.

    >>> slug("Production's pinned host key")
    'productions-pinned-host-key'
    >>> slug("Isolated mode (`runbook sandbox up --isolated`, root only)")
    'isolated-mode-runbook-sandbox-up---isolated-root-only'
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8"), keep_code=True):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def broken_links(path: Path) -> list[str]:
    """Each relative link in `path` that does not resolve, as 'file:line: target: why'."""
    problems: list[str] = []
    rel = path.relative_to(ROOT)
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # http:, https:, mailto: are not files of the repository
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / unquote(file_part)).resolve() if file_part else path
            where = f"{rel}:{number}: {target}"
            if not dest.exists():
                problems.append(f"{where}: no such file {os.path.relpath(dest, ROOT)}")
                continue
            if ROOT not in dest.parents and dest != ROOT:
                problems.append(f"{where}: points outside the repository")
                continue
            if anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "broken links (fix the path or the heading):\n" + "\n".join(problems)


def test_the_documents_the_readme_promises_exist() -> None:
    names = {str(p.relative_to(ROOT)) for p in doc_files()}
    for needed in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "docs/safety.md"):
        assert needed in names


def readme_exit_codes() -> dict[str, int]:
    """The README's exit-code table, as {outcome: code}."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Exit codes", 1)
    assert len(section) == 2, "README.md has no '## Exit codes' section"
    body = section[1].split("\n## ", 1)[0]
    table: dict[str, int] = {}
    for row in re.finditer(r"^\|\s*(\d+)\s*\|\s*`([a-z_]+)`\s*\|", body, re.M):
        code, outcome = int(row.group(1)), row.group(2)
        assert outcome not in table, f"README.md lists outcome {outcome!r} twice"
        table[outcome] = code
    return table


def test_readme_exit_codes_are_the_runners() -> None:
    table = readme_exit_codes()
    missing = {k: v for k, v in EXIT.items() if table.get(k) != v}
    extra = {k: v for k, v in table.items() if k not in EXIT}
    assert not missing and not extra, (
        "README.md's exit-code table disagrees with runbook's EXIT: "
        f"add or correct {missing}, remove {extra}"
    )
