"""Article writes and reads: PUT/GET/DELETE one article, POST a Zendesk export."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kbrec.records import Article
from server.errors import InvalidRequest, NotReady
from server.http.imports import ImportGate
from server.http.payloads import checked_id, parse_article, read_body, read_json
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


IMPORT_MODES = ("upsert", "sync")


async def import_articles(request: Request) -> JSONResponse:
    """A Zendesk Help Center export: its published articles, committed in chunks.

    `?mode=upsert` (the default) writes them; `?mode=sync` then also deletes the
    account's articles the export lacks or lists as drafts. A 200 means all of it is
    committed; an import that fails midway keeps the chunks committed before (503
    `import_interrupted` says how many) and deletes nothing: re-send the export.
    """
    service = service_of(request)
    imports: ImportGate = request.app.state.imports
    account_id = checked_id(request.path_params["account_id"], "account id")
    mode = import_mode(request)
    with imports.slot():  # before the body is read: a refusal costs nothing
        if not service.ready:
            raise NotReady(f"the service is not ready ({service.state})")
        body = await read_body(request, service.settings.http.max_import_bytes)
        articles = await imports.parse(body, account_id)
        sync_account = account_id if mode == "sync" else None
        result = await service.import_articles(articles, sync_account=sync_account)
    return JSONResponse(
        {
            "account_id": account_id,
            "mode": mode,
            "imported": len(articles),
            "created": result.created,
            "updated": result.updated,
            "deleted": result.deleted,
        }
    )


def import_mode(request: Request) -> str:
    mode = request.query_params.get("mode", "upsert")
    if mode not in IMPORT_MODES:
        raise InvalidRequest(f"'mode' must be one of {', '.join(IMPORT_MODES)}, got {mode!r}")
    return mode


async def article(request: Request) -> Response:
    """One route for the article path, so a wrong method gets a 405 listing all allowed."""
    handler = {"PUT": put_article, "DELETE": delete_article}.get(request.method, get_article)
    return await handler(request)
