"""A tiny document model, written out twice: as Markdown and as one self-contained HTML page.

The report is built once as a list of blocks; both outputs come from the same blocks, so they
cannot drift apart. The HTML holds no script, no external stylesheet and no remote URL: images
are base64 data URIs.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Sequence, Union


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str  # plain text


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    src: str  # path relative to the report (Markdown link target)
    png: bytes  # embedded in the HTML
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Code:
    text: str
    summary: str = ""  # HTML: a collapsed <details> with this summary


Block = Union[Heading, Para, Table, Image, Code]


# ---------------------------------------------------------------------------- Markdown
def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _md_table(t: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    return "\n".join(lines)


def to_markdown(title: str, blocks: Sequence[Block]) -> str:
    parts = [f"# {title}"]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Table):
            parts.append(_md_table(b))
        elif isinstance(b, Image):
            parts.append(f"![{b.alt}]({b.src})" + (f"\n\n*{b.caption}*" if b.caption else ""))
        elif isinstance(b, Code):
            fence = "````" if "```" in b.text else "```"
            parts.append(f"{fence}\n{b.text.rstrip()}\n{fence}")
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 75rem;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .caption { font-size: 0.85rem; color: #555; }
pre { background: #f6f6f6; padding: 0.75rem; overflow-x: auto; font-size: 0.8rem; }
"""


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in t.header)
    body = "\n".join("<tr>" + "".join(f"<td>{_esc(c).replace(chr(10), '<br>')}</td>" for c in row) + "</tr>"
                     for row in t.rows)
    caption = f'<p class="caption">{_esc(t.caption)}</p>' if t.caption else ""
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>{caption}"


def _html_image(b: Image) -> str:
    data = base64.b64encode(b.png).decode("ascii")
    caption = f"<figcaption>{_esc(b.caption)}</figcaption>" if b.caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(b.alt)}">{caption}</figure>'


def to_html(title: str, blocks: Sequence[Block]) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_esc(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_esc(b.text)}</p>")
        elif isinstance(b, Table):
            parts.append(_html_table(b))
        elif isinstance(b, Image):
            parts.append(_html_image(b))
        elif isinstance(b, Code):
            pre = f"<pre>{_esc(b.text.rstrip())}</pre>"
            parts.append(f"<details><summary>{_esc(b.summary)}</summary>{pre}</details>" if b.summary else pre)
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_esc(title)}</h1>\n{body}\n</body>\n</html>\n")
