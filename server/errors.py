"""Errors the service raises for the HTTP layer to map (see `server.http.errors`).

Backend failures have their own hierarchy in `server.inference.backends.base`.
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


class NoKnownToken(InvalidRequest):
    """The text became no token at all: a tokenizer without [CLS]/[SEP] can turn text of,
    say, only control characters into nothing. The caller's text, not a server fault."""

    def __init__(self) -> None:
        super().__init__("the text has no token the model knows")


class UnknownAccount(ServiceError):
    """No article of this account is stored (or, with authentication, it was never created)."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"unknown account {account_id!r}")
        self.account_id = account_id


class Unauthorized(ServiceError):
    """No valid credentials (a 401 asking for a bearer token); `token_rejected` when a
    token was sent but is unknown, revoked or malformed."""

    def __init__(self, message: str, token_rejected: bool = False) -> None:
        super().__init__(message)
        self.token_rejected = token_rejected


class Forbidden(ServiceError):
    """Valid credentials that may not do this: another account's data, an admin route."""


class ArticleNotFound(ServiceError):
    def __init__(self, account_id: str, article_id: str) -> None:
        super().__init__(f"article {article_id!r} of account {account_id!r} not found")


class Overloaded(ServiceError):
    """A bounded queue is full: try again later (admission is never a wait)."""


class ImportInterrupted(ServiceError):
    """An import failed after some of its chunks were committed: those stay (the message
    says how many); re-sending the export finishes it (a 503: the cause was transient)."""


class NotReady(ServiceError):
    """The model is not loaded or the indexes are not built yet (or the service stopped)."""


class NotLeader(ServiceError):
    """Model changes are made by the one process that leads the lifecycle; this one
    follows (a 503: behind a shared port or a load balancer, a retry may reach it)."""


class StartupError(Exception):
    """The service cannot start (no servable model version, store unusable)."""


class VersionNotFound(ServiceError):
    def __init__(self, number: int) -> None:
        super().__init__(f"model version {number} is not in the repository")


class VersionRejected(ServiceError):
    """The version failed validation or loading; it is marked failed with the reason."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"model version {number} was rejected: {reason}")
        self.reason = reason


class VersionNotServing(ServiceError):
    """A request asked for a version that cannot answer queries now (a 409)."""

    def __init__(self, number: int, active: int, complete_standby: int | None) -> None:
        kept = f", complete standby {complete_standby}" if complete_standby is not None else ""
        super().__init__(f"model version {number} is not serving (active {active}{kept})")


class TrialInProgress(ServiceError):
    """A model change asked for while a version is an A/B experiment's trial (a 409: the
    experiment's stop decides what becomes of it)."""

    def __init__(self, number: int) -> None:
        super().__init__(
            f"model version {number} is in an A/B experiment: stop the experiment first "
            "(POST /v1/experiments/{id}/stop, which can activate its winner)"
        )


class ExperimentNotFound(ServiceError):
    def __init__(self, experiment_id: str) -> None:
        super().__init__(f"experiment {experiment_id!r} not found")


class RequestNotLogged(ServiceError):
    """Feedback about a request id the recommendation log does not hold (a 404)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id!r} is not in the recommendation log")
