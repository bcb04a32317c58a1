"""A local Firebase Cloud Messaging server (HTTP v1) with its OAuth token endpoint.

:class:`FakeFCM` answers the two requests a real FCM sender makes:

* ``POST /token``: google-auth's JWT-bearer grant. The assertion must be signed
  with the key of a service account this fake issued (:meth:`FakeFCM.service_account`),
  name that account as ``iss``, be short-lived and ask for the Firebase Messaging
  scope. The answer is an access token, as Google's token endpoint gives.
* ``POST /v1/projects/<project>/messages:send``: the send itself. It checks the
  bearer token, that the project is the service account's, and that the body is
  a valid v1 request, and answers with FCM's own error shapes.

Use it with flask-push by setting ``PUSH_FCM_CREDENTIALS`` to
``fake.service_account()`` and ``PUSH_FCM_BASE_URL`` to ``fake.base_url``, or
with pyfcm directly by setting ``FCM_END_POINT_BASE`` on the instance::

    with FakeFCM() as fake:
        info = fake.service_account()
        credentials = service_account.Credentials.from_service_account_info(
            info, scopes=[FCM_SCOPE]
        )
        client = FCMNotification(credentials=credentials)
        client.FCM_END_POINT_BASE = fake.endpoint_base
        client.notify(fcm_token=make_registration_token(), notification_title="Hi")
        assert fake.messages[0].notification == {"title": "Hi"}

Failures are scripted with :meth:`FakeFCM.fail_next` and :meth:`FakeFCM.unregister`.
The fake is a little stricter than FCM where FCM's rules are documented but loose
(for example it rejects an Android ``ttl`` over four weeks).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BufferedIOBase
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..validation import digits
from ._http import BodyRefused, HTTPAnswer, HTTPFakeService, HTTPRequest
from .service import ScriptedFailure

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "FCM_SCOPE",
    "FakeFCM",
    "IssuedToken",
    "ReceivedMessage",
    "make_registration_token",
]

#: the OAuth scope an FCM sender asks for (pyfcm's only scope)
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: the broad Google Cloud scope, which FCM accepts too (firebase-admin asks for it)
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: google-auth signs every assertion for Google's token endpoint, whatever the
#: service account's ``token_uri`` says, so these audiences are accepted as well
#: as the fake's own ``/token`` URL.
GOOGLE_TOKEN_AUDIENCES = (
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
)
#: seconds an access token lives, as Google's
TOKEN_LIFETIME = 3600
#: the longest Android ``ttl`` FCM documents (four weeks)
MAX_TTL_SECONDS = 28 * 24 * 3600
#: the shape of a registration token: base64url with ':' (Firebase's are about 160 chars)
REGISTRATION_TOKEN = re.compile(r"^[A-Za-z0-9_\-:.]{32,512}\Z")
TOPIC_NAME = re.compile(r"^(/topics/)?[A-Za-z0-9\-_.~%]{1,900}\Z")

_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"

# Google's canonical status name for an HTTP status.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# What FCM says for each of its error codes.
_ERROR_MESSAGES = {
    "INVALID_ARGUMENT": "Request contains an invalid argument.",
    "UNREGISTERED": "Requested entity was not found.",
    "SENDER_ID_MISMATCH": "SenderId mismatch",
    "QUOTA_EXCEEDED": "Quota exceeded for quota metric 'Messages sent'.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
    "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
    "UNSPECIFIED_ERROR": "Unknown error.",
}


def make_registration_token() -> str:
    """A fresh token in the shape of a Firebase registration token."""
    return f"{secrets.token_urlsafe(16)[:22]}:APA91b{secrets.token_urlsafe(105)}"


@dataclass(frozen=True)
class ReceivedMessage:
    """A message FCM accepted: what the sender put in ``{"message": ...}``."""

    #: ``projects/<project>/messages/<id>``, as answered to the sender
    name: str
    project_id: str
    #: the target: exactly one of ``token``, ``topic`` and ``condition`` is set
    token: str | None
    topic: str | None
    condition: str | None
    #: the whole ``message`` object as received
    message: dict[str, Any]
    #: the bearer token the send carried (one that ``/token`` issued)
    access_token: str
    #: ``time.time()`` when it arrived
    received_at: float

    @property
    def notification(self) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", self.message.get("notification"))

    @property
    def data(self) -> dict[str, str] | None:
        return cast("dict[str, str] | None", self.message.get("data"))

    @property
    def android(self) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", self.message.get("android"))

    @property
    def apns(self) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", self.message.get("apns"))

    @property
    def webpush(self) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", self.message.get("webpush"))


@dataclass(frozen=True)
class IssuedToken:
    """An access token ``/token`` gave out."""

    access_token: str
    client_email: str
    project_id: str
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class _Account:
    client_email: str
    project_id: str
    private_key_id: str
    public_key: rsa.RSAPublicKey


@dataclass
class _Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def http(self) -> HTTPAnswer:
        content_type = {"Content-Type": "application/json; charset=UTF-8"}
        return HTTPAnswer(self.status, json.dumps(self.body).encode(), content_type | self.headers)


class _Invalid(Exception):
    """A request field FCM would reject."""

    def __init__(self, path: str, description: str, message: str | None = None) -> None:
        super().__init__(description)
        self.path = path
        self.description = description
        self.message = message or f"Invalid value at '{path}': {description}"


def _google_error(
    status: int, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def _fcm_error(status: int, error_code: str, message: str | None = None) -> dict[str, Any]:
    """FCM's error body: Google's error with an ``FcmError`` detail."""
    text = message or _ERROR_MESSAGES.get(error_code, error_code)
    return _google_error(status, text, [{"@type": _FCM_ERROR_TYPE, "errorCode": error_code}])


def _auth_error(message: str, reason: str) -> _Reply:
    detail = {"@type": _ERROR_INFO_TYPE, "reason": reason, "domain": "googleapis.com"}
    return _Reply(401, _google_error(401, message, [detail]))


def _oauth_error(error: str, description: str) -> _Reply:
    return _Reply(400, {"error": error, "error_description": description})


def _not_found(path: str) -> _Reply:
    return _Reply(404, _google_error(404, f"The requested URL {path} was not found."))


# -- The v1 message schema ----------------------------------------------------
#
# Protobuf's JSON mapping accepts a field by its proto name (collapse_key) or by
# its JSON name (collapseKey), and takes null as "not set". Each check gets the
# value and its path for the error message.

_Check = Callable[[Any, str], None]


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda match: "_" + match.group().lower(), name)


def _string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _Invalid(path, f"expected a string, got {json.dumps(value)}")


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _Invalid(path, f"expected a boolean, got {json.dumps(value)}")


def _integer(value: Any, path: str) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok and not (isinstance(value, str) and re.fullmatch(r"-?\d+", value)):
        raise _Invalid(path, f"expected an integer, got {json.dumps(value)}")


def _struct(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected an object, got {json.dumps(value)}")


def _string_list(value: Any, path: str) -> None:
    if not isinstance(value, list):
        raise _Invalid(path, f"expected a list of strings, got {json.dumps(value)}")
    for index, item in enumerate(value):
        _string(item, f"{path}[{index}]")


def _string_map(value: Any, path: str) -> None:
    _struct(value, path)
    for key, item in value.items():
        if not isinstance(item, str):
            raise _Invalid(
                f"{path}[{key}]",
                f"map values must be strings, got {json.dumps(item)}",
            )


def _data(value: Any, path: str) -> None:
    _string_map(value, path)
    for key in value:
        lowered = key.lower()
        if lowered in ("from", "message_type") or lowered.startswith(("google", "gcm")):
            raise _Invalid(path, f"Invalid data payload key: {key}")


def _enum(*names: str) -> _Check:
    def check(value: Any, path: str) -> None:
        if value not in names:
            raise _Invalid(path, f"{json.dumps(value)} is not one of {', '.join(names)}")

    return check


def _pattern(regex: str, what: str) -> _Check:
    compiled = re.compile(regex)

    def check(value: Any, path: str) -> None:
        _string(value, path)
        if not compiled.fullmatch(value):
            raise _Invalid(path, f"{json.dumps(value)} is not {what}")

    return check


_duration_text = _pattern(r"-?\d+(\.\d{1,9})?s", 'a duration such as "3600s"')


def _ttl(value: Any, path: str) -> None:
    _duration_text(value, path)
    seconds = float(value[:-1])
    if seconds < 0:
        raise _Invalid(path, "ttl must not be negative")
    if seconds > MAX_TTL_SECONDS:
        raise _Invalid(path, f"ttl must be at most {MAX_TTL_SECONDS}s (four weeks)")


def _durations(value: Any, path: str) -> None:
    if not isinstance(value, list):
        raise _Invalid(path, f"expected a list of durations, got {json.dumps(value)}")
    for index, item in enumerate(value):
        _duration_text(item, f"{path}[{index}]")


def _object(fields: Mapping[str, _Check]) -> _Check:
    def check(value: Any, path: str) -> None:
        _struct(value, path)
        for key, item in value.items():
            name = _snake(key)
            where = f"{path}.{key}" if path else key
            if name not in fields:
                at = f" at '{path}'" if path else ""
                raise _Invalid(
                    where,
                    "Cannot find field.",
                    f"Invalid JSON payload received. Unknown name {json.dumps(key)}{at}: "
                    "Cannot find field.",
                )
            if item is not None:
                fields[name](item, where)

    return check


_timestamp = _pattern(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})",
    "an RFC 3339 timestamp",
)
_color = _pattern(r"#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", "a color in #rrggbb form")

_notification = _object({"title": _string, "body": _string, "image": _string})

_android_notification = _object(
    {
        "title": _string,
        "body": _string,
        "icon": _string,
        "color": _color,
        "sound": _string,
        "tag": _string,
        "click_action": _string,
        "body_loc_key": _string,
        "body_loc_args": _string_list,
        "title_loc_key": _string,
        "title_loc_args": _string_list,
        "channel_id": _string,
        "ticker": _string,
        "sticky": _boolean,
        "event_time": _timestamp,
        "local_only": _boolean,
        "notification_priority": _enum(
            "PRIORITY_UNSPECIFIED",
            "PRIORITY_MIN",
            "PRIORITY_LOW",
            "PRIORITY_DEFAULT",
            "PRIORITY_HIGH",
            "PRIORITY_MAX",
        ),
        "default_sound": _boolean,
        "default_vibrate_timings": _boolean,
        "default_light_settings": _boolean,
        "vibrate_timings": _durations,
        "visibility": _enum("VISIBILITY_UNSPECIFIED", "PRIVATE", "PUBLIC", "SECRET"),
        "notification_count": _integer,
        "light_settings": _struct,
        "image": _string,
        "bypass_proxy_notification": _boolean,
        "proxy": _enum("PROXY_UNSPECIFIED", "ALLOW", "DENY", "IF_PRIORITY_LOWERED"),
    }
)

_android = _object(
    {
        "collapse_key": _string,
        "priority": _enum("NORMAL", "HIGH"),
        "ttl": _ttl,
        "restricted_package_name": _string,
        "data": _data,
        "notification": _android_notification,
        "fcm_options": _object({"analytics_label": _string}),
        "direct_boot_ok": _boolean,
        "bandwidth_constrained_ok": _boolean,
        "restricted_satellite_ok": _boolean,
    }
)

_apns = _object(
    {
        "headers": _string_map,
        "payload": _struct,
        "fcm_options": _object({"analytics_label": _string, "image": _string}),
        "live_activity_token": _string,
    }
)

_webpush = _object(
    {
        "headers": _string_map,
        "data": _string_map,
        "notification": _struct,
        "fcm_options": _object(
            {
                "link": _pattern(r"https://.+", "an https URL"),
                "analytics_label": _string,
            }
        ),
    }
)

_message = _object(
    {
        "name": _string,
        "token": _string,
        "topic": _string,
        "condition": _string,
        "data": _data,
        "notification": _notification,
        "android": _android,
        "apns": _apns,
        "webpush": _webpush,
        "fcm_options": _object({"analytics_label": _string}),
    }
)

_request = _object({"message": _struct, "validate_only": _boolean})


@functools.cache
def _account_key() -> rsa.RSAPrivateKey:
    """The RSA key of every service account the fakes make in this process.

    Making an RSA-2048 key takes about 80 ms, and a suite makes an account for each
    app it points at a fake. The fake tells accounts apart by their email and key
    id, as Google does; a test of a key Google does not know makes one of its own.
    """
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeFCM(HTTPFakeService[ReceivedMessage]):
    """A local FCM HTTP v1 server and OAuth token endpoint, in a background thread.

    Start it with :meth:`start` or ``with FakeFCM() as fake:``; it listens on
    127.0.0.1 on a free port and serves each connection in its own thread.
    ``delay`` (seconds) is slept before answering each send, for benchmarks; it
    may be changed while running, and :meth:`hold` keeps sends unanswered until
    :meth:`release`. With ``check_tokens`` (the default), a registration token
    that is not in FCM's shape gets 400 INVALID_ARGUMENT.
    """

    noun = "messages"
    server_version = "FakeFCM"

    def __init__(self, delay: float = 0.0, *, check_tokens: bool = True) -> None:
        super().__init__(delay=delay)
        self.check_tokens = check_tokens
        self._accounts: dict[str, _Account] = {}
        self._account_numbers = itertools.count(1)
        self._tokens: dict[str, IssuedToken] = {}
        self._expired: set[str] = set()
        self._unregistered: set[str] = set()
        self._send_attempts = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the value for ``PUSH_FCM_BASE_URL``."""
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint_base(self) -> str:
        """``<base_url>/v1/projects``: the value for pyfcm's ``FCM_END_POINT_BASE``."""
        return f"{self.base_url}/v1/projects"

    @property
    def token_uri(self) -> str:
        """``<base_url>/token``: the OAuth token endpoint."""
        return f"{self.base_url}/token"

    # -- credentials -----------------------------------------------------------

    def service_account(self, project_id: str = "flask-push-test") -> dict[str, str]:
        """A new service-account key file's content, for ``project_id``.

        The account's email and key id are new; its RSA key is the one all the fakes'
        accounts in this process share. The fake keeps the public half to check the
        assertions signed with it, and ``token_uri`` points at this fake.
        """
        token_uri = self.token_uri
        key = _account_key()
        private_key_id = secrets.token_hex(20)
        with self._cond:
            number = next(self._account_numbers)
            email = f"fcm-sender-{number}@{project_id}.iam.gserviceaccount.com"
            self._accounts[email] = _Account(email, project_id, private_key_id, key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        quoted = urllib.parse.quote(email)
        return {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": private_key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**21)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{quoted}",
            "universe_domain": "googleapis.com",
        }

    def app_config(self, project_id: str = "flask-push-test") -> dict[str, Any]:
        """The ``PUSH_*`` keys that point an app's FCM provider at this service: a
        fresh service account whose ``token_uri`` is this fake, its base URL, and
        ``PUSH_SUPPRESS_SEND = False`` (an app aimed at a fake means to send to it).

        Pass them to your app before ``init_app``: config is read once there.
        """
        return {
            "PUSH_FCM_CREDENTIALS": self.service_account(project_id),
            "PUSH_FCM_BASE_URL": self.base_url,
            "PUSH_SUPPRESS_SEND": False,
        }

    # -- scripting -------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        error_code: str,
        *,
        token: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` valid sends (to ``token``, if given) with an error.

        ``error_code`` is FCM's (``QUOTA_EXCEEDED``, ``UNAVAILABLE``, ``INTERNAL``,
        ``UNREGISTERED``, ``SENDER_ID_MISMATCH``, ``THIRD_PARTY_AUTH_ERROR``...);
        ``retry_after`` adds a ``Retry-After`` header (seconds). Scripted failures
        are used in the order they were added.
        """
        failure = ScriptedFailure(status, error_code, retry_after, message)
        self._script_failure(failure, target=token, times=times)

    def unregister(self, token: str) -> None:
        """Make later sends to ``token`` fail with 404 UNREGISTERED (an uninstalled app)."""
        with self._cond:
            self._unregistered.add(token)

    def expire_tokens(self) -> None:
        """Expire every access token issued so far (sends get 401 ACCESS_TOKEN_EXPIRED)."""
        with self._cond:
            self._expired.update(self._tokens)

    def reset(self) -> None:
        """Forget messages, scripted failures, unregistered tokens and the attempt count.

        Service accounts and issued access tokens stay valid.
        """
        with self._cond:
            super().reset()
            self._unregistered.clear()
            self._send_attempts = 0

    # -- what arrived ----------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The messages accepted so far, oldest first (a copy)."""
        return self._recorded()

    @property
    def issued_tokens(self) -> list[IssuedToken]:
        """The access tokens ``/token`` issued, oldest first."""
        with self._cond:
            return list(self._tokens.values())

    @property
    def send_attempts(self) -> int:
        """Every request to ``messages:send`` so far, failed ones included."""
        with self._cond:
            return self._send_attempts

    # -- request handling (called from the server's threads) -------------------

    def _read_body(self, request: HTTPRequest, stream: BufferedIOBase) -> bytes:
        length = request.header("Content-Length")
        if length is None or not digits(length):
            error = _google_error(411, "Content-Length is required.")
            raise BodyRefused(_Reply(411, error).http())
        return stream.read(int(length))

    def _answer(self, request: HTTPRequest) -> HTTPAnswer:
        path = urllib.parse.unquote(urllib.parse.urlsplit(request.path).path)
        if request.method != "POST":
            reply = _not_found(request.path)
        elif path == "/token":
            reply = self._token(request.body)
        elif match := re.fullmatch(r"/v1/projects/([^/]+)/messages:send", path):
            with self._cond:
                self._send_attempts += 1
            with self._answering() as land:
                authorization = request.header("Authorization")
                reply = self._send(match.group(1), authorization, request.body, land)
        else:
            reply = _not_found(path)
        return reply.http()

    def _token(self, body: bytes) -> _Reply:
        try:
            form = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return _oauth_error("invalid_request", "The body must be form-encoded.")
        grant_type = form.get("grant_type", [""])[0]
        if grant_type != JWT_BEARER_GRANT:
            return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        assertion = form.get("assertion", [""])[0]
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as err:
            return _oauth_error("invalid_grant", f"Invalid JWT: {err}")
        with self._cond:
            account = self._accounts.get(str(unverified.get("iss")))
        if account is None:
            return _oauth_error("invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256" or header.get("kid", account.private_key_id) != (
            account.private_key_id
        ):
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        short_lived = (
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
            "timeframe. Check your iat and exp values in the JWT claim."
        )
        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=[self.token_uri, *GOOGLE_TOKEN_AUDIENCES],
                issuer=account.client_email,
                options={"require": ["iss", "aud", "iat", "exp"]},
                leeway=10,
            )
        except jwt.InvalidSignatureError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
            return _oauth_error("invalid_grant", short_lived)
        except jwt.InvalidAudienceError:
            return _oauth_error(
                "invalid_grant",
                f"Invalid JWT: Failed audience check. The right audience is "
                f"{GOOGLE_TOKEN_AUDIENCES[0]}",
            )
        except jwt.PyJWTError as err:
            return _oauth_error("invalid_grant", f"Invalid JWT: {err}")
        if int(claims["exp"]) - int(claims["iat"]) > TOKEN_LIFETIME:
            return _oauth_error("invalid_grant", short_lived)
        scope = claims.get("scope")
        scopes = tuple(scope.split()) if isinstance(scope, str) else ()
        if FCM_SCOPE not in scopes and CLOUD_PLATFORM_SCOPE not in scopes:
            return _oauth_error(
                "invalid_scope", "Invalid OAuth scope or ID token audience provided."
            )
        now = time.time()
        issued = IssuedToken(
            access_token=f"ya29.fake-{secrets.token_urlsafe(48)}",
            client_email=account.client_email,
            project_id=account.project_id,
            scopes=scopes,
            issued_at=now,
            expires_at=now + TOKEN_LIFETIME,
        )
        with self._cond:
            self._tokens[issued.access_token] = issued
        body_out = {
            "access_token": issued.access_token,
            "expires_in": TOKEN_LIFETIME,
            "token_type": "Bearer",
        }
        return _Reply(200, body_out, {"Cache-Control": "no-cache, no-store, max-age=0"})

    def _send(
        self, project: str, authorization: str | None, body: bytes, land: Callable[[], None]
    ) -> _Reply:
        scheme, _, access_token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not access_token.strip():
            return _auth_error(
                "Request is missing required authentication credential. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential.",
                "CREDENTIALS_MISSING",
            )
        access_token = access_token.strip()
        with self._cond:
            issued = self._tokens.get(access_token)
            expired = access_token in self._expired
        if issued is None:
            return _auth_error(
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            )
        if expired or issued.expires_at < time.time():
            return _auth_error(
                "Request had invalid authentication credentials. The access token expired.",
                "ACCESS_TOKEN_EXPIRED",
            )
        if project != issued.project_id:
            return _Reply(403, _fcm_error(403, "SENDER_ID_MISMATCH"))

        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _Reply(400, _fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload."))
        try:
            message = self._validate(request)
        except _Invalid as err:
            error = _fcm_error(400, "INVALID_ARGUMENT", err.message)
            error["error"]["details"].append(
                {
                    "@type": _BAD_REQUEST_TYPE,
                    "fieldViolations": [{"field": err.path, "description": err.description}],
                }
            )
            return _Reply(400, error)

        token = message.get("token")
        with self._cond:
            failure = self._take_failure(token)
            unregistered = token is not None and token in self._unregistered
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            error = _fcm_error(failure.status, failure.reason or "", failure.message)
            return _Reply(failure.status, error, headers)
        if unregistered:
            return _Reply(404, _fcm_error(404, "UNREGISTERED"))

        if request.get("validate_only") is True:
            # A dry run: FCM answers with a fixed name and delivers nothing.
            return _Reply(200, {"name": f"projects/{project}/messages/fake_message_id"})
        name = f"projects/{project}/messages/0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"
        received = ReceivedMessage(
            name=name,
            project_id=project,
            token=token,
            topic=message.get("topic"),
            condition=message.get("condition"),
            message=message,
            access_token=access_token,
            received_at=time.time(),
        )
        with self._cond:
            self._record(received)
            land()  # answered and recorded in one moment
        return _Reply(200, {"name": name})

    def _validate(self, request: Any) -> dict[str, Any]:
        """Check a send request's body like FCM does; return its message."""
        if not isinstance(request, dict):
            raise _Invalid("", "the body must be a JSON object", "Invalid JSON payload received.")
        _request(request, "")
        message = request.get("message")
        if message is None:
            raise _Invalid(
                "message", "message is required", "Request contains an invalid argument."
            )
        _message(message, "message")
        targets = [key for key in ("token", "topic", "condition") if message.get(key) is not None]
        if len(targets) != 1:
            raise _Invalid(
                "message",
                "exactly one of token, topic and condition must be set",
                "Exactly one of token, topic or condition must be specified.",
            )
        token = message.get("token")
        if token is not None and (
            not token or (self.check_tokens and not REGISTRATION_TOKEN.match(token))
        ):
            raise _Invalid(
                "message.token",
                "Invalid registration token",
                "The registration token is not a valid FCM registration token",
            )
        topic = message.get("topic")
        if topic is not None and not TOPIC_NAME.match(topic):
            raise _Invalid("message.topic", "Invalid topic name", "Invalid topic name.")
        if message.get("condition") == "":
            raise _Invalid("message.condition", "Invalid condition", "Invalid condition.")
        return cast("dict[str, Any]", message)
