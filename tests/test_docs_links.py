"""The front page and the docs hold together: README.md stays a front page (at most 150 lines), and every
relative Markdown link or image in README.md, CHANGELOG.md and docs/*.md points to a file that exists (and, for
`page.md#section`, to a heading of that page, with GitHub's anchor rule)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_TARGET = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target); the text may span lines


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where brackets are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    for line in _FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(f"{slug}-{n}" if n else slug)
    return anchors


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in _TARGET.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {_rel(dest)}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {_rel(dest)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert page.exists(), f"{page.relative_to(ROOT)} is missing"
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links: {broken_links(page)}"


def test_readme_is_a_front_page() -> None:
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/ (at most {README_MAX_LINES})"


def test_docs_pages_exist() -> None:
    assert len(PAGES) > 3, "docs/*.md found no pages"


def test_checker_sees_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "here.md").write_text("# Here\n\n[ok](#here) `[code](nowhere.md)`\n")
    page = tmp_path / "page.md"
    page.write_text("# T\n\n[a](here.md#here) ![b](missing.png)\n[c\nd](here.md#nowhere)\n```\n[e](gone.md)\n```\n")
    assert [b.split(":")[0] for b in broken_links(page)] == ["missing.png", "here.md#nowhere"]
