"""The LibreOffice help as a multi-account help center with real index queries.

The Debian package libreoffice-help-<lang> holds one HTML page per help article under
usr/share/libreoffice/help/<LANG>/text/<module>/, and bookmarks.js, the help's
keyword index ("page styles -- page numbering" → page). Each module becomes an
account; each index entry becomes a query answered by its page.

Parsing is pure (directory or text in, records out); only `download_help` runs tools.
"""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from bs4 import BeautifulSoup, Tag

from kbrec.errors import CommandError
from kbrec.html_text import element_to_text
from kbrec.records import Article, Query, assign_split

# Help module directory → account id.
MODULE_ACCOUNTS: Final[Mapping[str, str]] = {
    "swriter": "writer",
    "scalc": "calc",
    "simpress": "impress",
    "sdatabase": "base",
    "smath": "math",
    "sdraw": "draw",
    "schart": "chart",
    "sbasic": "basic",
    "shared": "shared",
}

HELP_ROOT: Final = Path("usr/share/libreoffice/help")
BOOKMARKS_FILE: Final = "bookmarks.js"

# Debian package suffixes are lower-case language tags such as en-us, de, pt-br.
_LANG_PATTERN: Final = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*")

# One bookmarks.js entry: {url:"...", app:"...", text:"..."}, with JavaScript escapes.
_JS_STRING: Final = r'"((?:[^"\\]|\\.)*)"'
_BOOKMARK: Final = re.compile(
    rf"\{{\s*url:{_JS_STRING},\s*app:{_JS_STRING},\s*text:{_JS_STRING}\s*\}}"
)
_JS_ESCAPE: Final = re.compile(r"\\(.)")
# The URL path of an article: <LANG>/text/<module>/<path>.html
_ARTICLE_URL: Final = re.compile(r"^[^/]+/text/([^/]+)/([^?#]+)\.html(?:[?#]|$)")
# Index levels are joined by " -- " (with irregular spacing) in bookmarks.js.
_INDEX_LEVEL_SEPARATOR: Final = re.compile(r"\s*--\s*")

# Platform variants inside a "switch": the browser shows one; `default` is the
# platform-neutral one.
_SWITCH_CLASSES: Final = ("switch", "switchinline")


@dataclasses.dataclass(frozen=True)
class IndexEntry:
    """One bookmarks.js entry pointing at an article."""

    account_id: str
    article_id: str
    text: str


# ---------------------------------------------------------------------------
# Articles


def article_key(module: str, relative_path: str) -> tuple[str, str] | None:
    """(account id, article id) of the page text/<module>/<relative_path>.html.

    `relative_path` is below the module directory, "/"-separated, without ".html".
    None for a module that is not an account.
    """
    account = MODULE_ACCOUNTS.get(module)
    if account is None:
        return None
    return account, relative_path.replace("/", "-")


def parse_help_page(page_html: str) -> tuple[str, str]:
    """(title, body text) of one help page; the body is "" when the page has none."""
    soup = BeautifulSoup(page_html, "lxml")
    area = soup.find("div", id="DisplayArea")
    heading = area.find("h1") if isinstance(area, Tag) else None
    if isinstance(heading, Tag) and heading.get_text(strip=True):
        title = " ".join(heading.get_text(" ").split())
        heading.decompose()  # the title is a field of its own, not body text
    else:
        title = " ".join(soup.title.get_text(" ").split()) if soup.title else ""
    if not isinstance(area, Tag):
        return title, ""
    _remove_page_furniture(area)
    return title, element_to_text(area)


def _remove_page_furniture(area: Tag) -> None:
    # Index keywords are already the queries: in the body they would leak the answer.
    for element in area.find_all("meta"):
        element.decompose()
    # "Related Topics" lists other articles' titles, which would make this page
    # match queries meant for them.
    for element in area.find_all("div", class_="relatedtopics"):
        element.decompose()
    for heading in area.find_all("p", class_="related"):
        _remove_loose_related_topics(heading)
    for switch in area.find_all(class_=_SWITCH_CLASSES):
        if not switch.decomposed:  # it may sit inside a variant dropped just before
            _resolve_switch(switch)


def _remove_loose_related_topics(heading: Tag) -> None:
    """Remove a "Related Topics" heading outside div.relatedtopics and its link list.

    Older pages put the heading in a block of its own, followed by sibling blocks that
    each hold just a link to another article.
    """
    if heading.decomposed:
        return
    block = heading
    # Climb out of wrappers that hold nothing but the heading (and anchors).
    while (
        block.parent is not None
        and block.parent.name == "div"
        and block.parent.get("id") != "DisplayArea"
        and _same_text(block.parent, block)
    ):
        block = block.parent
    sibling = block.find_next_sibling()
    while isinstance(sibling, Tag) and _only_links(sibling):
        following = sibling.find_next_sibling()
        sibling.decompose()
        sibling = following
    block.decompose()


def _squeezed_text(tag: Tag) -> str:
    return "".join(tag.get_text().split())


def _same_text(outer: Tag, inner: Tag) -> bool:
    return _squeezed_text(outer) == _squeezed_text(inner)


def _only_links(tag: Tag) -> bool:
    """Whether all of the element's text is link text (and there is some)."""
    text = _squeezed_text(tag)
    link_text = "".join(_squeezed_text(a) for a in tag.find_all("a"))
    return bool(text) and text == link_text


def _resolve_switch(switch: Tag) -> None:
    """Keep the platform-neutral variant of a switch, or every variant if none is."""
    variants = [child for child in switch.children if isinstance(child, Tag)]
    has_default = any(str(v.get("id", "")).startswith("default") for v in variants)
    for variant in variants:
        if has_default and not str(variant.get("id", "")).startswith("default"):
            variant.decompose()
        elif variant.has_attr("hidden"):
            # The help's JavaScript unhides the variant to show; do the same.
            del variant["hidden"]


def parse_help_tree(lang_dir: Path) -> list[Article]:
    """Articles of an unpacked help language directory (…/help/<LANG>).

    The locale is the directory name (e.g. en-US). Pages with an empty body are
    skipped. Articles are ordered by account, then article id.
    """
    locale = lang_dir.name
    articles: list[Article] = []
    for module_dir in sorted((lang_dir / "text").iterdir()):
        if not module_dir.is_dir() or module_dir.name not in MODULE_ACCOUNTS:
            continue
        for page in sorted(module_dir.rglob("*.html")):
            relative = page.relative_to(module_dir).with_suffix("").as_posix()
            key = article_key(module_dir.name, relative)
            if key is None:
                continue
            title, body = parse_help_page(page.read_text(encoding="utf-8"))
            if body:
                articles.append(Article(*key, title=title, body=body, locale=locale))
    articles.sort(key=lambda a: (a.account_id, a.article_id))
    return articles


# ---------------------------------------------------------------------------
# Index queries


def parse_bookmarks(js_text: str) -> list[IndexEntry]:
    """Index entries of a bookmarks.js text, readable and in file order.

    The account is the module of the target page's path (the `app` field only says
    which application's index lists the entry). Entries pointing outside the account
    modules are dropped.
    """
    entries: list[IndexEntry] = []
    for match in _BOOKMARK.finditer(js_text):
        url, _app, raw_text = (_JS_ESCAPE.sub(r"\1", group) for group in match.groups())
        target = _ARTICLE_URL.match(url)
        key = article_key(target.group(1), target.group(2)) if target else None
        text = readable_index_text(raw_text)
        if key is not None and text:
            entries.append(IndexEntry(key[0], key[1], text))
    return entries


def readable_index_text(raw: str) -> str:
    """'page styles --  page numbering' → 'page styles, page numbering'."""
    levels = _INDEX_LEVEL_SEPARATOR.split(html.unescape(raw))
    return ", ".join(" ".join(level.split()) for level in levels if level.strip())


def build_queries(entries: Iterable[IndexEntry], articles: Iterable[Article]) -> list[Query]:
    """Queries for the entries whose article exists, deduplicated, with their split.

    The split hashes the case-folded text, so the same text (in any account, for any
    article) always lands in one split and never leaks from train into test.
    """
    existing = {(a.account_id, a.article_id) for a in articles}
    seen: set[tuple[str, str, str]] = set()
    queries: list[Query] = []
    for entry in entries:
        identity = (entry.account_id, entry.text, entry.article_id)
        if identity in seen or (entry.account_id, entry.article_id) not in existing:
            continue
        seen.add(identity)
        split = assign_split(entry.text.casefold())
        queries.append(Query(entry.account_id, entry.text, entry.article_id, split))
    return queries


# ---------------------------------------------------------------------------
# Download


def package_name(lang: str) -> str:
    """Debian package of the help in `lang` (e.g. en-us → libreoffice-help-en-us)."""
    normalized = lang.strip().lower()
    if not _LANG_PATTERN.fullmatch(normalized):
        raise CommandError(f"invalid language {lang!r}: expected a tag such as en-us, de, pt-br")
    return f"libreoffice-help-{normalized}"


def download_help(lang: str, workdir: Path) -> Path:
    """Download and unpack the help package into `workdir`; return its language dir.

    Uses `apt-get download` (no installation, no root needed beyond apt's cache) and
    `dpkg-deb -x`.
    """
    package = package_name(lang)
    apt_get, dpkg_deb = _require_tool("apt-get"), _require_tool("dpkg-deb")
    downloaded = _run([apt_get, "download", package], cwd=workdir)
    if downloaded.returncode != 0:
        raise CommandError(_download_failure(package, lang, downloaded.stderr))
    debs = sorted(workdir.glob("*.deb"))
    if len(debs) != 1:
        raise CommandError(f"apt-get download {package} left {len(debs)} .deb files, expected 1")
    unpacked = workdir / "unpacked"
    extracted = _run([dpkg_deb, "-x", str(debs[0]), str(unpacked)], cwd=workdir)
    if extracted.returncode != 0:
        raise CommandError(f"dpkg-deb -x {debs[0].name} failed: {_last_line(extracted.stderr)}")
    return find_lang_dir(unpacked / HELP_ROOT, lang)


def find_lang_dir(help_root: Path, lang: str) -> Path:
    """The help directory for `lang` (matched case-insensitively, e.g. en-us → en-US)."""
    candidates = [p for p in help_root.glob("*") if p.is_dir() and (p / "text").is_dir()]
    for candidate in candidates:
        if candidate.name.lower() == lang.strip().lower():
            return candidate
    if len(candidates) == 1:  # a package whose directory is named differently
        return candidates[0]
    raise CommandError(f"no help text for {lang!r} under {HELP_ROOT} in the package")


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CommandError(
            f"{name} not found on PATH: fetching the LibreOffice help needs a Debian or "
            "Ubuntu system with apt-get and dpkg-deb"
        )
    return path


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


def _download_failure(package: str, lang: str, stderr: str) -> str:
    if "Unable to locate package" in stderr or "has no installation candidate" in stderr:
        return (
            f"no package {package}: {lang!r} is not a LibreOffice help language "
            "(try en-us, de, fr, pt-br), or the apt package lists are missing "
            "(run apt-get update)"
        )
    return f"apt-get download {package} failed: {_last_line(stderr)}"


def _last_line(stderr: str) -> str:
    """The most telling stderr line: apt's last error ("E: ..."), else the last line."""
    # apt's "W: Download is performed unsandboxed as root" warning is harmless noise.
    lines = [line.strip() for line in stderr.splitlines() if "unsandboxed" not in line]
    errors = [line for line in lines if line.startswith("E:")]
    meaningful = errors or [line for line in lines if line]
    return meaningful[-1] if meaningful else "no error message"
