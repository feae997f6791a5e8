from pathlib import Path

import pytest

from kbrec.errors import CommandError
from kbrec.records import Article
from training.corpus.libreoffice import (
    IndexEntry,
    article_key,
    build_queries,
    find_lang_dir,
    package_name,
    parse_bookmarks,
    parse_help_page,
    parse_help_tree,
    readable_index_text,
)


def _by_key(articles: list[Article]) -> dict[tuple[str, str], Article]:
    return {(a.account_id, a.article_id): a for a in articles}


def test_help_tree_maps_modules_to_accounts_and_paths_to_ids(help_dir: Path) -> None:
    articles = parse_help_tree(help_dir)

    assert sorted(_by_key(articles)) == [
        ("calc", "guide-cellstyles"),
        ("shared", "01-00000100"),
        ("writer", "guide-finding"),
    ]
    assert {a.locale for a in articles} == {"en-US"}


def test_empty_pages_and_unknown_modules_are_skipped(help_dir: Path) -> None:
    ids = {a.article_id for a in parse_help_tree(help_dir)}

    assert "01-empty" not in ids
    assert "page" not in ids


def test_body_is_clean_text_without_page_chrome(help_dir: Path) -> None:
    finding = _by_key(parse_help_tree(help_dir))[("writer", "guide-finding")]

    assert finding.title == "Finding and Replacing in Writer"
    assert finding.body.splitlines() == [
        "In text documents you can find words, formatting & styles.",
        "The Find & Replace dialog",
        "Use the shortcut Ctrl + H to open it.",
        "Searches formatted cell values.",
    ]
    for junk in ("Module", "Contents", "Index", "LibreOffice 7.4 Help", "This page is"):
        assert junk not in finding.body


def test_index_keywords_and_related_topics_do_not_leak_into_the_body(help_dir: Path) -> None:
    articles = _by_key(parse_help_tree(help_dir))
    finding, styles = articles[("writer", "guide-finding")], articles[("calc", "guide-cellstyles")]

    assert "searching" not in finding.body
    assert "Navigator" not in finding.body
    assert styles.body == "Select the cells, then choose Styles - Default."


def test_title_falls_back_to_the_title_element() -> None:
    page = "<html><head><title>Help Basics</title></head><body>"
    page += '<div id="DisplayArea"><p>Text.</p></div></body></html>'

    assert parse_help_page(page) == ("Help Basics", "Text.")


def test_page_without_display_area_has_no_body() -> None:
    assert parse_help_page("<html><head><title>T</title></head><body>x</body></html>") == ("T", "")


def test_article_key() -> None:
    assert article_key("swriter", "guide/finding") == ("writer", "guide-finding")
    assert article_key("sbasic", "shared/03/lib_tools") == ("basic", "shared-03-lib_tools")
    assert article_key("nonsense", "x") is None


def test_bookmarks_parse_to_readable_entries_of_the_target_module(help_dir: Path) -> None:
    entries = parse_bookmarks((help_dir / "bookmarks.js").read_text(encoding="utf-8"))

    assert entries[0] == IndexEntry("writer", "guide-finding", "Asian languages, search options")
    # The account comes from the URL's module, not from the app field (CALC here).
    assert entries[2] == IndexEntry("writer", "guide-finding", 'Find & Replace, "styles"')
    assert entries[4].text == "Operators, Integer division (\\)"
    assert len(entries) == 7


@pytest.mark.parametrize(
    ("raw", "readable"),
    [
        ("page styles -- page numbering", "page styles, page numbering"),
        ("AutoCorrect function --  adding exceptions", "AutoCorrect function, adding exceptions"),
        ("&#34;+&#34; operator", '"+" operator'),
        ("Add to List", "Add to List"),
        ("a --  ", "a"),
    ],
)
def test_readable_index_text(raw: str, readable: str) -> None:
    assert readable_index_text(raw) == readable


def test_queries_keep_existing_articles_once_each(help_dir: Path) -> None:
    articles = parse_help_tree(help_dir)
    entries = parse_bookmarks((help_dir / "bookmarks.js").read_text(encoding="utf-8"))

    queries = build_queries(entries, articles)

    assert [(q.account_id, q.text, q.article_id) for q in queries] == [
        ("writer", "Asian languages, search options", "guide-finding"),
        ("writer", 'Find & Replace, "styles"', "guide-finding"),
        ("calc", "cell styles, applying", "guide-cellstyles"),
        ("calc", "Operators, Integer division (\\)", "guide-cellstyles"),
    ]


def test_same_text_lands_in_one_split_whatever_its_account_or_case() -> None:
    articles = [Article(acc, "a", "T", "B") for acc in ("writer", "calc")]
    texts = [f"topic {i}" for i in range(200)]
    entries = [IndexEntry(acc, "a", t) for t in texts for acc in ("writer", "calc")]
    entries += [IndexEntry("calc", "a", t.upper()) for t in texts]

    queries = build_queries(entries, articles)

    splits: dict[str, set[str]] = {}
    for query in queries:
        splits.setdefault(query.text.casefold(), set()).add(query.split)
    assert all(len(s) == 1 for s in splits.values())
    assert {s for group in splits.values() for s in group} == {"train", "validation", "test"}


@pytest.mark.parametrize(
    ("lang", "package"), [("en-us", "libreoffice-help-en-us"), ("PT-BR", "libreoffice-help-pt-br")]
)
def test_package_name(lang: str, package: str) -> None:
    assert package_name(lang) == package


@pytest.mark.parametrize("lang", ["", "--install", "en_US", "e"])
def test_package_name_rejects_non_language_tags(lang: str) -> None:
    with pytest.raises(CommandError, match="invalid language"):
        package_name(lang)


def test_find_lang_dir_matches_case_insensitively(help_dir: Path) -> None:
    assert find_lang_dir(help_dir.parent, "en-us") == help_dir


def test_find_lang_dir_without_help_text(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no help text"):
        find_lang_dir(tmp_path, "en-us")
