"""Firebase Cloud Messaging, HTTP v1, through pyfcm.

How a :class:`~flask_push.message.Notification` becomes a v1 message
(``{"message": {...}}`` posted to ``<base>/v1/projects/<project>/messages:send``):

=================  ==============================================================
Notification       v1 message
=================  ==============================================================
target token       ``token``
title, body        ``notification.title``, ``notification.body``
image              ``notification.image`` (shown by Android, iOS and browsers)
data               ``data``: every value a string; strings as they are, anything
                   else JSON-encoded (``42`` -> ``"42"``, ``True`` -> ``"true"``)
url                ``data.url``
message id         ``data.messageId`` (and ``data.clickToken`` when the push has one);
                   these three win over ``data`` keys of the same name
ttl                ``android.ttl`` as ``"<seconds>s"``, capped at FCM's four weeks
urgency            ``android.priority``: ``"HIGH"`` for ``high``, else ``"NORMAL"``
collapse_key       ``android.collapse_key``
icon, sound        ``android.notification.icon`` / ``.sound`` (Android resource names)
tag                ``android.notification.tag``; the collapse key when no tag is given,
                   so a newer notification replaces the shown one, as in browsers
badge (int)        ``android.notification.notification_count``; a str badge (a Web Push
                   icon URL) has no Android counterpart and is left out
=================  ==============================================================

``url`` does not become ``android.notification.click_action``: that field names an
Android intent action, not a link, and an action no activity handles makes the tap
do nothing. The app opens ``data.url`` itself.

pyfcm is synchronous (requests), so each send runs in a bounded thread pool. Its
client is adapted for a worker (see :class:`_Client`): one attempt per send, never
a sleep, a timeout on every request, and one access token shared by all threads.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar
from urllib.parse import quote

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from pyfcm import FCMNotification
from pyfcm.errors import (
    AuthenticationError,
    FCMNotRegisteredError,
    FCMSenderIdMismatchError,
    FCMServerError,
    InvalidDataError,
)
from requests.adapters import HTTPAdapter
from urllib3 import Retry

from ..errors import PayloadError
from ..message import DeliveryResult, DeviceTarget, Notification, OutgoingPush
from .base import Provider, retry_after_seconds

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
#: requests' errors that say nothing about the message: try again later
_UNREACHABLE = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)


class _NotSent(Exception):
    """The push never left this process (it is exiting): it stays for a worker."""


class _TryLater(Exception):
    """FCM answered 429, 5xx or with a ``Retry-After``: our retry logic decides when."""

    def __init__(self, status_code: int, retry_after: float | None, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.retry_after = retry_after
        self.detail = detail


def _fcm_error(text: str) -> tuple[str | None, str, list[str]]:
    """(errorCode, message, fields in violation) from an FCM error body, as far as it has them."""
    try:
        error = json.loads(text)["error"]
        message = str(error.get("message", ""))
        details = [d for d in error.get("details", []) if isinstance(d, dict)]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, text.strip()[:300], []
    code = next((str(d["errorCode"]) for d in details if "errorCode" in d), None)
    fields = [
        str(violation.get("field"))
        for detail in details
        for violation in detail.get("fieldViolations", [])
        if isinstance(violation, dict)
    ]
    return code or error.get("status"), message, fields


def _describe(response: requests.Response) -> str:
    code, message, _ = _fcm_error(response.text)
    return (
        " ".join(filter(None, ["FCM answered", str(response.status_code), code])) + f": {message}"
    )


class _Client(FCMNotification):  # type: ignore[misc]  # pyfcm is untyped
    """pyfcm's client, made fit for a worker thread pool.

    pyfcm as shipped sleeps for any ``Retry-After`` and recurses without limit,
    retries 502/503 inside urllib3, refreshes the OAuth token once per thread,
    and prefers the credentials' project over the one it is given. Here a send
    is one POST with a timeout, retryable answers are raised for the caller to
    schedule, the token is shared, and the configured project is used.
    """

    def __init__(
        self,
        *,
        credentials: service_account.Credentials,
        project_id: str,
        base_url: str,
        timeout: float,
        pool_size: int,
    ) -> None:
        # No urllib3 retries and no Retry-After sleeps: a worker must answer within
        # its deadline and let dispatch reschedule. One adapter is shared by the
        # per-thread sessions, so its pool is the keep-alive pool of all threads.
        adapter = HTTPAdapter(
            pool_connections=2,
            pool_maxsize=pool_size,
            max_retries=Retry(total=0, raise_on_status=False, respect_retry_after_header=False),
        )
        super().__init__(credentials=credentials, project_id=project_id, adapter=adapter)
        self.FCM_END_POINT_BASE = f"{base_url}/v1/projects"
        self._end_point = f"{self.FCM_END_POINT_BASE}/{quote(project_id, safe='')}/messages:send"
        self.timeout = timeout
        self._token_lock = threading.Lock()
        self._refused: tuple[float, google.auth.exceptions.RefreshError] | None = None
        self._token_session = requests.Session()
        self._token_request = google.auth.transport.requests.Request(self._token_session)

    @property
    def fcm_end_point(self) -> str:
        # pyfcm takes the credentials' project_id over the configured one.
        return self._end_point

    def _get_access_token(self) -> str:
        """The shared access token, fetched when google-auth says it is stale.

        pyfcm refreshes on every new thread and wraps failures in InvalidDataError;
        here one token serves every thread, and google-auth's own errors pass
        through so that a transient one can be told from refused credentials.
        """
        with self._token_lock:
            if self.credentials.valid:
                return str(self.credentials.token)
            if self._refused is not None and time.monotonic() < self._refused[0]:
                # a fresh exception: re-raising one object from many threads grows its traceback
                raise google.auth.exceptions.RefreshError(  # type: ignore[no-untyped-call]
                    *self._refused[1].args
                )
            try:
                # google-auth's default timeout is 120 s: bound it like the sends.
                self.credentials.refresh(partial(self._token_request, timeout=self.timeout))
            except google.auth.exceptions.RefreshError as err:
                if not err.retryable:
                    self._refused = (time.monotonic() + _REFUSAL_MEMORY, err)
                raise
            self._refused = None
            return str(self.credentials.token)

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            if self.credentials.token == token:
                self.credentials.token = None

    def _post(self, payload: bytes) -> tuple[str, requests.Response]:
        token = self._get_access_token()
        response = self.requests_session.post(
            self.fcm_end_point,
            data=payload,
            headers={"Authorization": f"Bearer {token}"},
            timeout=self.timeout,
        )
        return token, response

    def send_request(self, payload: bytes, timeout: Any = None) -> requests.Response:
        """One POST (two when the token expired early); raises :class:`_TryLater`.

        ``timeout`` is pyfcm's argument, ignored: the provider's timeout applies.
        """
        token, response = self._post(payload)
        if self._is_access_token_expired(response):
            # FCM says the token expired although google-auth thought it fresh
            # (clock skew, revocation): fetch another and try once more, at once.
            response.close()
            self._forget_token(token)
            token, response = self._post(payload)
        status = response.status_code
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        # 429 QUOTA_EXCEEDED, 500 INTERNAL, 503 UNAVAILABLE are FCM's "back off and
        # retry"; any error that names a Retry-After is a "come back later" too.
        if status == 429 or status >= 500 or (status >= 400 and retry_after is not None):
            raise _TryLater(status, retry_after, _describe(response))
        return response

    def close(self) -> None:
        """Close the pooled connections (the token session's and the sends')."""
        self._token_session.close()
        self.custom_adapter.close()


class FCMProvider(Provider):
    """Sends to Android (and Firebase iOS) apps through FCM HTTP v1.

    :param credentials: the service-account key (the parsed JSON).
    :param project_id: the Firebase project; it wins over the key's ``project_id``.
    :param base_url: the origin requests go to.
    :param concurrency: sends in flight at once, one worker thread each.
    :param timeout: seconds for each request (the send and the token fetch).

    .. versionadded:: 0.1
    """

    name: ClassVar[str] = "fcm"
    #: FCM's limit on a message's notification and data
    max_payload: ClassVar[int] = 4000

    def __init__(
        self,
        *,
        credentials: Mapping[str, Any],
        project_id: str,
        base_url: str = "https://fcm.googleapis.com",
        concurrency: int = 50,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout)
        self.project_id = project_id
        # Parses the key only: the token is fetched on the first send.
        from_info = service_account.Credentials.from_service_account_info
        google_credentials = from_info(  # type: ignore[no-untyped-call]
            dict(credentials), scopes=[FCM_SCOPE]
        )
        self._client = _Client(
            credentials=google_credentials,
            project_id=project_id,
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            pool_size=concurrency,
        )
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **options: Any) -> FCMProvider:
        """Build from :data:`flask_push.credentials.FCM` settings (no network).

        ``options`` are the constructor's ``concurrency`` and ``timeout``.
        """
        return cls(
            credentials=settings["credentials"],
            project_id=settings["projectId"],
            base_url=settings.get("baseUrl") or "https://fcm.googleapis.com",
            **options,
        )

    # -- the message -----------------------------------------------------------

    def _data(
        self, notification: Notification, message_id: str, click_token: str | None
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
        return data

    def _notify_arguments(
        self, notification: Notification, token: str, message_id: str, click_token: str | None
    ) -> dict[str, Any]:
        """pyfcm's ``notify()`` arguments for one push."""
        android: dict[str, Any] = {
            "ttl": f"{min(max(notification.ttl, 0), MAX_TTL)}s",
            "priority": "HIGH" if notification.urgency == "high" else "NORMAL",
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
            "notification_image": notification.image,
            "data_payload": self._data(notification, message_id, click_token),
            "android_config": android,
        }

    def build_payload(self, push: OutgoingPush) -> bytes:
        """The request body, as pyfcm's ``notify()`` would post it."""
        if not isinstance(push.target, DeviceTarget):
            raise PayloadError("FCM sends to device tokens only", provider=self.name)
        arguments = self._notify_arguments(
            push.notification, push.target.token, push.message_id, push.click_token
        )
        return bytes(self._client.parse_payload(**arguments))

    def payload_size(self, notification: Notification) -> int:
        """UTF-8 bytes of the message's ``notification`` and ``data`` as compact JSON.

        FCM's 4000 bytes count the keys and values of both; JSON's braces, quotes
        and commas are counted too, so the estimate errs on the safe side. The
        message id and click token are the longest they can be.
        """
        arguments = self._notify_arguments(
            notification,
            "token",
            "m" * _LONGEST_MESSAGE_ID,
            "c" * _LONGEST_CLICK_TOKEN,
        )
        message = json.loads(self._client.parse_payload(**arguments))["message"]
        counted = {key: message[key] for key in ("notification", "data") if key in message}
        return len(json.dumps(counted, separators=(",", ":"), ensure_ascii=False).encode())

    # -- sending ---------------------------------------------------------------

    def _send(self, payload: bytes) -> Any:
        # Runs in a pool thread: notify()'s two steps after parse_payload.
        return self._client.parse_response(self._client.send_request(payload))

    async def post(self, push: OutgoingPush, payload: Any) -> Any:
        """Send in the thread pool; requests' own timeout frees the thread if the
        server hangs, whatever asyncio's deadline did to the awaiting task."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="flask-push-fcm"
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._send, payload)
        except RuntimeError as err:
            # The pool refuses work once the interpreter exits: this push never left.
            raise _NotSent(f"not sent, the process is exiting ({err})") from err

    def parse(self, push: OutgoingPush, response: Any) -> DeliveryResult:
        """Map pyfcm's answer or exception onto sent, gone, retry or failed."""
        result = partial(DeliveryResult, push.delivery_id, provider=self.name)
        err = response
        if not isinstance(err, BaseException):
            return result("sent", status_code=200)
        if isinstance(err, _NotSent):
            return result("retry", error=str(err))
        if isinstance(err, _TryLater):
            return result(
                "retry", error=err.detail, status_code=err.status_code, retry_after=err.retry_after
            )
        if isinstance(err, FCMNotRegisteredError):
            # 404 UNREGISTERED: the app was uninstalled or the token rotated.
            return result(
                "gone", error="FCM: the registration token is unregistered", status_code=404
            )
        if isinstance(err, InvalidDataError):
            # 400 INVALID_ARGUMENT covers both a malformed token and a bad message;
            # only the first means the installation is dead.
            code, message, fields = _fcm_error(str(err))
            bad_token = (
                "message.token" in fields or "not a valid fcm registration token" in message.lower()
            )
            text = f"FCM answered 400 {code or 'INVALID_ARGUMENT'}: {message}"
            return result("gone" if bad_token else "failed", error=text, status_code=400)
        if isinstance(err, FCMSenderIdMismatchError):
            # pyfcm raises this for every 403: SENDER_ID_MISMATCH (the token belongs
            # to another Firebase project) and PERMISSION_DENIED (the service account
            # may not send). Both are usually a configuration mistake that hits every
            # token alike, so the installations are kept: "gone" would wipe them all.
            return result(
                "failed",
                error=(
                    f"FCM answered 403: the token was registered with a Firebase project "
                    f"other than {self.project_id!r}, or the service account may not send "
                    "for it. Check PUSH_FCM_PROJECT_ID and PUSH_FCM_CREDENTIALS."
                ),
                status_code=403,
            )
        if isinstance(err, AuthenticationError):
            return result(
                "failed",
                error=(
                    "FCM refused the sender's credentials (401). Check that "
                    "PUSH_FCM_CREDENTIALS is a current service-account key of project "
                    f"{self.project_id!r} with the Firebase Cloud Messaging API enabled."
                ),
                status_code=401,
            )
        if isinstance(err, google.auth.exceptions.RefreshError):
            if err.retryable:
                return result("retry", error=f"FCM token endpoint: {err}")
            return result(
                "failed",
                error=(
                    f"The OAuth token endpoint refused the FCM credentials: {err}. "
                    "Check PUSH_FCM_CREDENTIALS (the key may be deleted or disabled)."
                ),
            )
        if isinstance(err, google.auth.exceptions.TransportError):
            return result("retry", error=f"FCM token endpoint unreachable: {err}")
        if isinstance(err, _UNREACHABLE):
            return result("retry", error=f"FCM unreachable: {type(err).__name__}: {err}")
        if isinstance(err, FCMServerError):
            # 429 and 5xx were raised as _TryLater: this is an unexpected 4xx or an empty 200.
            return result("failed", error=f"FCM: {err}")
        if isinstance(err, PayloadError):
            return result("failed", error=str(err))
        return result("failed", error=f"FCM send failed: {type(err).__name__}: {err}")

    async def aclose(self) -> None:
        """Stop the worker threads, then close the pooled connections."""
        executor, self._executor = self._executor, None
        if executor is not None:
            # A thread may still be in a request asyncio gave up on; its requests
            # timeout bounds the wait, which runs off the event loop. At interpreter
            # exit no executor takes that wait any more: then the threads are left
            # to end by themselves.
            try:
                await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
            except RuntimeError:
                executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()
