"""Zendesk Help Center article exports → Article records.

An export is the JSON of the Help Center articles API:
`{"articles": [{"id", "title", "body" (HTML), "locale", "draft", ...}], ...}`.
The CLI import and the server's import endpoint share this parser, so every
rejection is a `ZendeskExportError` whose message says which article is wrong.
"""

from __future__ import annotations

from kbrec.html_text import html_to_text
from kbrec.records import Article, is_valid_id


class ZendeskExportError(ValueError):
    """The payload is not a usable Zendesk articles export."""


class ExportTooLarge(ZendeskExportError):
    """The export lists more articles (drafts included) than the caller accepts."""


def parse_zendesk_export(
    payload: object, account_id: str, max_articles: int | None = None
) -> list[Article]:
    """Articles of `account_id` from a parsed export, in export order.

    Bodies are converted from HTML to text; article ids are the Zendesk ids as
    strings. Drafts (`"draft": true`) are skipped: they are unpublished, so they
    must not be recommended. With `max_articles`, a longer 'articles' list is refused
    (`ExportTooLarge`) before any HTML is converted: the count bounds the work.
    """
    if not is_valid_id(account_id):
        raise ZendeskExportError(
            f"invalid account id {account_id!r}: use letters, digits, '.', '_' and '-'"
        )
    if not isinstance(payload, dict):
        raise ZendeskExportError("an export must be a JSON object with an 'articles' list")
    items = payload.get("articles")
    if not isinstance(items, list):
        raise ZendeskExportError("the export has no 'articles' list")
    if max_articles is not None and len(items) > max_articles:
        raise ExportTooLarge(
            f"the export lists {len(items)} articles, more than the {max_articles} "
            "an import may have"
        )

    articles: list[Article] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        article = _parse_article(item, index, account_id)
        if article is None:
            continue
        if article.article_id in first_index:
            raise ZendeskExportError(
                f"articles[{index}]: id {article.article_id} repeats "
                f"articles[{first_index[article.article_id]}]"
            )
        first_index[article.article_id] = index
        articles.append(article)
    return articles


def _parse_article(item: object, index: int, account_id: str) -> Article | None:
    where = f"articles[{index}]"
    if not isinstance(item, dict):
        raise ZendeskExportError(f"{where}: expected an object")
    for field in ("id", "title", "body"):
        if field not in item:
            raise ZendeskExportError(f"{where}: missing {field!r}")
    article_id = _article_id(item["id"], where)
    title, body, locale = item["title"], item["body"], item.get("locale")
    if not isinstance(title, str) or not title.strip():
        raise ZendeskExportError(f"{where} (id {article_id}): 'title' must be a non-empty string")
    if not isinstance(body, str):
        raise ZendeskExportError(f"{where} (id {article_id}): 'body' must be a string of HTML")
    if locale is not None and not isinstance(locale, str):
        raise ZendeskExportError(f"{where} (id {article_id}): 'locale' must be a string")
    if item.get("draft") is True:
        return None
    return Article(
        account_id=account_id,
        article_id=article_id,
        title=" ".join(title.split()),
        body=html_to_text(body) if body.strip() else "",
        locale=locale or None,
    )


def _article_id(value: object, where: str) -> str:
    # Zendesk ids are integers; accept id-safe strings too, as re-exported data has them.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and is_valid_id(value):
        return value
    raise ZendeskExportError(
        f"{where}: 'id' must be a non-negative integer or a string of letters, digits, "
        f"'.', '_' and '-', not {value!r}"
    )
