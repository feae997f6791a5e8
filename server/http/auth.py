"""Who may call what: bearer credentials, the access rule of every route, and the
refusal to serve an exposed address without authentication.

Authentication is on whenever an admin token is configured: a file
(`--admin-token-file`) or the variable KBREC_ADMIN_TOKEN, never a flag (a command
line is visible to every user of the host). Requests then carry
`Authorization: Bearer <token>`, where the token is

- the admin token: every route (accounts, keys, models, metrics, any account's
  articles and recommendations);
- an account's API key (`server.storage.accounts`): only that account's routes; a
  request naming another account gets 403, one without a valid token 401.

`/healthz`, `/readyz` and `/openapi.json` stay open. Without an admin token every
caller is the admin, which kbrec allows only on a loopback address (a development
machine), with a warning; on any other address it refuses to start.

Starlette's `AuthenticationMiddleware` runs `BearerBackend` on every request; each
route is built by `guarded_route` with its `Access` rule, checked before the
handler runs. A rule that depends on the body (POST /v1/recommendations names its
account there) lets any authenticated caller through, and the handler calls
`require_account` once it knows the account.
"""

from __future__ import annotations

import enum
import functools
import hmac
import logging
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    UnauthenticatedUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import Forbidden, NotReady, StartupError, Unauthorized
from server.http.errors import error_response
from server.http.hosts import TrustedHosts, allowed_hosts, is_loopback
from server.http.keyring import KeyRing
from server.settings import Settings
from server.storage.accounts import is_key_shaped, key_digest
from server.storage.store import StoreError

log = logging.getLogger(__name__)

ADMIN_TOKEN_VARIABLE: Final = "KBREC_ADMIN_TOKEN"
MIN_ADMIN_TOKEN_LENGTH: Final = 16
TOKEN_COMMAND: Final = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


class Access(enum.Enum):
    """Who may call a route."""

    OPEN = "open"  # anyone, no credentials (probes, the API description)
    ADMIN = "admin"  # the admin token only
    ACCOUNT = "account"  # the path's {account_id}: its keys, or the admin
    CALLER = "caller"  # any valid credentials; the handler calls `require_account`


class Admin(BaseUser):
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return "admin"


class AccountCaller(BaseUser):
    """A request made with one of the account's API keys."""

    def __init__(self, account_id: str, key_id: str) -> None:
        self.account_id = account_id
        self.key_id = key_id

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return f"{self.account_id} (key {self.key_id})"


class Anonymous(UnauthenticatedUser):
    """No usable credentials: `problem` says what was wrong with those sent, if any."""

    def __init__(self, problem: str | None = None) -> None:
        self.problem = problem


@dataclass(frozen=True)
class AuthConfig:
    admin_token: str | None  # None: no authentication (loopback only)

    @property
    def enabled(self) -> bool:
        return self.admin_token is not None


def load_auth(settings: Settings, environ: Mapping[str, str]) -> AuthConfig:
    """The admin token from `--admin-token-file` or KBREC_ADMIN_TOKEN (one of them), and
    the check that an address other than loopback is never served without it.

    Raises StartupError for an unreadable, empty or short token, for both sources set,
    and for an exposed address without a token.
    """
    path = settings.access.admin_token_file
    variable = environ.get(ADMIN_TOKEN_VARIABLE)
    if path and variable is not None:
        raise StartupError(f"both --admin-token-file and {ADMIN_TOKEN_VARIABLE} are set: use one")
    token = read_token_file(Path(path)) if path else variable
    if token is not None:
        token = token.strip()
        if len(token) < MIN_ADMIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
            where = path or ADMIN_TOKEN_VARIABLE
            raise StartupError(
                f"the admin token ({where}) must be at least {MIN_ADMIN_TOKEN_LENGTH} printable "
                f"ASCII characters, e.g. the output of `{TOKEN_COMMAND}`"
            )
        return AuthConfig(token)
    host = settings.http.host
    if not is_loopback(host):
        raise StartupError(
            f"refusing to serve {host or 'every address'} without authentication: anyone who "
            f"reaches the port could read and change every account; set {ADMIN_TOKEN_VARIABLE} "
            "or --admin-token-file (or listen on 127.0.0.1)"
        )
    return AuthConfig(None)


def read_token_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read the admin token file {path}: {exc}") from exc
    if mode & stat.S_IRWXO:  # its group may read it (a Kubernetes Secret's fsGroup)
        log.warning("the admin token file %s is readable by anyone: chmod 600 it", path)
    return token


def warn_if_open(auth: AuthConfig, settings: Settings) -> None:
    if not auth.enabled:
        log.warning(
            "AUTHENTICATION IS OFF: anyone who can reach %s may read, change and delete every "
            "account's articles and change the model; set %s or --admin-token-file to turn it on",
            settings.base_url,
            ADMIN_TOKEN_VARIABLE,
        )


class CredentialsUnverifiable(AuthenticationError):
    """The keys could not be read (store down, service stopping): answered with 503."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class BearerBackend(AuthenticationBackend):
    def __init__(self, config: AuthConfig, keys: KeyRing) -> None:
        self._admin = None if config.admin_token is None else config.admin_token.encode()
        self._keys = keys

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser]:
        if self._admin is None:  # no authentication: everyone is the admin
            return AuthCredentials(["admin"]), Admin()
        header = conn.headers.get("authorization")
        if header is None:
            return AuthCredentials(), Anonymous()
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return AuthCredentials(), Anonymous("expected 'Authorization: Bearer <token>'")
        if hmac.compare_digest(token.encode("utf-8", "replace"), self._admin):
            return AuthCredentials(["admin"]), Admin()
        if is_key_shaped(token):
            try:
                key = await self._keys.find(key_digest(token))
            except (StoreError, NotReady) as exc:
                raise CredentialsUnverifiable(exc) from exc
            if key is not None:
                return AuthCredentials(["account"]), AccountCaller(key.account_id, key.key_id)
        return AuthCredentials(), Anonymous("the token is not valid (unknown or revoked)")


def unverifiable(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """`AuthenticationMiddleware`'s on_error: the store could not say whether a key is
    valid (it runs outside the routes' exception handlers, hence its own response)."""
    cause = exc.cause if isinstance(exc, CredentialsUnverifiable) else exc
    code = "not_ready" if isinstance(cause, NotReady) else "store_unavailable"
    log.warning("cannot check an API key: %s", cause)
    retry_after = conn.app.state.settings.http.retry_after_s
    message = "cannot check the API key now; retry later"
    return error_response(503, code, message, {"Retry-After": str(retry_after)})


def authorize(request: Request, access: Access, account_id: str | None = None) -> None:
    """Raise Unauthorized (401) or Forbidden (403) unless the caller may use the route."""
    if access is Access.OPEN:
        return
    user = request.user
    if isinstance(user, Admin):
        return
    if not isinstance(user, AccountCaller):
        problem = user.problem if isinstance(user, Anonymous) else None
        raise Unauthorized(
            problem or "authentication required: send 'Authorization: Bearer <token>'",
            token_rejected=problem is not None,
        )
    if access is Access.ADMIN:
        raise Forbidden("this route needs the admin token; an account's key may not use it")
    if access is Access.ACCOUNT:
        account_id = request.path_params.get("account_id")
    if account_id is not None and account_id != user.account_id:
        raise Forbidden("an API key may only use its own account")


def require_account(request: Request, account_id: str) -> None:
    """For a `CALLER` route, once the handler knows which account the request names."""
    authorize(request, Access.CALLER, account_id)


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint, access: Access) -> Endpoint:
    """`endpoint`, checking `access` first; the rule stays readable as `.access`."""

    @functools.wraps(endpoint)
    async def guard(request: Request) -> Response:
        authorize(request, access)
        return await endpoint(request)

    guard.access = access  # type: ignore[attr-defined]
    return guard


def guarded_route(path: str, endpoint: Endpoint, methods: Sequence[str], access: Access) -> Route:
    return Route(path, guarded(endpoint, access), methods=list(methods))


def route_access(route: Route) -> Access | None:
    """The rule a route was built with (None: built without one)."""
    return getattr(route.endpoint, "access", None)


def access_middleware(settings: Settings, auth: AuthConfig, keys: KeyRing) -> list[Middleware]:
    """The app's middleware for access, outermost first: Host check, then credentials."""
    return [
        Middleware(TrustedHosts, allowed_hosts=allowed_hosts(settings)),
        Middleware(
            AuthenticationMiddleware, backend=BearerBackend(auth, keys), on_error=unverifiable
        ),
    ]
