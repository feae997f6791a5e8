"""Readable plain text from HTML help articles (fragments or whole pages).

Used wherever article HTML enters kbrec: the LibreOffice corpus parser, the Zendesk
import and the server's import endpoint. The output is what the encoder and BM25 see,
so page chrome (navigation, scripts, hidden variants) must not reach it.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, CData, NavigableString, Tag

# Elements whose content is never article text.
DROPPED_TAGS: frozenset[str] = frozenset(
    {
        "script",
        "style",
        "noscript",
        "head",
        "nav",
        "header",
        "footer",
        "aside",
        "template",
        "iframe",
        "svg",
    }
)

# Elements a browser lays out as their own block: their text starts on a new line.
BLOCK_TAGS: frozenset[str] = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "caption",
        "center",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "legend",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    }
)

# Table cells sit side by side within a row: separate them by a space, not a newline.
CELL_TAGS: frozenset[str] = frozenset({"td", "th"})

_WHITESPACE = re.compile(r"\s+")
_DISPLAY_NONE = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_NEWLINE = "\n"


def html_to_text(html: str) -> str:
    """Return the readable text of an HTML fragment or page.

    Blocks (paragraphs, headings, list items, table rows) become lines; whitespace
    inside a line is collapsed to single spaces; entities are decoded; empty lines
    are dropped.
    """
    return element_to_text(BeautifulSoup(html, "lxml"))


def element_to_text(root: Tag) -> str:
    """Return the readable text below an already parsed element (see `html_to_text`)."""
    pieces: list[str] = []
    # Explicit stack instead of recursion: user-supplied HTML can nest deeper than
    # Python's recursion limit. Items are an element, or a literal string to emit.
    stack: list[tuple[Tag | NavigableString | str, bool]] = [(root, False)]
    while stack:
        node, in_pre = stack.pop()
        if isinstance(node, NavigableString):
            # Exact types only: Comment, Doctype, etc. subclass NavigableString.
            if type(node) in (NavigableString, CData):
                pieces.append(str(node) if in_pre else _WHITESPACE.sub(" ", node))
        elif isinstance(node, str):
            pieces.append(node)
        elif isinstance(node, Tag):
            _push_children(node, in_pre, stack)
    return _tidy_lines("".join(pieces))


def _push_children(
    tag: Tag, in_pre: bool, stack: list[tuple[Tag | NavigableString | str, bool]]
) -> None:
    name = tag.name
    if name in DROPPED_TAGS or _is_hidden(tag):
        return
    if name == "br":
        stack.append((_NEWLINE, in_pre))
        return
    separator = _NEWLINE if name in BLOCK_TAGS else " " if name in CELL_TAGS else ""
    in_pre = in_pre or name == "pre"
    # Pushed in reverse so that they pop in document order.
    if separator:
        stack.append((separator, in_pre))
    stack.extend((child, in_pre) for child in reversed(tag.contents))
    if separator:
        stack.append((separator, in_pre))


def _is_hidden(tag: Tag) -> bool:
    if tag.has_attr("hidden"):
        return True
    style = tag.get("style")
    return isinstance(style, str) and _DISPLAY_NONE.search(style) is not None


def _tidy_lines(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)
