"""Locale tags as stored and filtered on: lower case, "-" separated ("en-us")."""

from __future__ import annotations

import dataclasses
import re

from kbrec.records import Article

LOCALE_PATTERN = re.compile(r"[a-z]{2,8}(-[a-z0-9]{1,8})*")


def normalize_locale(value: str) -> str:
    """Lower-case `value` and use "-" as separator; ValueError if it is no locale tag."""
    locale = value.strip().replace("_", "-").lower()
    if not LOCALE_PATTERN.fullmatch(locale):
        raise ValueError(f"invalid locale {value!r}: expected a tag like 'en' or 'en-us'")
    return locale


def with_normalized_locale(article: Article) -> Article:
    """The article with its locale normalised (None stays None); ValueError if invalid."""
    if article.locale is None:
        return article
    return dataclasses.replace(article, locale=normalize_locale(article.locale))
