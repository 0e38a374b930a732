"""Inbound authentication and per-service authorization.

Interface used by the REST layer (kept stable): ``build_authenticator(config)`` returns an
object with ``authenticate(request, ctx)`` (sets ``ctx.principal`` and
``ctx.auth_method`` or raises :class:`~gateway.errors.Unauthenticated`, or
:class:`~gateway.errors.AuthNotConfigured` when failing closed) and
``authorize(ctx, service)`` (raises :class:`~gateway.errors.Forbidden`).

Credentials accepted: ``Authorization: Bearer <Firebase or Google ID token>``, or an API
key in ``X-API-Key``, ``X-Goog-Api-Key`` (Google's client libraries) or the ``key`` query
parameter.  Nothing from google-auth is
imported until a bearer token has to be verified, so a gateway without ``auth`` keeps its
cold start short.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway import logs
from gateway.config import Config, ConfigError, ServiceConfig, on_google_cloud
from gateway.context import RequestContext
from gateway.errors import AuthNotConfigured, Forbidden, Unauthenticated
from gateway.firestore_client import firestore_target, get_client
from gateway.schema import BOOL, NUMBER, STRING, Fields, ListOf, Setting

if TYPE_CHECKING:  # imported where used: a gateway without ``auth`` never loads them
    from gateway.auth.api_keys import ApiKey, ApiKeyStore
    from gateway.auth.tokens import GoogleRules, TokenVerifier

_announced: set[str] = set()

CREDENTIALS_HINT = "send 'Authorization: Bearer <ID token>' or 'X-API-Key: <key>'"

# The ``auth`` section's shape, checked at start-up; the values are read in build_authenticator.
CONFIG_SCHEMA = Fields(
    {
        "required": Setting(BOOL, True),
        "clock_skew_s": Setting(NUMBER, 10.0, lo=0, hi=300),
        "certs_urls": Fields({"firebase": STRING, "google": STRING}),
        "firebase": Fields({"project_id": STRING}),
        "google": Fields({"audiences": ListOf(STRING), "emails": ListOf(STRING)}),
        "api_keys": ListOf(Fields({"id": STRING, "sha256": STRING, "disabled": BOOL})),
        "api_keys_firestore": Setting(BOOL, True),
        "api_key_cache_s": Setting(NUMBER, 60.0, lo=0, hi=3600),
        "firestore_timeout_s": Setting(NUMBER, 2.0, lo=0, hi=30),
    }
)


def _announce(severity: str, message: str) -> None:
    """Log a start-up notice once per process, however often the app is rebuilt."""
    if message not in _announced:
        _announced.add(message)
        logs.emit(severity, message)


GOOGLE_PREFIX = "google:"


def principal_matches(pattern: str, principal: str) -> bool:
    """``*`` matches any run of characters; everything else is literal and case-sensitive,
    except a Google account's email (``google:<email>``), compared case-insensitively as
    ``auth.google.emails`` compares it: Google does not tell ``Ops@x.com`` from ``ops@x.com``,
    so neither may an allow list."""
    if principal[: len(GOOGLE_PREFIX)].lower() == GOOGLE_PREFIX:
        pattern, principal = pattern.lower(), principal.lower()
    if "*" not in pattern:
        return pattern == principal
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, principal, flags=re.DOTALL) is not None


class OpenAuthenticator:
    """No ``auth`` section, locally: every caller is ``anonymous`` (the embedded default)."""

    open = True

    def authenticate(self, request: Any, ctx: RequestContext) -> None:
        ctx.principal, ctx.auth_method = "anonymous", "none"

    def authorize(self, ctx: RequestContext, service: ServiceConfig) -> None:
        return None


class FailClosedAuthenticator:
    """Auth is missing where it must not be: detection routes answer 503, never open."""

    open = False

    def __init__(self, message: str) -> None:
        self.message = message

    def authenticate(self, request: Any, ctx: RequestContext) -> None:
        raise AuthNotConfigured(self.message)

    def authorize(self, ctx: RequestContext, service: ServiceConfig) -> None:
        raise AuthNotConfigured(self.message)


class Authenticator:
    """Checks the credentials a request presents; with ``required`` false they are optional."""

    open = False

    def __init__(
        self,
        *,
        tokens: TokenVerifier | None,
        keys: ApiKeyStore | None,
        required: bool = True,
    ) -> None:
        self.tokens = tokens
        self.keys = keys
        self.required = required

    def authenticate(self, request: Any, ctx: RequestContext) -> None:
        authorization = (request.headers.get("Authorization") or "").strip()
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(f"unsupported Authorization header; {CREDENTIALS_HINT}")
            if self.tokens is None:
                raise Unauthenticated("bearer tokens are not accepted here; use an API key")
            identity = self.tokens.verify(token.strip())
            ctx.principal, ctx.auth_method = identity.principal, identity.method
            return
        key = request.headers.get("X-API-Key")
        if key is None:  # where Google's client libraries put it (client_options api_key)
            key = request.headers.get("X-Goog-Api-Key")
        if key is None:  # never logged: the access log and usage records hold the path only
            key = request.args.get("key")
        if key is not None:
            if self.keys is None:
                raise Unauthenticated("API keys are not accepted here; use a bearer token")
            ctx.principal, ctx.auth_method = f"key:{self.keys.lookup(key.strip())}", "api_key"
            return
        if self.required:
            raise Unauthenticated(f"credentials required: {CREDENTIALS_HINT}")
        ctx.principal, ctx.auth_method = "anonymous", "none"

    def authorize(self, ctx: RequestContext, service: ServiceConfig) -> None:
        if service.allow is None:
            if ctx.auth_method == "google" and not self._google_listed():
                # Any Google account of any project can get a Google-signed ID token for
                # this audience: without a list of accounts, none is admitted by default.
                raise Forbidden(
                    f"{ctx.principal} is not allowed to use service '{service.name}': "
                    "Google-signed callers need auth.google.emails or the service's allow"
                )
            return
        if any(principal_matches(p, ctx.principal) for p in service.allow):
            return
        raise Forbidden(f"{ctx.principal} is not allowed to use service '{service.name}'")

    def _google_listed(self) -> bool:
        """Whether ``auth.google.emails`` is set (a list of accounts, or ``["*"]``)."""
        google = self.tokens.google if self.tokens is not None else None
        return google is not None and google.emails is not None


def _strings(value: Any, where: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings")
    if not value and not allow_empty:
        raise ConfigError(f"{where} must not be empty")
    return value


def _section(value: Any, where: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    return value


def _api_keys(raw: Any) -> list[ApiKey]:
    from gateway.auth.api_keys import ApiKey, is_key_hash

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("auth.api_keys must be a list of {id, sha256}")
    keys = []
    for i, entry in enumerate(raw):
        where = f"auth.api_keys[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping with id and sha256")
        key_id, digest = entry.get("id"), entry.get("sha256")
        if not isinstance(key_id, str) or not key_id:
            raise ConfigError(f"{where}.id must be a non-empty string")
        if isinstance(digest, str):
            digest = digest.strip().lower()
        if not is_key_hash(digest):
            raise ConfigError(
                f"{where}.sha256 must be the 64-character hex SHA-256 of the key (never the key)"
            )
        keys.append(ApiKey(id=key_id, sha256=digest, disabled=bool(entry.get("disabled"))))
    return keys


def _google_policy(google: GoogleRules, config: Config) -> tuple[str, str]:
    """The start-up line saying which Google-signed callers get in, and where."""
    if google.any_email:
        return (
            "WARNING",
            "auth.google: any Google account is admitted (emails: ['*']), on every service "
            "without an allow list",
        )
    if google.emails is not None:
        return "INFO", f"auth.google: {len(google.emails)} listed account(s) are admitted"
    named = sorted(n for n, s in config.services.items() if s.allow is not None)
    where = ", ".join(named) if named else "none"
    return (
        "INFO",
        "auth.google: no emails list; Google-signed callers are admitted only on services "
        f"whose allow names them (services with an allow list: {where})",
    )


def build_authenticator(
    config: Config,
) -> Authenticator | OpenAuthenticator | FailClosedAuthenticator:
    """The authenticator the configuration asks for; fails closed on Google Cloud."""
    auth = config.auth
    if auth is None:
        if on_google_cloud():
            message = (
                "authentication is not configured: add an 'auth' section to GATEWAY_CONFIG "
                "(or write 'auth: {required: false}' to serve without authentication)"
            )
            _announce("ERROR", message)
            return FailClosedAuthenticator(message)
        _announce(
            "WARNING",
            "auth is not configured: detection routes are open to anyone "
            "(local default; configure 'auth' before deploying)",
        )
        return OpenAuthenticator()

    from gateway.auth.api_keys import ApiKeyStore
    from gateway.auth.certs import FIREBASE_CERTS_URL, GOOGLE_CERTS_URL, CertCache
    from gateway.auth.tokens import FirebaseRules, GoogleRules, TokenVerifier

    values = CONFIG_SCHEMA.read(auth, "auth")  # defaults filled in; NaN and .inf refused
    required = values["required"]
    skew = values["clock_skew_s"]
    certs_urls = _section(auth.get("certs_urls"), "auth.certs_urls") or {}

    firebase = None
    fb = _section(auth.get("firebase"), "auth.firebase")
    if fb is not None:
        project = fb.get("project_id")
        if not isinstance(project, str) or not project:
            raise ConfigError("auth.firebase.project_id must be the Firebase project id")
        url = certs_urls.get("firebase") or FIREBASE_CERTS_URL
        firebase = FirebaseRules(project_id=project, certs=CertCache(str(url)))

    google = None
    gg = _section(auth.get("google"), "auth.google")
    if gg is not None:
        audiences = _strings(gg.get("audiences"), "auth.google.audiences")
        emails = gg.get("emails")
        if emails is not None:
            emails = frozenset(e.lower() for e in _strings(emails, "auth.google.emails"))
        url = certs_urls.get("google") or GOOGLE_CERTS_URL
        google = GoogleRules(
            audiences=frozenset(audiences), emails=emails, certs=CertCache(str(url))
        )

    keys = _api_keys(auth.get("api_keys"))
    firestore = None
    if values["api_keys_firestore"] and firestore_target(config):
        firestore = functools.partial(get_client, config)

    store = None
    if keys or firestore is not None:
        store = ApiKeyStore(
            keys,
            firestore=firestore,
            cache_s=values["api_key_cache_s"],
            timeout_s=values["firestore_timeout_s"],
        )
    tokens = None
    if firebase is not None or google is not None:
        tokens = TokenVerifier(firebase=firebase, google=google, clock_skew_s=skew)

    if google is not None:
        _announce(*_google_policy(google, config))
    if not required:
        _announce(
            "WARNING",
            "auth.required is false: detection routes accept callers without credentials",
        )
    elif tokens is None and store is None:
        raise ConfigError(
            "auth admits no caller: auth.api_keys is empty and no Firestore holds keys "
            "(usage.firestore.project); list a key, set auth.firebase or auth.google, "
            "or write 'auth: {required: false}' (docs/auth.md)"
        )
    return Authenticator(tokens=tokens, keys=store, required=required)


METHODS = ("firebase", "google", "api_keys")
PRINCIPAL_PREFIXES = ("key:", "firebase:", "google:")
ANONYMOUS = "anonymous"


def _firestore_keys(config: Config) -> bool:
    """Whether API keys are also looked up in Firestore (ids the file cannot list)."""
    auth = config.auth or {}
    return auth.get("api_keys_firestore", True) is not False and bool(firestore_target(config))


def _key_ids(config: Config) -> list[str]:
    entries = (config.auth or {}).get("api_keys") or []
    return [e["id"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("id"), str)]


def _could_name_a_principal(entry: str) -> bool:
    """Whether a principal (``key:<id>``, ``firebase:<uid>``, ``google:<email>``,
    ``anonymous``) could ever match ``entry``; ``lab-script`` alone never does."""
    head = entry.split("*", 1)[0]
    if "*" not in entry:
        prefixed = entry.startswith(PRINCIPAL_PREFIXES) and not entry.endswith(":")
        return entry == ANONYMOUS or prefixed
    return any(p.startswith(head) or head.startswith(p) for p in (*PRINCIPAL_PREFIXES, ANONYMOUS))


def _suggest(entry: str, ids: list[str]) -> str:
    import difflib

    bare = entry.split(":", 1)[1] if entry.startswith("key:") else entry
    close = difflib.get_close_matches(bare, ids, n=1, cutoff=0.6)
    return f"; did you mean 'key:{close[0]}'?" if close else ""


def _named_principals(config: Config) -> list[tuple[str, str, bool]]:
    """(where, entry, exact) for every principal the configuration names: the services'
    allow lists (patterns with ``*``) and ``quotas.principals`` (exact principals)."""
    named = [
        (f"services.{name}.allow", entry, False)
        for name, svc in config.services.items()
        for entry in (svc.allow or ())
    ]
    principals = (config.quotas or {}).get("principals") or {}
    if isinstance(principals, Mapping):
        named += [("quotas.principals", str(entry), True) for entry in principals]
    return named


def check(config: Config) -> None:
    """What the ``auth`` section must say, with the sections that name callers; raises
    :class:`ConfigError` at start-up.

    Each of these would otherwise run silently wrong: an allow list or a per-principal
    quota without ``auth`` (every caller is then ``anonymous``: the list is never applied),
    an ``auth`` section naming no way to authenticate (every request refused), an entry
    naming an API key id no key has (nobody gets in, or the quota never applies).
    """
    named = _named_principals(config)
    if config.auth is None:
        listing = [name for name, svc in config.services.items() if svc.allow is not None]
        if listing:
            raise ConfigError(
                f"services.{listing[0]}.allow has no effect without an auth section: every "
                "caller is anonymous; add auth (docs/auth.md), or remove the allow list"
            )
        if named:
            raise ConfigError(
                "quotas.principals has no effect without an auth section: every caller is "
                "anonymous; add auth (docs/auth.md), or set quotas.default only"
            )
        return
    auth = config.auth
    if auth.get("required", True) is not False and not (
        any(auth.get(m) is not None for m in METHODS) or auth.get("api_keys_firestore") is True
    ):
        empty = "auth is empty" if not auth else "auth names no way to authenticate callers"
        raise ConfigError(
            f"{empty}: set auth.firebase, auth.google or auth.api_keys (or "
            "auth.api_keys_firestore: true for keys kept in Firestore only), or write "
            "'auth: {required: false}' to serve without credentials (docs/auth.md)"
        )
    if auth.get("api_keys_firestore") is True and not firestore_target(config):
        raise ConfigError(
            "auth.api_keys_firestore is true but no Firestore is configured: set "
            "usage.firestore.project"
        )
    ids = _key_ids(config)
    unlisted: list[str] = []
    for where, entry, exact in named:
        if exact and "*" in entry:
            raise ConfigError(
                f"{where} entry {entry!r}: quotas name exact principals (a '*' is not a "
                "pattern here); use quotas.default for everyone else"
            )
        if not _could_name_a_principal(entry):
            raise ConfigError(
                f"{where} entry {entry!r} names no caller: principals are key:<id>, "
                f"firebase:<uid>, google:<email> or anonymous{_suggest(entry, ids)}"
            )
        if not entry.startswith("key:"):
            continue
        if any(principal_matches(entry, f"key:{key_id}") for key_id in ids):
            continue
        if _firestore_keys(config):
            unlisted.append(entry)
            continue
        listed = ", ".join(ids) if ids else "none"
        what = "matches it" if "*" in entry else "has that id"
        raise ConfigError(
            f"{where} names {entry!r}, but no API key {what} (auth.api_keys: "
            f"{listed}){_suggest(entry, ids)}"
        )
    if unlisted:
        _announce(
            "WARNING",
            "API key ids named in allow lists or quotas but not in auth.api_keys, so they "
            f"must be in Firestore's api_keys collection: {', '.join(sorted(set(unlisted)))}",
        )
