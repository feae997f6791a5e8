"""kbrec's HTTP API as requests: recommendations and article PUTs, one per workload item."""

from __future__ import annotations

import json
from urllib.parse import quote

from loadtest.http_client import HttpEndpoint, build_request
from loadtest.workload import ArticleWrite, Item, Query

RECOMMEND_PATH = "/v1/recommendations"


def item_request(endpoint: HttpEndpoint, item: Item, top_k: int) -> bytes:
    if isinstance(item, Query):
        return build_request(endpoint, "POST", RECOMMEND_PATH, recommendation_body(item, top_k))
    assert isinstance(item, ArticleWrite)
    account, article = quote(item.account_id, safe=""), quote(item.article_id, safe="")
    path = f"/v1/accounts/{account}/articles/{article}"
    return build_request(endpoint, "PUT", path, _json({"title": item.title, "body": item.body}))


def recommendation_body(query: Query, top_k: int) -> bytes:
    """The JSON body of a recommendation request (for clients that write their own head)."""
    return _json({"account_id": query.account_id, "text": query.text, "top_k": top_k})


def kbrec_requests(endpoint: HttpEndpoint, items: tuple[Item, ...], top_k: int) -> list[bytes]:
    """Every item serialised once up front: sending is then a plain socket write."""
    return [item_request(endpoint, item, top_k) for item in items]


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
