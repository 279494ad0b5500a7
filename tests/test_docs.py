"""The documentation runs as written: every fenced ```python block of README.md and
docs/*.md executes (each in a fresh namespace, in a temporary working directory),
and every relative link points at a file, and a heading, that exists.

A block whose first line is ``# docs: no-run`` (slow, or needing the reader's own
files) is only compiled, not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_RUN = "# docs: no-run"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


def _fenced_blocks(text: str):
    """(info string, first line number, dedented source) of every fenced block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        body, j = [], i + 1
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                break
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        yield info, i + 1, "\n".join(body) + "\n"
        i = j + 1


def _python_blocks():
    for path in DOCS:
        index = 0
        for info, line, source in _fenced_blocks(path.read_text(encoding="utf-8")):
            if info.split(" ")[0].lower() != "python":
                continue
            name = path.relative_to(ROOT).as_posix()
            yield pytest.param(path, line, source, id=f"{name}-{index}")
            index += 1


@pytest.mark.parametrize(("path", "line", "source"), list(_python_blocks()))
def test_python_block_runs(path, line, source, tmp_path, monkeypatch):
    code = compile(source, f"{path.relative_to(ROOT).as_posix()}:{line}", "exec")
    if source.lstrip().split("\n", 1)[0].strip() == NO_RUN:
        return  # compiled only
    monkeypatch.chdir(tmp_path)
    exec(code, {"__name__": "__docs__"})


# ---------------------------------------------------------------------- links
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


def _prose(text: str) -> str:
    """The text outside fenced blocks, with code spans emptied (links keep their targets)."""
    out, in_block = [], None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if in_block is None and m:
            in_block = m["fence"]
            continue
        if in_block is not None:
            close = line.strip()
            if close.startswith(in_block) and set(close) == {in_block[0]}:
                in_block = None
            continue
        out.append(_CODE_SPAN.sub(lambda s: "`" + re.sub(r"[\[\]()]", "", s.group(0)[1:-1]) + "`", line))
    return "\n".join(out)


def _slug(title: str) -> str:
    """The anchor a heading gets on GitHub."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text
    title = title.replace("`", "").replace("*", "").lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path.read_text(encoding="utf-8")).split("\n"):
        m = _HEADING.match(line)
        if not m:
            continue
        slug = _slug(m["title"])
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    bad = []
    for m in _LINK.finditer(_prose(path.read_text(encoding="utf-8"))):
        target = m["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


def test_docs_have_python_examples():
    assert len(list(_python_blocks())) >= 4
