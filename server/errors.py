"""Errors the service raises for the HTTP layer to map (see `server.http_errors`).

Backend failures have their own hierarchy in `server.backends.base`.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors a caller can be told about."""


class InvalidRequest(ServiceError):
    """The caller sent something malformed or out of range (422 unless said otherwise)."""

    def __init__(self, message: str, code: str = "validation_error", status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class UnknownAccount(ServiceError):
    """No article of this account is stored."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"unknown account {account_id!r}")
        self.account_id = account_id


class ArticleNotFound(ServiceError):
    def __init__(self, account_id: str, article_id: str) -> None:
        super().__init__(f"article {article_id!r} of account {account_id!r} not found")


class Overloaded(ServiceError):
    """A bounded queue is full: try again later (admission is never a wait)."""


class NotReady(ServiceError):
    """The model is not loaded or the indexes are not built yet (or the service stopped)."""
