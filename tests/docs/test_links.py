"""Every link in the documentation resolves: a relative link names a file or folder of the
repository, and a ``#anchor`` (in the same page or another) names one of that page's
headings, as GitHub makes their anchors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO

PAGES = sorted(
    {
        REPO / "README.md",
        REPO / "BENCHMARKS.md",
        REPO / "RELIABILITY.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "deploy").glob("*.md"),
    }
)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
HTML_ID = re.compile(r"<[^>]+\b(?:id|name)=\"([^\"]+)\"")


def prose(text: str) -> str:
    """The page without its code: links inside code blocks and spans are not links."""
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text without markup, lower case, punctuation
    dropped (hyphens and underscores kept), spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    found: set[str] = set(HTML_ID.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    text = prose(page.read_text())
    return LINK.findall(text) + REFERENCE.findall(text)


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) is not None  # https:, mailto:


def broken(page: Path, root: Path = REPO) -> list[str]:
    out = []
    for target in links(page):
        if is_external(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            out.append(f"{target}: no such file")
            continue
        try:
            dest.relative_to(root)
        except ValueError:
            out.append(f"{target}: outside the repository")
            continue
        if anchor:
            if dest.suffix != ".md":
                out.append(f"{target}: an anchor into a page that is not Markdown")
            elif anchor not in anchors(dest):
                out.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(page: Path) -> None:
    assert broken(page) == []


def test_the_pages_have_links_to_check() -> None:
    """The link pattern finds the README's links (a pattern finding none passes anything)."""
    found = links(REPO / "README.md")
    assert "docs/auth.md" in found and "RELIABILITY.md#hostile-traffic" in found


def test_slugs_are_github_s() -> None:
    assert slug("Vertex AI clients") == "vertex-ai-clients"
    assert slug("The command `eos-gateway`") == "the-command-eos-gateway"
    assert slug("Quotas: per day & per minute (UTC)") == "quotas-per-day--per-minute-utc"
    assert slug("`usage_daily`: counters") == "usage_daily-counters"


def test_a_broken_link_and_a_missing_anchor_are_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Top\n\n## The `eos` part\n\n## Top\n")
    page = tmp_path / "docs" / "probe.md"
    page.write_text(
        "# Probe\n\n[ok](#probe) [gone](missing.md) [anchor](../README.md#no-such-heading) "
        "[fine](../README.md#the-eos-part) [again](../README.md#top-1) [up](../../x.md)\n"
        "`[code](nowhere.md)` [web](https://example.org/x)\n\n```\n[fenced](gone.md)\n```\n"
    )
    (tmp_path.parent / "x.md").touch()
    assert broken(page, tmp_path) == [
        "missing.md: no such file",
        "../README.md#no-such-heading: no heading #no-such-heading in README.md",
        "../../x.md: outside the repository",
    ]
