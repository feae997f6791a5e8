import pytest

from kbrec.records import Article
from kbrec.zendesk import ZendeskExportError, parse_zendesk_export


def _article(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": 360001,
        "title": "Reset your password",
        "body": "<p>Open <b>Settings</b> &amp; choose <em>Security</em>.</p><p>Done.</p>",
        "locale": "en-us",
        "section_id": 7,
    }
    return {**base, **fields}


def test_articles_become_records_of_the_account() -> None:
    payload = {"articles": [_article(), _article(id=360002, title=" Billing ", body="")]}

    assert parse_zendesk_export(payload, "acme") == [
        Article(
            "acme",
            "360001",
            "Reset your password",
            "Open Settings & choose Security.\nDone.",
            "en-us",
        ),
        Article("acme", "360002", "Billing", "", "en-us"),
    ]


def test_extra_fields_missing_locale_and_string_ids_are_accepted() -> None:
    payload = {"articles": [_article(id="kb-1", locale=None)], "next_page": None, "count": 1}

    [article] = parse_zendesk_export(payload, "acme")

    assert (article.article_id, article.locale) == ("kb-1", None)


def test_drafts_are_skipped() -> None:
    payload = {"articles": [_article(draft=True), _article(id=2, draft=False)]}

    assert [a.article_id for a in parse_zendesk_export(payload, "acme")] == ["2"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "JSON object"),
        ({"results": []}, "no 'articles' list"),
        ({"articles": {"id": 1}}, "no 'articles' list"),
        ({"articles": [_article(), "x"]}, r"articles\[1\]: expected an object"),
        (
            {"articles": [_article(), _article(id=2, title=None)]},
            r"articles\[1\] \(id 2\): 'title'",
        ),
        ({"articles": [{"id": 1, "title": "T"}]}, r"articles\[0\]: missing 'body'"),
        ({"articles": [_article(body=["<p>"])]}, r"articles\[0\] \(id 360001\): 'body'"),
        ({"articles": [_article(title="  ")]}, "'title' must be a non-empty string"),
        ({"articles": [_article(locale=5)]}, "'locale' must be a string"),
        ({"articles": [_article(id=True)]}, r"articles\[0\]: 'id' must be"),
        ({"articles": [_article(id=-1)]}, "'id' must be"),
        ({"articles": [_article(id="a/b")]}, "'id' must be"),
        (
            {"articles": [_article(), _article(id="360001")]},
            r"articles\[1\]: id 360001 repeats articles\[0\]",
        ),
    ],
)
def test_invalid_exports_say_what_is_wrong(payload: object, message: str) -> None:
    with pytest.raises(ZendeskExportError, match=message):
        parse_zendesk_export(payload, "acme")


@pytest.mark.parametrize("account", ["", "a b", "..", "acme/1"])
def test_invalid_account_id(account: str) -> None:
    with pytest.raises(ZendeskExportError, match="invalid account id"):
        parse_zendesk_export({"articles": []}, account)


def test_error_is_a_value_error() -> None:
    assert issubclass(ZendeskExportError, ValueError)
