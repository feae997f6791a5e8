"""With authentication on, feedback is scoped like the request it is about: the key of
the request's account or the admin may send it, another account's key gets 403."""

from __future__ import annotations

from pathlib import Path

from auth_helpers import assert_error, authed_server


def test_feedback_is_scoped_by_the_logged_request(bow_repository: Path, tmp_path: Path) -> None:
    with authed_server(bow_repository, tmp_path / "kbrec.sqlite", log_flush_ms=50) as server:
        _, acme_key = server.new_key("acme")
        _, beta_key = server.new_key("beta")
        put = server.admin.put(
            "/v1/accounts/acme/articles/a1", json={"title": "reset password", "body": ""}
        )
        assert put.status_code == 201, put.text
        with (
            server.client(acme_key) as acme,
            server.client(beta_key) as beta,
            server.client() as nobody,
        ):
            answer = acme.post("/v1/recommendations", json={"account_id": "acme", "text": "reset"})
            assert answer.status_code == 200, answer.text
            event = {
                "request_id": answer.json()["request_id"],
                "article_id": "a1",
                "event": "clicked",
            }
            assert_error(beta.post("/v1/feedback", json=event), 403, "forbidden")
            assert_error(nobody.post("/v1/feedback", json=event), 401, "unauthorized")
            assert acme.post("/v1/feedback", json=event).status_code == 201
            assert server.admin.post("/v1/feedback", json=event).json()["duplicate"] is True
            assert acme.get("/v1/accounts/acme/settings").status_code == 200
            assert_error(
                acme.put("/v1/accounts/acme/settings", json={"min_score": 0.5}), 403, "forbidden"
            )
            assert_error(beta.get("/v1/accounts/acme/settings"), 403, "forbidden")
            assert_error(acme.get("/v1/experiments"), 403, "forbidden")
