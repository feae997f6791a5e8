"""Locale tags as stored and filtered on: lower case, "-" separated ("en-us")."""

from __future__ import annotations

import dataclasses
import re

from kbrec.records import Article

LOCALE_PATTERN = re.compile(r"[a-z]{2,8}(-[a-z0-9]{1,8})*")
# RFC 5646 (4.4.1): 35 characters hold every tag of a language, extlang, script, region
# and variant; the index keeps a code per distinct locale, so their length is bounded.
MAX_LOCALE_LENGTH = 35


def normalize_locale(value: str) -> str:
    """Lower-case `value` and use "-" as separator; ValueError if it is no locale tag."""
    locale = value.strip().replace("_", "-").lower()
    if len(locale) > MAX_LOCALE_LENGTH or not LOCALE_PATTERN.fullmatch(locale):
        shown = value if len(value) <= 40 else value[:39] + "…"
        raise ValueError(
            f"invalid locale {shown!r}: expected a tag like 'en' or 'en-us' "
            f"(letters, digits and '-', at most {MAX_LOCALE_LENGTH})"
        )
    return locale


def with_normalized_locale(article: Article) -> Article:
    """The article with its locale normalised (None stays None); ValueError if invalid."""
    if article.locale is None:
        return article
    return dataclasses.replace(article, locale=normalize_locale(article.locale))
