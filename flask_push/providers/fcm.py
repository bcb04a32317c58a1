"""Firebase Cloud Messaging, HTTP v1, through pyfcm.

How a :class:`~flask_push.message.Notification` becomes a v1 message
(``{"message": {...}}`` posted to ``<base>/v1/projects/<project>/messages:send``):

=================  ==============================================================
Notification       v1 message
=================  ==============================================================
target token       ``token``
title, body        ``notification.title``, ``notification.body``
image              ``notification.image`` (shown by Android, iOS and browsers), a path
                   resolved against ``PUSH_SITE_URL`` when set: the phone downloads it
data               ``data``: every value a string; strings as they are, anything
                   else JSON-encoded (``42`` -> ``"42"``, ``True`` -> ``"true"``)
url                ``data.url``
message id         ``data.messageId`` (and ``data.clickToken`` when the push has one);
                   these three win over ``data`` keys of the same name
ttl                ``android.ttl`` as ``"<seconds>s"``, capped at FCM's four weeks
urgency            ``android.priority``: ``"HIGH"`` for ``high`` and for a live
                   activity's push (below), else ``"NORMAL"``
collapse_key       ``android.collapse_key``
icon, sound        ``android.notification.icon`` / ``.sound`` (Android resource names)
tag                ``android.notification.tag``; the collapse key when no tag is given,
                   so a newer notification replaces the shown one, as in browsers
badge (int)        ``android.notification.notification_count``; a str badge (a Web Push
                   icon URL) has no Android counterpart and is left out
=================  ==============================================================

A live activity's state (``push.activity``) rides in ``data.activity``, one JSON text
(FCM data values are strings): ``{"id", "event", "state", "timestamp"}``, the same
object the APNs alert and Web Push payloads carry; it wins over a ``data`` key of the
same name. The notification's ``tag`` and ``collapse_key`` are the activity id (dispatch
sets them), so the app's notification for it is replaced in place, and an undelivered
older state is dropped by FCM; ``timestamp`` only grows, so an app that renders
``data.activity`` itself can ignore an older one arriving late. Its ``android.priority``
is ``"HIGH"``: the notification is how an Android user follows the activity, and a
``"NORMAL"`` one waits for a phone in Doze to wake.

``url`` does not become ``android.notification.click_action``: that field names an
Android intent action, not a link, and an action no activity handles makes the tap
do nothing. The app opens ``data.url`` itself.

pyfcm builds the message (``parse_payload``); the send runs on the worker's event
loop with aiohttp, one POST per push on a pooled session. The OAuth access token
comes from the service account through google-auth and is shared by every send;
google-auth's refresh is blocking, so it runs in the loop's executor, only when the
token is missing or close to expiry (see :class:`_AccessToken`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Annotated, Any, ClassVar
from urllib.parse import quote, urlsplit

import aiohttp
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..credentials import ProviderKind, Setting, site_url_option
from ..credentials import base_url as _base_url
from ..credentials import split_url as _split
from ..credentials import text as _text
from ..errors import PayloadError, ValidationError
from ..message import (
    Activity,
    DeliveryResult,
    DeviceTarget,
    Notification,
    OutgoingPush,
    on_site,
)
from ..schemas.base import ResponseModel, WireModel, refuse_as
from ..schemas.fields import MAX_TEXT
from .base import (
    BODY_SHARE,
    CONNECT_SHARE,
    Provider,
    read_start,
    retry_after_seconds,
    within,
    without_answer,
)

# pyfcm, google-auth and requests are the ``fcm`` extra: imported when a provider
# is made, so that the kind above can be read (and the extra asked for) without them.
if TYPE_CHECKING:
    import google.auth.exceptions
    import requests
    from google.oauth2 import service_account

__all__ = ["FCM_SCOPE", "FCMProvider"]

#: the OAuth scope a sender needs
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: the longest Android ttl FCM accepts (four weeks); longer ones get 400
MAX_TTL = 28 * 24 * 3600
#: ids are ``<prefix>_<ULID>`` in a 40-character column (:mod:`flask_push.ids`)
_LONGEST_MESSAGE_ID = 40
#: room kept for a click token when sizing; dispatch's tokens are expected to be shorter
_LONGEST_CLICK_TOKEN = 160
#: data keys FCM refuses with 400 INVALID_ARGUMENT ("Invalid data payload key")
_RESERVED_KEYS = ("from", "message_type")
_RESERVED_PREFIXES = ("google", "gcm")
#: seconds a refused key is remembered, so a batch does not ask the token endpoint per push
_REFUSAL_MEMORY = 30.0
#: FCM's words for a message over its limit, on a 400 INVALID_ARGUMENT ("Android
#: message is too big"; undocumented, so any "too big" or "too large")
_TOO_BIG = re.compile(r"\btoo (big|large)\b", re.IGNORECASE)
#: the most of an answer read: FCM's are a few hundred bytes, and one that is not
#: FCM's (a proxy's error page, an endless body) must not fill the memory
_MAX_ANSWER = 64 * 1024


class _NotSent(Exception):
    """The push never left this process (it is exiting): it stays for a worker."""


class _TokenUnreadable(Exception):
    """The token endpoint's answer held no access token: the push was not sent."""


class _TokenLate(Exception):
    """No access token came in time (the token endpoint is slow or silent, or the
    fetch another send started is): the push was not sent."""


@dataclass(frozen=True)
class _Answer:
    """FCM's answer to one send, read in full (or as far as it came: ``ended`` says
    whether its body came to its end)."""

    status: int
    text: str
    retry_after: float | None
    ended: bool = True


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (nothing, for what is not a list): an answer that
    comes through a proxy or a broken gateway may have any shape."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _fcm_error(text: str) -> tuple[str | None, str, list[str]]:
    """(errorCode, message, fields in violation) from an FCM error body, as far as it has them."""
    try:
        error = json.loads(text)["error"]
        message = error.get("message")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, text.strip()[:300], []
    details = _objects(error.get("details"))
    codes = (detail.get("errorCode") for detail in details)
    code = next((c for c in codes if isinstance(c, str) and c), None) or error.get("status")
    fields = [
        str(violation.get("field"))
        for detail in details
        for violation in _objects(detail.get("fieldViolations"))
    ]
    return (
        code if isinstance(code, str) and code else None,
        message if isinstance(message, str) else "",
        fields,
    )


def _message_name(text: str) -> str | None:
    """The ``name`` FCM gives an accepted message (``projects/p/messages/<id>``)."""
    try:
        name = json.loads(text).get("name")
    except (ValueError, AttributeError):
        return None
    return name[:MAX_TEXT] if isinstance(name, str) and name else None


def _describe(answer: _Answer) -> str:
    code, message, _ = _fcm_error(answer.text)
    return " ".join(filter(None, ["FCM answered", str(answer.status), code])) + f": {message}"


#: FCM's error code for credentials of its own that APNs or a Web Push service refused
THIRD_PARTY_AUTH_ERROR = "THIRD_PARTY_AUTH_ERROR"


def _third_party_refused(answer: _Answer) -> bool:
    """A 401 that says APNs or a Web Push service refused the credentials FCM holds
    for them: the sender's own were accepted."""
    return answer.status == 401 and _fcm_error(answer.text)[0] == THIRD_PARTY_AUTH_ERROR


def _token_expired(answer: _Answer) -> bool:
    """A 401 that says the access token expired (not that the key is refused)."""
    if answer.status != 401:
        return False
    try:
        details = _objects(json.loads(answer.text).get("error", {}).get("details"))
    except (ValueError, AttributeError):
        return False
    return any(d.get("reason") == "ACCESS_TOKEN_EXPIRED" for d in details)


def _env_proxy(url: str) -> str | None:
    """The proxy ``HTTPS_PROXY`` / ``NO_PROXY`` name for ``url``, as requests (which
    sends the token request) would use it; read once per session."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class _AccessToken:
    """The service account's OAuth access token, shared by every send.

    google-auth's ``Credentials.valid`` is false once the token is within a few
    minutes of expiry, so a token is fetched before FCM would refuse it. The
    fetch is blocking (google-auth's requests transport): it runs in the loop's
    executor, one at a time, while the sends that need it wait on a lock. A key
    the token endpoint refuses is remembered for a while, so that a batch does
    not ask for a token per push.
    """

    def __init__(self, credentials: service_account.Credentials, timeout: float) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self._lock: asyncio.Lock | None = None
        self._refused: tuple[float, google.auth.exceptions.RefreshError] | None = None
        #: when (monotonic) a token refused but not expired was last forgotten
        self._forgot_refused_at: float | None = None
        self._session: requests.Session | None = None
        self._fetch_under_way: asyncio.Future[None] | None = None

    async def get(self) -> str:
        """The access token, fetched first if need be, within :attr:`timeout`.

        The wait for the lock counts too: sends queued behind a fetch that hangs
        would otherwise run into their own timeout, which says that the push
        service gave no answer (so the push may have arrived) when the push never
        left this process."""
        if self.credentials.valid:
            return str(self.credentials.token)
        try:
            return await within(self.timeout, self._fetch())
        except asyncio.TimeoutError as err:
            raise _TokenLate(
                "Google's OAuth token endpoint gave no access token within "
                f"{self.timeout:g} s, so the push was not sent"
            ) from err

    async def _fetch(self) -> str:
        import google.auth.exceptions

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.credentials.valid:  # fetched while this send waited
                return str(self.credentials.token)
            if self._refused is not None and time.monotonic() < self._refused[0]:
                # a fresh exception: re-raising one object from many sends grows its traceback
                raise google.auth.exceptions.RefreshError(  # type: ignore[no-untyped-call]
                    *self._refused[1].args
                )
            try:
                await asyncio.shield(self._refreshing())
            except RuntimeError as err:
                # The executor refuses work once the interpreter exits: this push never left.
                raise _NotSent(f"not sent, the process is exiting ({err})") from err
            except google.auth.exceptions.RefreshError as err:
                if not err.retryable:
                    self._refused = (time.monotonic() + _REFUSAL_MEMORY, err)
                raise
            except google.auth.exceptions.TransportError:
                raise  # parse() says it could not be reached
            except Exception as err:
                # google-auth reading an answer that is not a token (a proxy's
                # page, a field of the wrong type): FCM never saw the push
                raise _TokenUnreadable(
                    "Google's OAuth token endpoint answered something that is not an "
                    f"access token ({type(err).__name__}: {err})"
                ) from err
            self._refused = None
            return str(self.credentials.token)

    def _refreshing(self) -> asyncio.Future[None]:
        """The fetch under way, or a new one. A send that stops waiting (its time is
        up) leaves the fetch running in the executor: the next send waits for that
        one rather than start a second beside it, one more thread per timeout."""
        fetch = self._fetch_under_way
        if fetch is None or fetch.done():
            fetch = asyncio.get_running_loop().run_in_executor(None, self._refresh)
            # seen, so that one nobody waits for any more is not logged as lost
            fetch.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._fetch_under_way = fetch
        return fetch

    def _refresh(self) -> None:
        # Runs in the executor. google-auth's default timeout is 120 s: bound it
        # like the sends.
        import google.auth.transport.requests
        import requests

        if self._session is None:
            self._session = requests.Session()
        request = google.auth.transport.requests.Request(self._session)
        self.credentials.refresh(  # type: ignore[no-untyped-call]
            partial(request, timeout=self.timeout)
        )

    def forget(self, token: str, *, expired: bool = True) -> None:
        """FCM refused ``token`` although google-auth thought it fresh: the next send
        fetches another. A token refused for another reason than its expiry (the
        credentials may be refused for good) is forgotten at most once in
        :data:`_REFUSAL_MEMORY`, so that a fan-out does not ask for a token per wave
        of sends."""
        if self.credentials.token != token:
            return
        if not expired:
            now = time.monotonic()
            if self._forgot_refused_at is not None and now - self._forgot_refused_at < (
                _REFUSAL_MEMORY
            ):
                return
            self._forgot_refused_at = now
        self.credentials.token = None

    def close(self) -> None:
        self._lock = self._fetch_under_way = None  # bound to the loop that used them
        session, self._session = self._session, None
        if session is not None:
            session.close()


@lru_cache(maxsize=16)
def _private_key(pem: str) -> PrivateKeyTypes:
    """``pem`` parsed, once a process: the check of an RSA-2048 key's numbers takes
    about 60 ms of CPU, and the settings' check and each provider built on them
    would each pay it (every test that points an app at the fake FCM, every one of
    the API's checks of the same key)."""
    return serialization.load_pem_private_key(pem.encode(), None)


def _normalize_fcm(values: Mapping[str, Any]) -> dict[str, Any]:
    credentials = values.get("credentials")
    if isinstance(credentials, str):
        try:
            credentials = json.loads(credentials)
        except ValueError:
            credentials = None
    if not isinstance(credentials, dict):
        raise ValidationError(
            "must be the service-account JSON object downloaded from the Firebase console",
            field="credentials",
            code="invalid_setting",
        )
    for key in ("client_email", "private_key", "token_uri"):
        if not isinstance(credentials.get(key), str) or not credentials[key]:
            raise ValidationError(
                f"is missing {key!r}; use the service-account key file, not google-services.json",
                field="credentials",
                code="invalid_setting",
            )
    if credentials.get("type", "service_account") != "service_account":
        raise ValidationError(
            "must be a service account's key (type 'service_account')",
            field="credentials",
            code="invalid_setting",
        )
    try:
        rsa_key = _private_key(credentials["private_key"])
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:  # TypeError: encrypted
        raise ValidationError(
            "has a private_key that is not a PEM RSA key",
            field="credentials",
            code="invalid_setting",
        ) from err
    if not isinstance(rsa_key, rsa.RSAPrivateKey):
        raise ValidationError(
            "has a private_key that is not an RSA key", field="credentials", code="invalid_setting"
        )
    if _split(credentials["token_uri"]).scheme not in ("http", "https"):
        raise ValidationError(
            "has a token_uri that is not an http(s) URL",
            field="credentials",
            code="invalid_setting",
        )
    project_id = _text(values, "projectId", required=False) or credentials.get("project_id")
    if not isinstance(project_id, str) or not project_id:
        raise ValidationError(
            "is required: the credentials name no project_id",
            field="projectId",
            code="missing_setting",
        )
    return {"credentials": credentials, "projectId": project_id, **_where_fcm_is(values)}


def _where_fcm_is(values: Mapping[str, Any]) -> dict[str, Any]:
    """``baseUrl``, which has a default of its own, checked: ``init_app`` checks it
    alone too, for providers stored through the API."""
    return {"baseUrl": _base_url(values, "baseUrl", default="https://fcm.googleapis.com")}


#: FCM registration tokens are about 160 characters of base64url plus ':'
FCM_TOKEN = re.compile(r"^[A-Za-z0-9_\-:.]{32,512}\Z")

# -- the settings on the wire (/providers) ------------------------------------------


class FcmSettings(WireModel):
    """Firebase Cloud Messaging (HTTP v1)."""

    credentials: Annotated[
        dict[str, Any] | str,
        refuse_as(
            "invalid_setting", "must be the service-account JSON object from the Firebase console"
        ),
    ]
    """Secret. The service-account key (JSON object, or its text) from the Firebase console."""
    project_id: str | None = None
    """Default: the credentials' project_id."""
    base_url: str | None = None
    """An http(s) origin; default https://fcm.googleapis.com."""


class FcmPublicSettings(ResponseModel):
    project_id: str
    base_url: str


FCM = ProviderKind(
    name="fcm",
    service="Firebase Cloud Messaging (FCM)",
    settings=(
        Setting("credentials", "PUSH_FCM_CREDENTIALS", secret=True, file_unless="{"),
        Setting("projectId", "PUSH_FCM_PROJECT_ID", required=False),
        Setting("baseUrl", "PUSH_FCM_BASE_URL", required=False, standalone=True),
    ),
    trigger="credentials",
    requires=("pyfcm", "fcm"),
    normalize=_normalize_fcm,
    normalize_standalone=_where_fcm_is,
    platform="android",
    token_pattern=FCM_TOKEN,
    token_message="must be the FCM registration token the Firebase SDK returned",
    wire=FcmSettings,
    shown=FcmPublicSettings,
    options=site_url_option,
)


class FCMProvider(Provider):
    """Sends to Android (and Firebase iOS) apps through FCM HTTP v1.

    :param credentials: the service-account key (the parsed JSON).
    :param project_id: the Firebase project; it wins over the key's ``project_id``.
    :param base_url: the origin requests go to.
    :param concurrency: sends in flight at once, on the event loop.
    :param timeout: seconds for each request (the send and the token fetch).

    .. versionadded:: 0.1
    """

    name: ClassVar[str] = "fcm"
    spec: ClassVar[ProviderKind] = FCM
    #: FCM's limit on a message's notification and data
    max_payload: ClassVar[int] = 4000
    payload_counted: ClassVar[str] = "notification and data"
    fetches_images = True

    def __init__(
        self,
        *,
        credentials: Mapping[str, Any],
        project_id: str,
        base_url: str = "https://fcm.googleapis.com",
        concurrency: int = 50,
        timeout: float = 10.0,
        site_url: str | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout)
        self.project_id = project_id
        #: ``PUSH_SITE_URL``: an image given as a path resolves against it
        self.site_url = site_url
        from google.auth.credentials import DEFAULT_UNIVERSE_DOMAIN
        from google.auth.crypt import RSASigner
        from google.oauth2 import service_account
        from pyfcm import FCMNotification

        # What Credentials.from_service_account_info builds, on the key parsed once
        # (the settings were checked with it). No network: the token is fetched on
        # the first send.
        signer = RSASigner(  # type: ignore[no-untyped-call]
            _private_key(credentials["private_key"]), key_id=credentials.get("private_key_id")
        )
        google_credentials = service_account.Credentials(  # type: ignore[no-untyped-call]
            signer,
            service_account_email=credentials["client_email"],
            token_uri=credentials["token_uri"],
            scopes=[FCM_SCOPE],
            project_id=credentials.get("project_id"),
            universe_domain=credentials.get("universe_domain", DEFAULT_UNIVERSE_DOMAIN),
        )
        self._token = _AccessToken(google_credentials, timeout * CONNECT_SHARE)
        # pyfcm builds the messages; it sends nothing (its client is synchronous).
        self._builder = FCMNotification(credentials=google_credentials, project_id=project_id)
        # pyfcm would take the key's project_id over the configured one.
        self._end_point = (
            f"{base_url.rstrip('/')}/v1/projects/{quote(project_id, safe='')}/messages:send"
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **options: Any) -> FCMProvider:
        """Build from :data:`flask_push.credentials.FCM` settings (no network).

        ``options`` are the constructor's ``concurrency``, ``timeout`` and ``site_url``.
        """
        return cls(
            credentials=settings["credentials"],
            project_id=settings["projectId"],
            base_url=settings.get("baseUrl") or "https://fcm.googleapis.com",
            **options,
        )

    # -- the message -----------------------------------------------------------

    def _data(
        self,
        notification: Notification,
        message_id: str,
        click_token: str | None,
        activity: Activity | None = None,
    ) -> dict[str, str]:
        # FCM data is a map of strings to strings; anything else gets 400.
        data: dict[str, str] = {}
        for key, value in notification.data.items():
            key = str(key)
            lowered = key.lower()
            if lowered in _RESERVED_KEYS or lowered.startswith(_RESERVED_PREFIXES):
                raise PayloadError(
                    f"FCM refuses the data key {key!r} (reserved: 'from', 'message_type' "
                    "and keys starting with 'google' or 'gcm'); rename it.",
                    provider=self.name,
                )
            if isinstance(value, str):
                data[key] = value
            else:
                try:
                    data[key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
                except (TypeError, ValueError) as err:
                    raise PayloadError(
                        f"The data value of {key!r} is not JSON-serializable: {err}",
                        provider=self.name,
                    ) from err
        if notification.url is not None:
            data["url"] = notification.url
        data["messageId"] = message_id
        if click_token is not None:
            data["clickToken"] = click_token
        if activity is not None:
            shown = {
                "id": activity.id,
                "event": activity.event,
                "state": dict(activity.state),
                "timestamp": activity.timestamp,
            }
            try:
                data["activity"] = json.dumps(shown, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as err:
                raise PayloadError(
                    f"The activity's state is not JSON-serializable: {err}", provider=self.name
                ) from err
        return data

    def _notify_arguments(
        self,
        notification: Notification,
        token: str,
        message_id: str,
        click_token: str | None,
        activity: Activity | None = None,
    ) -> dict[str, Any]:
        """pyfcm's ``notify()`` arguments for one push."""
        # A live activity's push is the notification its user follows it by (Android
        # has no Live Activity): at NORMAL priority a phone in Doze gets it at its next
        # maintenance window, minutes to hours later, and "out for delivery" would come
        # after the courier. Each one shows a notification, which is what FCM keeps
        # HIGH for.
        urgent = notification.urgency == "high" or activity is not None
        android: dict[str, Any] = {
            "ttl": f"{min(max(notification.ttl, 0), MAX_TTL)}s",
            "priority": "HIGH" if urgent else "NORMAL",
        }
        if notification.collapse_key is not None:
            android["collapse_key"] = notification.collapse_key
        shown: dict[str, Any] = {}
        if notification.icon is not None:
            shown["icon"] = notification.icon
        if notification.sound is not None:
            shown["sound"] = notification.sound
        tag = notification.tag or notification.collapse_key
        if tag is not None:
            shown["tag"] = tag
        badge = notification.badge
        if isinstance(badge, int) and not isinstance(badge, bool):
            shown["notification_count"] = badge
        if shown:
            android["notification"] = shown
        return {
            "fcm_token": token,
            "notification_title": notification.title,
            "notification_body": notification.body,
            "notification_image": on_site(notification.image, self.site_url),
            "data_payload": self._data(notification, message_id, click_token, activity),
            "android_config": android,
        }

    def build_payload(self, push: OutgoingPush) -> bytes:
        """The request body, as pyfcm's ``notify()`` would post it."""
        if not isinstance(push.target, DeviceTarget):
            raise PayloadError("FCM sends to device tokens only", provider=self.name)
        arguments = self._notify_arguments(
            push.notification, push.target.token, push.message_id, push.click_token, push.activity
        )
        return bytes(self._builder.parse_payload(**arguments))

    def preview(self, push: OutgoingPush) -> dict[str, Any]:
        """The FCM HTTP v1 request: its URL and the JSON body ``post`` sends."""
        return {"url": self._end_point, "body": json.loads(self.build_payload(push))}

    def payload_size(self, notification: Notification) -> int:
        """UTF-8 bytes of the message's ``notification`` and ``data`` as compact JSON.

        FCM's 4000 bytes count the keys and values of both; JSON's braces, quotes
        and commas are counted too, so the estimate errs on the safe side. The
        message id and click token are the longest they can be.
        """
        return self._size(notification, None)

    def activity_payload_size(self, notification: Notification, activity: Activity) -> int:
        """:meth:`payload_size` with the activity in ``data.activity``."""
        return self._size(notification, activity)

    def _size(self, notification: Notification, activity: Activity | None) -> int:
        arguments = self._notify_arguments(
            notification,
            "token",
            "m" * _LONGEST_MESSAGE_ID,
            "c" * _LONGEST_CLICK_TOKEN,
            activity,
        )
        message = json.loads(self._builder.parse_payload(**arguments))["message"]
        counted = {key: message[key] for key in ("notification", "data") if key in message}
        return len(json.dumps(counted, separators=(",", ":"), ensure_ascii=False).encode())

    # -- sending ---------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout, sock_connect=self.timeout * CONNECT_SHARE
                ),
                headers={"User-Agent": "flask-push", "Content-Type": "application/json"},
                # FCM's API keeps no session in cookies; a jar is searched per request
                cookie_jar=aiohttp.DummyCookieJar(),
                # aiohttp would look the proxy up in the executor for every request
                trust_env=False,
            )
            self._proxy = _env_proxy(self._end_point)
        return self._session

    async def _post(self, payload: bytes) -> tuple[str, _Answer]:
        token = await self._token.get()
        async with self._client().post(
            self._end_point,
            data=payload,
            headers={"Authorization": f"Bearer {token}"},
            proxy=self._proxy,
            # FCM never redirects a send: one elsewhere must not carry the token
            allow_redirects=False,
        ) as response:
            # a 200 has said the message was taken: its body, which only names it, is
            # not waited for long (an error's body says what it was, so it is)
            taken = response.status == 200
            text = await read_start(
                response, _MAX_ANSWER, for_at_most=self.timeout * BODY_SHARE if taken else None
            )
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            ended = response.content.at_eof() and response.content.exception() is None
            return token, _Answer(response.status, text, retry_after, ended)

    async def post(self, push: OutgoingPush, payload: Any) -> _Answer:
        """One POST on the loop (two when the access token expired early)."""
        token, answer = await self._post(payload)
        if answer.status == 401 and not _third_party_refused(answer):
            # Refused: the next send fetches another token rather than keep this
            # one until google-auth thinks it expired (an hour), whatever the 401
            # says. When it says the token expired although google-auth thought it
            # fresh (clock skew, revocation), try once more at once.
            expired = _token_expired(answer)
            self._token.forget(token, expired=expired)
            if expired:
                token, answer = await self._post(payload)
        return answer

    def _answered(self, push: OutgoingPush, answer: _Answer) -> DeliveryResult:
        result = partial(DeliveryResult, push.delivery_id, provider=self.name)
        status = answer.status
        if status == 200:
            if not answer.text and answer.ended:
                return result("failed", error="FCM answered 200 with an empty body")
            return result("sent", status_code=200, service_id=_message_name(answer.text))
        # 429 QUOTA_EXCEEDED, 500 INTERNAL, 503 UNAVAILABLE are FCM's "back off and
        # retry"; any error that names a Retry-After is a "come back later" too.
        if status == 429 or status >= 500 or (status >= 400 and answer.retry_after is not None):
            return result(
                "retry",
                error=_describe(answer),
                status_code=status,
                retry_after=answer.retry_after,
            )
        if status == 404:
            code, message, _ = _fcm_error(answer.text)
            if code == "UNREGISTERED":
                # the app was uninstalled or the token rotated
                return result(
                    "gone", error="FCM: the registration token is unregistered", status_code=404
                )
            # Any other 404 is not about the token: the send went to an address FCM
            # (or a proxy before it) does not serve, as a wrong base URL or project
            # makes for every token alike, so the installations are kept: "gone"
            # would wipe them all.
            said = message or answer.text.strip()[:300] or "no text"
            return result(
                "failed",
                error=(
                    f"404 {code or 'Not Found'}: {said} (not FCM's UNREGISTERED, so not "
                    f"about this token: check {self.setting('PUSH_FCM_BASE_URL')} and the "
                    f"project {self.project_id!r})"
                ),
                status_code=404,
            )
        if status == 400:
            # 400 INVALID_ARGUMENT covers both a malformed token and a bad message;
            # only the first means the installation is dead.
            code, message, fields = _fcm_error(answer.text)
            bad_token = (
                "message.token" in fields or "not a valid fcm registration token" in message.lower()
            )
            # what FCM said: the sentence it goes in says who said it
            text = f"400 {code or 'INVALID_ARGUMENT'}: {message}"
            if not bad_token and _TOO_BIG.search(message):
                # "Android message is too big": flask-push sent no more than
                # max_payload of notification and data, FCM counted more
                return result("failed", error=text, status_code=400, reason="too_large")
            return result("gone" if bad_token else "failed", error=text, status_code=400)
        if status == 403:
            # SENDER_ID_MISMATCH (the token belongs to another Firebase project) and
            # PERMISSION_DENIED (the service account may not send) are both usually a
            # configuration mistake that hits every token alike, so the installations
            # are kept: "gone" would wipe them all.
            return result(
                "failed",
                error=(
                    f"FCM answered 403: the token was registered with a Firebase project "
                    f"other than {self.project_id!r}, or the service account may not send "
                    f"for it. Check {self.setting('PUSH_FCM_PROJECT_ID')} and "
                    f"{self.setting('PUSH_FCM_CREDENTIALS')}."
                ),
                status_code=403,
                reason="credentials_refused",
            )
        if _third_party_refused(answer):
            # FCM took the sender's credentials; the ones it holds for APNs or Web
            # Push (set in the Firebase console) were refused, for this device's kind
            return result(
                "failed",
                error=(
                    f"FCM answered 401 {THIRD_PARTY_AUTH_ERROR}: APNs or the browser's "
                    "push service refused the credentials FCM holds for project "
                    f"{self.project_id!r}. Check the APNs authentication key (or "
                    "certificate) and the Web Push certificates in the Firebase "
                    f"console's Cloud Messaging settings; {self.setting('PUSH_FCM_CREDENTIALS')} "
                    "was accepted."
                ),
                status_code=401,
                reason="credentials_refused",
            )
        if status == 401:
            return result(
                "failed",
                error=(
                    "FCM refused the sender's credentials (401). Check that "
                    f"{self.setting('PUSH_FCM_CREDENTIALS')} is a current service-account "
                    "key of project "
                    f"{self.project_id!r} with the Firebase Cloud Messaging API enabled."
                ),
                status_code=401,
                reason="credentials_refused",
            )
        # an answer FCM does not document for a send (a redirect, 405, 409...)
        return result("failed", error=_describe(answer), status_code=status)

    def parse(self, push: OutgoingPush, response: Any) -> DeliveryResult:
        """Map FCM's answer, or what ``post`` raised, onto sent, gone, retry or failed."""
        if isinstance(response, _Answer):
            return self._answered(push, response)
        import google.auth.exceptions

        result = partial(DeliveryResult, push.delivery_id, provider=self.name)
        err = response
        if isinstance(err, _NotSent):
            # never handed to FCM (the process is exiting): not an answer of FCM's
            return result("retry", error=str(err), reason="unreachable")
        if isinstance(err, (_TokenUnreadable, _TokenLate)):
            return result("retry", error=str(err), reason="unreachable")
        if isinstance(err, google.auth.exceptions.RefreshError):
            if err.retryable:
                # Google's token endpoint, not FCM, failed for now: FCM never saw it
                return result(
                    "retry", error=f"the FCM token endpoint failed: {err}", reason="unreachable"
                )
            return result(
                "failed",
                error=(
                    f"The OAuth token endpoint refused the FCM credentials: {err}. "
                    f"Check {self.setting('PUSH_FCM_CREDENTIALS')} (the key may be deleted "
                    "or disabled)."
                ),
                reason="credentials_refused",
            )
        if isinstance(err, google.auth.exceptions.TransportError):
            return result(
                "retry",
                error=f"Google's OAuth token endpoint could not be reached ({err})",
                reason="unreachable",
            )
        unanswered = without_answer(push, self.name, err, self.timeout)
        if unanswered is not None:
            return unanswered
        if isinstance(err, PayloadError):
            return result("failed", error=str(err))
        return result("failed", error=f"FCM send failed: {type(err).__name__}: {err}")

    async def aclose(self) -> None:
        """Close the pooled connections (the sends' and the token endpoint's)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._token.close()
