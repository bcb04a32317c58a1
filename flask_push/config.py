"""The ``PUSH_*`` configuration keys: documented defaults, read and checked once.

``load(app)`` runs inside ``init_app``. It makes no network calls; every
problem it finds raises :class:`~flask_push.errors.PushConfigError` naming the
key and what to do.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import limits
from flask import Flask

from . import categories as _categories
from . import credentials, validation
from .categories import Category
from .errors import PushConfigError, ValidationError
from .providers import kinds

#: where the blueprint lives
DEFAULT_URL_PREFIX = "/push"
#: how deliveries run: in-process worker threads
DEFAULT_QUEUE = "thread"
QUEUES = ("thread", "inline", "celery")
#: the Celery queue flask-push's tasks go to; give each app sharing a broker its own
DEFAULT_CELERY_QUEUE = "flask_push"
#: a name flask-push takes on a broker or a Redis that other apps may share (a Celery
#: queue, a key prefix): safe in a Redis key and a queue name alike
_SHARED_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
#: live events stay inside one process unless a redis:// URL is given
DEFAULT_BACKPLANE_URL = "memory://"
#: the prefix of the backplane's Redis keys; give each app sharing a Redis its own
DEFAULT_BACKPLANE_PREFIX = "flask_push"
#: how long and how many events each channel keeps for clients that reconnect with ``since``
DEFAULT_EVENTS_KEEP_SECONDS = 300
DEFAULT_EVENTS_KEEP_COUNT = 100
#: seconds of silence after which the server sends a websocket client ``{"op":"pong"}``,
#: under the 60 s idle timeout of common proxies (nginx's ``proxy_read_timeout``)
DEFAULT_WS_HEARTBEAT = 25
#: the largest frame a websocket client may send; bigger ones close it with 1009
DEFAULT_WS_MAX_MESSAGE_BYTES = 16 * 1024
#: events waiting for one websocket client; a client this far behind is dropped
DEFAULT_WS_QUEUE_SIZE = 256
#: websockets one user may hold open in one process: one a tab, on each device that
#: reaches this process; each costs the process a thread (or greenlet) and a queue for
#: as long as it lives, and a user's script must not open them without end
DEFAULT_WS_MAX_PER_USER = 100
#: frames one websocket client may send: a burst of this many, then as many again per
#: period. A page sends a few (its joins, a ping now and then); one that reconnects
#: joins each of its channels again at once, and a socket may follow up to 1000
DEFAULT_WS_RATE_LIMIT = "1200/minute"
#: origins besides the request's own whose pages may open the websocket: none, since a
#: page of another site would open it with the user's cookies (cross-site hijacking)
DEFAULT_WS_ALLOWED_ORIGINS: tuple[str, ...] = ()
#: a day: long enough for a phone that is off overnight (pywebpush's own default, 0,
#: drops the message when the browser is not connected at that very moment)
DEFAULT_TTL = 86400
#: the longest TTL the push services keep a message (FCM and Web Push: 4 weeks)
MAX_TTL = 2_419_200
#: the hosts of the public Web Push services of Chrome (and every Chromium browser
#: that uses FCM), Firefox, Edge and Safari
DEFAULT_ENDPOINT_HOSTS = (
    "fcm.googleapis.com",
    "android.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.services.mozilla.com",
    "*.notify.windows.com",
    "web.push.apple.com",
    "*.push.apple.com",
)
#: the service worker is served at the app root so that its scope can be "/"
DEFAULT_SERVICE_WORKER_URL = "/push-sw.js"
#: the largest request body the API reads; a subscription is about 500 bytes
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024
#: the most deliveries one claim takes; a worker claims again as its pushes go
#: out, so it holds what its providers may have on the network plus one batch
DEFAULT_DELIVERY_BATCH = 100
#: seconds a claim keeps other workers off its deliveries; a worker renews it every
#: third of that while they are in hand, so a dead worker's rows are free this soon
DEFAULT_DELIVERY_LEASE = 30
#: ``POST /subscriptions`` one client address may make: a browser subscribes once,
#: and again on a page reload at most; a script filling the table is stopped
DEFAULT_SUBSCRIBE_RATE_LIMIT = "30/minute"
#: topics one subscription or installation may hold
DEFAULT_MAX_TOPICS = validation.MAX_TOPICS
#: the operator console at ``<prefix>/console``, for admins only (``admin_loader``)
DEFAULT_CONSOLE = True
#: Prometheus metrics at ``<prefix>/metrics``: off, since they tell outsiders how busy you are
DEFAULT_METRICS = False
#: the bearer token a scraper must send for ``<prefix>/metrics``; None: no token asked
DEFAULT_METRICS_TOKEN: str | None = None
#: the site's absolute URL (``https://shop.example``): when set, Web Push payloads are
#: declarative (WebKit's Declarative Web Push) and their links resolve against it
DEFAULT_SITE_URL: str | None = None


@dataclass(frozen=True)
class PushSettings:
    """The checked configuration of one app."""

    url_prefix: str
    #: normalized settings per provider kind that ``app.config`` turns on
    providers: Mapping[str, Mapping[str, Any]]
    queue: str
    celery_broker_url: str | None
    celery_queue: str
    backplane_url: str
    default_ttl: int
    endpoint_hosts: tuple[str, ...]
    allow_http_endpoints: bool
    #: ``PUSH_SUPPRESS_SEND`` as set, or None when unset: then :meth:`suppresses_send`
    #: follows ``app.testing``
    suppress_send_config: bool | None
    service_worker_url: str
    max_request_bytes: int
    delivery_batch: int
    delivery_lease: int
    backplane_prefix: str = DEFAULT_BACKPLANE_PREFIX
    events_keep_seconds: int = DEFAULT_EVENTS_KEEP_SECONDS
    events_keep_count: int = DEFAULT_EVENTS_KEEP_COUNT
    ws_heartbeat: int = DEFAULT_WS_HEARTBEAT
    ws_max_message_bytes: int = DEFAULT_WS_MAX_MESSAGE_BYTES
    ws_queue_size: int = DEFAULT_WS_QUEUE_SIZE
    #: ``PUSH_WS_MAX_PER_USER``, or None for no limit
    ws_max_per_user: int | None = DEFAULT_WS_MAX_PER_USER
    #: ``PUSH_WS_RATE_LIMIT`` as (frames, seconds), or None for no limit
    ws_rate_limit: tuple[int, int] | None = (1200, 60)  # DEFAULT_WS_RATE_LIMIT
    #: a rate such as ``"30/minute"`` (Flask-Limiter's notation), or None for no limit
    subscribe_rate_limit: str | None = DEFAULT_SUBSCRIBE_RATE_LIMIT
    max_topics: int = DEFAULT_MAX_TOPICS
    #: normalized origins (``scheme://host[:port]``)
    ws_allowed_origins: tuple[str, ...] = DEFAULT_WS_ALLOWED_ORIGINS
    console: bool = DEFAULT_CONSOLE
    metrics: bool = DEFAULT_METRICS
    metrics_token: str | None = DEFAULT_METRICS_TOKEN
    #: ``PUSH_CATEGORIES``: the categories users control, by id
    categories: Mapping[str, Category] = field(default_factory=dict)
    #: ``PUSH_SITE_URL``, normalized (``scheme://host[:port]/path``), or None
    site_url: str | None = DEFAULT_SITE_URL

    def suppresses_send(self, app: Flask) -> bool:
        """Whether ``app`` records pushes instead of sending them: ``PUSH_SUPPRESS_SEND``
        when set, else whether ``app`` is testing now. Flask's testing docs set
        ``TESTING`` on the app a factory returned, after ``init_app``."""
        if self.suppress_send_config is None:
            return app.testing
        return self.suppress_send_config

    @property
    def vapid_public_key(self) -> str | None:
        webpush = self.providers.get("webpush")
        return webpush["publicKey"] if webpush else None


def _fail(key: str, message: str) -> PushConfigError:
    return PushConfigError(f"{key} {message}", key=key)


def _read_as_number(key: str, value: object, *, secret: bool = False) -> str:
    """Why an int stands where a string goes, as an aside to a message, or "".

    ``app.config.from_prefixed_env()`` parses each value as JSON, so an all-digit
    secret or id (a metrics token, an APNs Key ID) arrives as an int. A ``secret``'s
    value is never repeated: the error lands in logs and CI output."""
    if not isinstance(value, int) or isinstance(value, bool):
        return ""
    got, shown = ("a number", "<its digits>") if secret else (repr(value), str(value))
    return (
        f" (got {got}: `app.config.from_prefixed_env()` parses each value as JSON, so "
        f"an all-digit one becomes a number; quote it in the environment: "
        f"FLASK_{key}='\"{shown}\"')"
    )


#: a URL path as browsers send it (RFC 3986): no space, control character, query or
#: fragment; nor '%': Flask's routes match the decoded path, so '/p%75sh' never answered
_URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*")


def _path(config: Mapping[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not _URL_PATH.fullmatch(value) or value.startswith("//"):
        raise _fail(
            key,
            f"must be a path starting with '/', such as {default!r}, of the characters a URL "
            f"path may hold (no space, '?' or '#'), written as they are (no '%' escapes); "
            f"got {value!r}",
        )
    return value.rstrip("/") if value != "/" else value


def _service_worker_url(config: Mapping[str, Any], url_prefix: str) -> str:
    url = _path(config, "PUSH_SERVICE_WORKER_URL", DEFAULT_SERVICE_WORKER_URL)
    if url == "/":
        # it would answer for the site's home page, with JavaScript
        raise _fail(
            "PUSH_SERVICE_WORKER_URL",
            f"must be the path of a file, such as {DEFAULT_SERVICE_WORKER_URL!r}, not the "
            "site's home page; got '/'",
        )
    # under the prefix it would meet the API's own routes (the websocket at /ws), and a
    # service worker there could only control pages under the prefix
    if url == url_prefix or url.startswith(url_prefix + "/"):
        raise _fail(
            "PUSH_SERVICE_WORKER_URL",
            f"must not be under PUSH_URL_PREFIX ({url_prefix!r}), where flask-push's API "
            f"answers; such as {DEFAULT_SERVICE_WORKER_URL!r}; got {url!r}",
        )
    return url


def _bool(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise _fail(key, f"must be True or False, got {value!r}")
    return value


def _int(config: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(key, f"must be a whole number from {low} to {high}, got {value!r}")
    return value


def _int_or_none(
    config: Mapping[str, Any], key: str, default: int, low: int, high: int
) -> int | None:
    """A whole number as :func:`_int` reads it, or None (no limit)."""
    if key in config and config[key] is None:
        return None
    return _int(config, key, default, low, high)


#: a file setting's value worth repeating in an error: one line, as long as paths are
_LOOKS_LIKE_A_PATH = re.compile(r"[^\n\r]{1,160}")
#: a key's body without its PEM lines: long base64 (a path of that shape, with no dot
#: or dash, is not repeated either)
_BASE64 = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


def _read_file_setting(key: str, value: Any, *, marker: str) -> Any:
    """Config may name a file for a secret; the API never may (it would read server files)."""
    if isinstance(value, str) and marker not in value and not value.lstrip().startswith("{"):
        try:
            with open(os.path.expanduser(value), encoding="utf-8") as file:
                return file.read()
        except OSError as err:
            # the path helps, but a key pasted without its first line is no path: the
            # error lands in logs and CI output, so such a value is not repeated
            shown = (
                repr(value)
                if _LOOKS_LIKE_A_PATH.fullmatch(value) and not _BASE64.fullmatch(value)
                else f"(not shown: it does not look like a path, and may be the secret "
                f"itself without its {marker!r})"
            )
            raise _fail(key, f"names a file that cannot be read ({err.strerror}): {shown}") from err
    return value


class _Asked(Mapping[str, Any]):
    """``app.config`` as :func:`load` reads it, remembering every key it asks for:
    a ``PUSH_*`` key that no check asked for is one flask-push does not know."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return self._config[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self._config

    def __iter__(self) -> Iterator[str]:
        return iter(self._config)

    def __len__(self) -> int:
        return len(self._config)


def _say_unknown(config: _Asked) -> None:
    """Warn of each ``PUSH_*`` key flask-push does not read: a misspelt
    ``PUSH_FCM_CREDENTIAL`` would otherwise leave FCM off without a word."""
    known = sorted(k for k in config.asked if k.startswith("PUSH_"))
    for key in sorted(k for k in config if k.startswith("PUSH_") and k not in config.asked):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        logging.getLogger("flask_push").warning(
            "flask-push: app.config has %s, which flask-push does not read%s",
            key,
            f"; did you mean {close[0]}?" if close else " (a misspelt key?)",
        )


def _provider(
    config: Mapping[str, Any], app: Flask, kind: credentials.ProviderKind
) -> dict[str, Any] | None:
    given = {
        s.name: config[s.config_key] for s in kind.settings if config.get(s.config_key) is not None
    }
    by_name = {s.name: s.config_key for s in kind.settings}
    trigger_key = by_name[kind.trigger]
    if kind.trigger not in given:
        # settings with defaults of their own (sandbox, base URLs) do not turn it on,
        # but the providers stored through the API use the base URLs: checked all the same
        standalone = {s.name for s in kind.settings if s.standalone}
        stray = [by_name[n] for n in given if n not in standalone]
        if stray:
            raise _fail(trigger_key, f"is required when {stray[0]} is set")
        if given and kind.normalize_standalone is not None:
            _normalized(kind, kind.normalize_standalone, given, by_name)
        return None
    for setting in kind.settings:
        if setting.file_unless is not None and setting.name in given:
            given[setting.name] = _read_file_setting(
                setting.config_key, given[setting.name], marker=setting.file_unless
            )
        if setting.debug_default:
            given.setdefault(setting.name, app.debug)
    kind.check_installed()
    return _normalized(kind, kind.normalize, given, by_name)


def _normalized(
    kind: credentials.ProviderKind,
    normalize: Callable[[Mapping[str, Any]], dict[str, Any]],
    given: Mapping[str, Any],
    by_name: Mapping[str, str],
) -> dict[str, Any]:
    """``normalize(given)``, its refusal said as a ``PushConfigError`` naming the key."""
    try:
        return normalize(given)
    except ValidationError as err:
        key = by_name.get(err.field or "", by_name[kind.trigger])
        secret = err.field in kind.secret_names
        message = err.message + _read_as_number(key, given.get(err.field or ""), secret=secret)
        what = kind.describe(err.field or "") if err.code == "missing_setting" else None
        if what:  # the setting's own description, as a sentence's aside
            message = f"{message} ({what[:1].lower()}{what[1:].rstrip('.')})"
        raise _fail(key, message) from err


def _endpoint_hosts(config: Mapping[str, Any]) -> tuple[str, ...]:
    value = config.get("PUSH_ENDPOINT_HOSTS", DEFAULT_ENDPOINT_HOSTS)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise _fail(
            "PUSH_ENDPOINT_HOSTS", "must be a list of host patterns such as ['*.push.apple.com']"
        )
    if not value:
        raise _fail(
            "PUSH_ENDPOINT_HOSTS",
            "names no host, so no browser could subscribe; leave it unset for the public "
            "push services, or name the hosts such as ['*.push.apple.com']",
        )
    try:
        return tuple(validation.host_pattern(pattern) for pattern in value)
    except ValueError as err:
        raise _fail("PUSH_ENDPOINT_HOSTS", str(err)) from err


def _rates(
    config: Mapping[str, Any], key: str, default: str, *, one: bool
) -> tuple[str, list[limits.RateLimitItem]] | None:
    """``config[key]`` (``default`` when unset) and its rates as ``limits`` parses
    them, or None for no limit; :func:`_fail` unless they are rates of at least one
    (and only one rate when ``one``)."""
    value = config.get(key, default)
    if value is None:
        return None
    such = (
        f"one rate such as {default!r}"
        if one
        else f"a rate such as {default!r} (or several: '30/minute;500/day')"
    )
    problem = _fail(key, f"must be {such}, or None for no limit; got {value!r}")
    if not isinstance(value, str):
        raise problem
    try:
        rates = limits.parse_many(value)
    except ValueError:
        raise problem from None
    if not rates or any(rate.amount < 1 for rate in rates) or (one and len(rates) != 1):
        raise problem
    return value, rates


def _rate_limit(config: Mapping[str, Any], key: str, default: str) -> str | None:
    parsed = _rates(config, key, default, one=False)
    return None if parsed is None else parsed[0]


def _ws_rate_limit(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """``PUSH_WS_RATE_LIMIT``: one rate (a token bucket has one), as (frames, seconds)."""
    parsed = _rates(config, "PUSH_WS_RATE_LIMIT", DEFAULT_WS_RATE_LIMIT, one=True)
    if parsed is None:
        return None
    [rate] = parsed[1]
    return rate.amount, rate.get_expiry()


def _ws_allowed_origins(config: Mapping[str, Any]) -> tuple[str, ...]:
    key = "PUSH_WS_ALLOWED_ORIGINS"
    value = config.get(key, DEFAULT_WS_ALLOWED_ORIGINS)
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise _fail(
            key, f"must be a list of origins such as ['https://app.shop.example'], got {value!r}"
        )
    origins = set()
    for entry in value:
        if entry == "*":
            # Any site could then open the socket with a visitor's cookies and read
            # her events: the very attack the check is there to stop.
            raise _fail(
                key, "must name each origin: '*' would let every site read your users' events"
            )
        try:
            origins.add(validation.origin(entry, key))
        except ValidationError as err:
            raise _fail(key, f"has {entry!r}, which {err.message}") from err
    return tuple(sorted(origins))


def _metrics_token(config: Mapping[str, Any]) -> str | None:
    key = "PUSH_METRICS_TOKEN"
    value = config.get(key, DEFAULT_METRICS_TOKEN)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        # a secret: its type is said, never its value
        why = _read_as_number(key, value, secret=True) or (
            ", got a blank string" if isinstance(value, str) else f", got a {type(value).__name__}"
        )
        raise _fail(key, f"must be a non-empty string or None{why}")
    if value is None:
        return None
    # read from a secret file, it ends in a newline: the token is what that whitespace
    # surrounds (a scrape's token is stripped too)
    token = value.strip()
    # a space inside is taken (a scrape's header carries it as it is); a control or a
    # non-ASCII character is not: no scrape could match it
    bad = next((c for c in token if not " " <= c <= "~"), None)
    if bad is not None:
        # a secret: what is wrong with it is said, never its value (nor the character)
        what = "a non-ASCII character" if not bad.isascii() else "a control character"
        raise _fail(
            key,
            "must be printable ASCII, as a scraper sends it in its 'Authorization: Bearer "
            f"<token>' header; got a token with {what} inside (a newline of a secret "
            "file at its end is fine)",
        )
    return token


def _site_url(config: Mapping[str, Any]) -> str | None:
    """``PUSH_SITE_URL``: an absolute http(s) URL, with its scheme and host lower-cased
    and a path of at least ``/`` (as browsers write it)."""
    key = "PUSH_SITE_URL"
    value = config.get(key, DEFAULT_SITE_URL)
    if value is None:
        return None
    problem = _fail(
        key,
        "must be the site's absolute http(s) URL, such as 'https://shop.example' (no user, "
        f"query or fragment; an international name in its xn-- form), or None; got {value!r}",
    )
    if not isinstance(value, str) or not value.isascii() or any(c.isspace() for c in value):
        raise problem
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise problem from None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or "\\" in value
    ):
        raise problem
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path or '/'}"


def _shared_name(config: Mapping[str, Any], key: str, default: str, what: str = "") -> str:
    """``key``, a name matching :data:`_SHARED_NAME`; ``what`` says what kind of name."""
    value = config.get(key, default)
    if not isinstance(value, str) or not _SHARED_NAME.fullmatch(value):
        raise _fail(
            key,
            f"must be {what}1 to 100 letters, digits, '_', '.', ':' or '-', "
            f"such as {default!r}; got {value!r}",
        )
    return value


def _shown(url: str) -> str:
    """``url`` as an error may say it: the password of each of its URLs (a broker's
    are ';'-separated) left out, whatever characters it holds."""
    return repr(re.sub(r"(://[^/@;]*?:)[^@;]*@", r"\1***@", url))


def _scheme(key: str, url: str, shown: str | None = None) -> str:
    """The scheme of ``url``; a URL Python cannot read (an IPv6 address without its
    ']') is refused naming ``key`` (``shown``: the whole value it is part of)."""
    try:
        return urlsplit(url).scheme
    except ValueError as err:
        raise _fail(key, f"is not a URL ({err}); got {_shown(shown or url)}") from None


def _redis_url(key: str, url: str) -> None:
    """Refuse a Redis URL that redis-py would fail on later, or read otherwise than
    written (a database that is not a number is silently database 0)."""
    problem = (
        "must be a Redis URL such as 'redis://127.0.0.1:6379/0' (a port that is a "
        f"number, a database that is one); got {_shown(url)}"
    )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise _fail(key, problem) from None
    if not re.fullmatch(r"/?\d*", parts.path):
        raise _fail(key, problem)
    try:
        from redis.connection import parse_url
    except ImportError:  # the broker's: Celery says what to install when it connects
        return
    try:
        parse_url(url)  # type: ignore[no-untyped-call] # its options: what redis-py refuses
    except ValueError as err:
        raise _fail(key, f"{problem}: redis-py refuses it ({err})") from None


def _broker_url(url: str) -> None:
    """Refuse a Celery broker URL that Celery would read as something else ("not a
    url" is the AMQP broker on host "not a url") or never reach: each of its
    ';'-separated URLs names one of kombu's transports."""
    from kombu.transport import TRANSPORT_ALIASES  # celery's own dependency

    for each in (part.strip() for part in url.split(";")):
        scheme = _scheme("PUSH_CELERY_BROKER_URL", each, shown=url) if "://" in each else ""
        # "redis+socket://", "sqla+postgresql://": kombu's transport is before the "+"
        if scheme.split("+", 1)[0] not in TRANSPORT_ALIASES:
            raise _fail(
                "PUSH_CELERY_BROKER_URL",
                "must be a Celery broker URL such as 'redis://127.0.0.1:6379/0' or "
                f"'amqp://guest@127.0.0.1//'; got {_shown(url)}",
            )
        if scheme in ("redis", "rediss"):
            _redis_url("PUSH_CELERY_BROKER_URL", each)


_UNSET = object()


def push_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``PUSH_*`` keys of ``config`` and their values, as they are now: a copy of
    each, so that a dict or list changed in place later (a category added to
    ``PUSH_CATEGORIES``) differs from it."""
    return {
        k: _as_now(v) for k, v in config.items() if isinstance(k, str) and k.startswith("PUSH_")
    }


def _as_now(value: Any) -> Any:
    """A deep copy of ``value`` that equals it, else ``value`` itself (an object that
    cannot be copied, or whose copy compares by identity)."""
    try:
        copied = copy.deepcopy(value)
        if copied == value:
            return copied
    except Exception:  # noqa: BLE001, S110 - the value itself is what there is
        pass
    return value


def say_changed(read: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Warn of each ``PUSH_*`` key set, changed or removed in ``config`` since
    ``init_app`` read ``read``: flask-push goes on with what it read, so a test that
    sets ``PUSH_QUEUE`` on the app its factory returned would otherwise not know."""
    now = push_keys(config)
    keys = read.keys() | now.keys()
    changed = sorted(k for k in keys if read.get(k, _UNSET) != now.get(k, _UNSET))
    if changed:
        logging.getLogger("flask_push").warning(
            "flask-push: app.config's %s changed after push.init_app(app), which reads the "
            "PUSH_* keys once: flask-push goes on with the values it read then. Set them "
            "before init_app (in a test, give them to your app factory, before it calls "
            "init_app).",
            ", ".join(changed),
        )


def say_debug_changed(settings: PushSettings, read: Mapping[str, Any], debug: bool) -> None:
    """Warn of the settings left to default to ``app.debug`` (``PUSH_APNS_SANDBOX``)
    when ``app.debug`` changed after ``init_app`` read it (``app.run(debug=True)``
    sets it then): they keep the value it had. A development build's tokens sent to
    production APNs are answered BadDeviceToken, and their installations are marked
    dead."""
    for kind in credentials.KINDS.values():
        if kind.name not in settings.providers:
            continue
        for setting in kind.settings:
            if setting.debug_default and setting.config_key not in read:
                logging.getLogger("flask_push").warning(
                    "flask-push: app.debug became %s after push.init_app(app), which read it "
                    "as %s for %s, unset: flask-push goes on with %s. Set %s (True for the "
                    "development builds of your app, False for those of the App Store and "
                    "TestFlight).",
                    debug,
                    not debug,
                    setting.config_key,
                    not debug,
                    setting.config_key,
                )


def load(app: Flask) -> PushSettings:
    """Read and check the ``PUSH_*`` keys of ``app.config`` (and warn of those it
    does not know). A refusal names a misspelt key that may be its cause."""
    config = _Asked(app.config)
    try:
        return _load(app, config)
    except PushConfigError as err:
        # a key given with a bad value is no misspelling; one missing may be (a
        # refusal that names no key, a package missing, say, is left as it is)
        if err.key is None or app.config.get(err.key) not in (None, ""):
            raise
        misspelt = _misspelt(config, err.key)
        if misspelt is None:
            raise
        said = f"{err} (app.config has {misspelt}: a misspelling?)"
        raise PushConfigError(said, key=err.key) from err


def _misspelt(config: _Asked, key: str) -> str | None:
    """A ``PUSH_*`` key of ``config`` that no check asked for, close to ``key``."""
    unknown = [k for k in config if k.startswith("PUSH_") and k not in config.asked]
    close = difflib.get_close_matches(key, unknown, n=1, cutoff=0.8)
    return close[0] if close else None


def _load(app: Flask, config: _Asked) -> PushSettings:
    providers = {}
    for kind in kinds().values():
        settings = _provider(config, app, kind)
        if settings is not None:
            providers[kind.name] = settings

    queue = config.get("PUSH_QUEUE", DEFAULT_QUEUE)
    if queue not in QUEUES:
        raise _fail("PUSH_QUEUE", f"must be one of {', '.join(QUEUES)}; got {queue!r}")
    broker = config.get("PUSH_CELERY_BROKER_URL")
    if broker is not None and not isinstance(broker, str):
        raise _fail("PUSH_CELERY_BROKER_URL", f"must be a URL string, got {broker!r}")
    if queue == "celery":
        if not broker:
            raise _fail(
                "PUSH_CELERY_BROKER_URL",
                "is required when PUSH_QUEUE is 'celery', e.g. 'redis://127.0.0.1:6379/0'",
            )
        credentials.require_module("celery queue", "celery", "celery")
        _broker_url(broker)
    celery_queue = _shared_name(
        config, "PUSH_CELERY_QUEUE", DEFAULT_CELERY_QUEUE, "a Celery queue name of "
    )

    backplane = config.get("PUSH_BACKPLANE_URL", DEFAULT_BACKPLANE_URL)
    scheme = _scheme("PUSH_BACKPLANE_URL", backplane) if isinstance(backplane, str) else ""
    if scheme not in ("memory", "redis", "rediss"):
        raise _fail(
            "PUSH_BACKPLANE_URL",
            "must be 'memory://' or a 'redis://' URL, got "
            + (_shown(backplane) if isinstance(backplane, str) else repr(backplane)),
        )
    if scheme != "memory":
        credentials.require_module("redis backplane", "redis", "redis")
        _redis_url("PUSH_BACKPLANE_URL", backplane)
    backplane_prefix = _shared_name(config, "PUSH_BACKPLANE_PREFIX", DEFAULT_BACKPLANE_PREFIX)

    metrics = _bool(config, "PUSH_METRICS", DEFAULT_METRICS)
    if metrics:
        credentials.require_module("PUSH_METRICS", "prometheus_client", "metrics")

    url_prefix = _path(config, "PUSH_URL_PREFIX", DEFAULT_URL_PREFIX)
    if url_prefix == "/":
        # the service worker and the browser client build their URLs as the prefix
        # and a path ("//subscriptions" is another host), and flask-push's routes
        # (/subscriptions, /ws, /console) would mix with the app's own
        raise _fail(
            "PUSH_URL_PREFIX",
            f"must be a path below the root, such as {DEFAULT_URL_PREFIX!r}, under which "
            "flask-push's API, websocket and console answer; got '/'",
        )
    loaded = PushSettings(
        url_prefix=url_prefix,
        providers=providers,
        queue=queue,
        celery_broker_url=broker,
        celery_queue=celery_queue,
        backplane_url=backplane,
        default_ttl=_int(config, "PUSH_DEFAULT_TTL", DEFAULT_TTL, 0, MAX_TTL),
        endpoint_hosts=_endpoint_hosts(config),
        allow_http_endpoints=_bool(config, "PUSH_ALLOW_HTTP_ENDPOINTS", False),
        suppress_send_config=(
            _bool(config, "PUSH_SUPPRESS_SEND", False) if "PUSH_SUPPRESS_SEND" in config else None
        ),
        service_worker_url=_service_worker_url(config, url_prefix),
        max_request_bytes=_int(
            config, "PUSH_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES, 1024, 16 * 1024 * 1024
        ),
        delivery_batch=_int(config, "PUSH_DELIVERY_BATCH", DEFAULT_DELIVERY_BATCH, 1, 100_000),
        delivery_lease=_int(config, "PUSH_DELIVERY_LEASE", DEFAULT_DELIVERY_LEASE, 1, 86_400),
        backplane_prefix=backplane_prefix,
        events_keep_seconds=_int(
            config, "PUSH_EVENTS_KEEP_SECONDS", DEFAULT_EVENTS_KEEP_SECONDS, 1, 7 * 86_400
        ),
        events_keep_count=_int(
            config, "PUSH_EVENTS_KEEP_COUNT", DEFAULT_EVENTS_KEEP_COUNT, 1, 100_000
        ),
        ws_heartbeat=_int(config, "PUSH_WS_HEARTBEAT", DEFAULT_WS_HEARTBEAT, 0, 3600),
        ws_max_message_bytes=_int(
            config, "PUSH_WS_MAX_MESSAGE_BYTES", DEFAULT_WS_MAX_MESSAGE_BYTES, 256, 16 * 1024 * 1024
        ),
        ws_queue_size=_int(config, "PUSH_WS_QUEUE_SIZE", DEFAULT_WS_QUEUE_SIZE, 1, 100_000),
        ws_max_per_user=_int_or_none(
            config, "PUSH_WS_MAX_PER_USER", DEFAULT_WS_MAX_PER_USER, 1, 100_000
        ),
        subscribe_rate_limit=_rate_limit(
            config, "PUSH_SUBSCRIBE_RATE_LIMIT", DEFAULT_SUBSCRIBE_RATE_LIMIT
        ),
        ws_rate_limit=_ws_rate_limit(config),
        max_topics=_int(config, "PUSH_MAX_TOPICS", DEFAULT_MAX_TOPICS, 1, 1000),
        ws_allowed_origins=_ws_allowed_origins(config),
        console=_bool(config, "PUSH_CONSOLE", DEFAULT_CONSOLE),
        metrics=metrics,
        metrics_token=_metrics_token(config),
        categories=_categories.load(config),
        site_url=_site_url(config),
    )
    _say_unknown(config)
    return loaded
