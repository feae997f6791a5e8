"""Article writes and reads: PUT/GET/DELETE one article, POST a Zendesk export."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kbrec.locales import with_normalized_locale
from kbrec.records import Article
from kbrec.zendesk import ZendeskExportError, parse_zendesk_export
from server.http.payloads import checked_id, parse_article, read_json
from server.service import RecommendationService
from server.storage.store import StoredArticle


def article_json(stored: StoredArticle) -> dict[str, str | None]:
    article = stored.article
    return {
        "account_id": article.account_id,
        "article_id": article.article_id,
        "title": article.title,
        "body": article.body,
        "locale": article.locale,
        "updated_at": stored.updated_at,
    }


def service_of(request: Request) -> RecommendationService:
    return request.app.state.service


def path_ids(request: Request) -> tuple[str, str]:
    return (
        checked_id(request.path_params["account_id"], "account id"),
        checked_id(request.path_params["article_id"], "article id"),
    )


async def put_article(request: Request) -> JSONResponse:
    """Returns once the article is durable and recommendable: 201 if new, 200 if replaced."""
    service = service_of(request)
    account_id, article_id = path_ids(request)
    fields = parse_article(await read_json(request, service.settings.http.max_body_bytes))
    article = Article(account_id, article_id, fields.title, fields.body, fields.locale)
    stored, created = await service.put_article(article)
    return JSONResponse(article_json(stored), status_code=201 if created else 200)


async def get_article(request: Request) -> JSONResponse:
    account_id, article_id = path_ids(request)
    return JSONResponse(article_json(await service_of(request).get_article(account_id, article_id)))


async def delete_article(request: Request) -> Response:
    account_id, article_id = path_ids(request)
    await service_of(request).delete_article(account_id, article_id)
    return Response(status_code=204)


async def import_articles(request: Request) -> JSONResponse:
    """A Zendesk Help Center export: every published article, stored in one transaction."""
    service = service_of(request)
    account_id = checked_id(request.path_params["account_id"], "account id")
    payload = await read_json(request, service.settings.http.max_import_bytes)
    articles = [
        imported_with_normalized_locale(a) for a in parse_zendesk_export(payload, account_id)
    ]
    result = await service.import_articles(articles)
    return JSONResponse(
        {
            "account_id": account_id,
            "imported": len(articles),
            "created": result.created,
            "updated": result.updated,
        }
    )


def imported_with_normalized_locale(article: Article) -> Article:
    try:
        return with_normalized_locale(article)
    except ValueError as exc:
        raise ZendeskExportError(f"article {article.article_id}: {exc}") from exc


async def article(request: Request) -> Response:
    """One route for the article path, so a wrong method gets a 405 listing all allowed."""
    handler = {"PUT": put_article, "DELETE": delete_article}.get(request.method, get_article)
    return await handler(request)
