"""Markdown documentation split into sections by heading, with code blocks kept whole (markdown-it's tokens)."""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt


@dataclass
class DocSection:
    file: str
    line: int
    title: str  # the heading path, "README > Routing > Parameters"
    text: str  # the section's markdown as written, code fences included
    code: list[str]  # the fenced code blocks' contents, in order


def split_sections(markdown: str, path: str) -> list[DocSection]:
    """One section per heading (text before the first heading is the file's own section)."""
    lines = markdown.splitlines()
    tokens = MarkdownIt("commonmark").parse(markdown)
    starts: list[tuple[int, int, str]] = []  # (line index, level, title)
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            starts.append((token.map[0], int(token.tag[1]), tokens[index + 1].content.strip()))
    if not starts or starts[0][0] > 0:
        starts.insert(0, (0, 0, path.rsplit("/", 1)[-1]))
    fences = [(t.map[0], t.content) for t in tokens if t.type == "fence" and t.map]
    sections, trail = [], []
    for number, (start, level, title) in enumerate(starts):
        end = starts[number + 1][0] if number + 1 < len(starts) else len(lines)
        trail = [*[item for item in trail if item[0] < level], (level, title)]
        body = "\n".join(lines[start:end]).strip()
        if not body:
            continue
        code = [content.rstrip("\n") for line, content in fences if start <= line < end]
        title_path = " > ".join(name for _, name in trail)
        sections.append(DocSection(path, start + 1, title_path, body, code))
    return sections
