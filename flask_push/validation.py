"""Checks for untrusted input, shared by the Python API and the HTTP API.

Each check returns the normalized value or raises
:class:`~flask_push.errors.ValidationError` naming the field.
"""

from __future__ import annotations

import binascii
import fnmatch
import functools
import ipaddress
import math
import re
import zoneinfo
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid.utils import b64urldecode
from yarl import URL

from .errors import ValidationError

MAX_ENDPOINT_LENGTH = 2048
#: what a name is made of: a topic's, an inbox item's id, an inbox item's type
NAME_CHARACTERS = r"[A-Za-z0-9_.:\-]"
NAME = re.compile(rf"^{NAME_CHARACTERS}{{1,64}}\Z")
#: the most topics one subscription or installation holds (``PUSH_MAX_TOPICS``)
MAX_TOPICS = 20
#: JSON nested deeper is refused: no field needs it, and Python's recursion limit
#: (which parsing, storing and answering all run into) is not far beyond
MAX_JSON_DEPTH = 64
# Hosts that are only ever this machine, whatever DNS says.
_LOOPBACK_NAMES = ("localhost", "*.localhost", "localhost.localdomain")
# What a URI is made of (RFC 3986): printable ASCII without spaces. Browsers
# serialize PushSubscription.endpoint so; anything else is someone's trick.
_URI_CHARS = re.compile(r"[\x21-\x7e]+\Z")
# A label of a host name: ASCII letters, digits and inner hyphens (RFC 1123),
# so a PUSH_ENDPOINT_HOSTS wildcard can only ever stand for these characters.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# The WHATWG URL standard's "ends in a number": browsers and the system
# resolver read such a host as an IPv4 address (127.1, 0x7f.0.0.1, 2130706433).
_NUMBER = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)\Z")
# What a PUSH_ENDPOINT_HOSTS entry that is not an IP address may contain.
_PATTERN = re.compile(r"[a-z0-9.*?!\[\]-]+\Z")


def digits(text: str) -> bool:
    """Is ``text`` ASCII digits only, as ``int()`` reads them? ``str.isdigit()`` alone
    also takes "²" (which ``int()`` refuses) and "١" (which it reads)."""
    return text.isascii() and text.isdigit()


#: characters of a name the client chose (a key, a query parameter) that an error
#: quotes back: enough to recognise it, and an error never grows with the request
MAX_ECHOED = 100


def clipped(name: str) -> str:
    """``name`` as an error quotes it: at most :data:`MAX_ECHOED` characters."""
    return name if len(name) <= MAX_ECHOED else f"{name[: MAX_ECHOED - 1]}…"


def text(
    value: Any, field: str, *, max_length: int, required: bool = False, allow_empty: bool = False
) -> str | None:
    """A string of at most ``max_length`` characters, or None when absent and not required."""
    if value is None:
        if required:
            raise ValidationError("is required", field=field, code="required")
        return None
    if not isinstance(value, str):
        raise ValidationError("must be a string", field=field, code="invalid_type")
    if not value and not allow_empty:
        raise ValidationError("must not be empty", field=field, code="invalid_value")
    if not storable(value):
        raise ValidationError(UNSTORABLE, field=field, code="invalid_value")
    if len(value) > max_length:
        raise ValidationError(
            f"must be at most {max_length} characters", field=field, code="too_long"
        )
    return value


#: what a text that :func:`storable` refuses is told
UNSTORABLE = "must not contain NUL or unpaired surrogate characters"


def storable(value: str) -> bool:
    """Can ``value`` be stored and sent as text?

    PostgreSQL refuses NUL in text (and in jsonb), and an unpaired surrogate (which
    JSON's ``"\\ud800"`` parses to) cannot be encoded as UTF-8 at all.
    """
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def topics(value: Any, field: str = "topics", *, max_count: int = MAX_TOPICS) -> list[str]:
    """A list of at most ``max_count`` topic names: letters, digits and ``_ . : -``,
    each up to 64 characters."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > max_count:
        raise ValidationError(
            f"must be a list of at most {max_count} topic names", field=field, code="invalid_value"
        )
    for name in value:
        if not isinstance(name, str) or not NAME.match(name):
            raise ValidationError(
                f"has {name!r}, but topic names are 1-64 letters, digits, '_', '.', ':' or '-'",
                field=field,
                code="invalid_value",
            )
    return sorted(set(value))


def link(value: Any, field: str = "url") -> str | None:
    """A link shown to a user: a same-site path or an http(s) URL, never ``javascript:``."""
    url = text(value, field, max_length=2048)
    if url is None:
        return None
    # Browsers drop tabs and line breaks from a URL before reading it, so
    # "/<tab>/evil.example" opens evil.example: a link holds none of them.
    if any(ord(char) < 0x20 or char == "\x7f" for char in url):
        raise ValidationError(
            "must not contain tabs, line breaks or other control characters",
            field=field,
            code="invalid_url",
        )
    if url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[": an unbalanced IPv6 bracket
        parts = urlsplit("")
    if parts.scheme in ("http", "https") and parts.hostname:
        return url
    raise ValidationError(
        "must be a path such as '/orders/42' or an http(s) URL", field=field, code="invalid_url"
    )


#: ``scheme://host[:port]``: a DNS name or IPv4 address, or an IPv6 one in brackets;
#: one trailing "/" is forgiven (people write origins as URLs), nothing else after
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>[a-z0-9._-]+|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?/?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(value: Any, field: str) -> str:
    """A web origin as browsers write it in ``Origin`` (RFC 6454): ``scheme://host[:port]``,
    lower-case, without the scheme's default port, so that origins compare as strings.

    ``null`` (what sandboxed frames and local files send) is not an origin.
    """
    # isascii first: some non-ASCII letters lower-case to ASCII ones (the Kelvin sign to k)
    ascii_text = isinstance(value, str) and value.isascii()
    match = _ORIGIN.fullmatch(value.lower()) if ascii_text else None
    port = int(match["port"]) if match and match["port"] else None
    if match is None or port == 0 or (port or 0) > 65535:
        raise ValidationError(
            "must be an origin such as 'https://shop.example': a scheme, a host (international "
            "names in their xn-- form) and an optional port, with no path",
            field=field,
            code="invalid_origin",
        )
    scheme, host = match["scheme"], match["host"]
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def time_zone(value: Any, field: str = "timeZone") -> str | None:
    name = text(value, field, max_length=64)
    if name is None:
        return None
    if name not in time_zones():
        raise ValidationError(
            f"must be an IANA time zone such as 'Europe/Paris', got {name!r}",
            field=field,
            code="invalid_value",
        )
    return name


@functools.cache
def time_zones() -> frozenset[str]:
    """The IANA time zones of this server's tz database.

    Only the database's own names: ``zoneinfo`` would also open the files beside
    them (``localtime``, the server's own zone; ``posixrules``; the ``right/`` and
    ``posix/`` copies).
    """
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def json_object(value: Any, field: str) -> dict[str, Any] | None:
    """A JSON object that can be stored and sent (see :func:`json_value`), or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("must be a JSON object", field=field, code="invalid_type")
    json_value(value, field)
    return value


def json_value(value: Any, field: str) -> Any:
    """``value`` if it is JSON that every database and every transport takes as it is.

    At any depth: object keys are strings; strings (keys too) hold no NUL and no
    unpaired surrogate (see :func:`storable`); numbers are finite (``NaN`` is not
    JSON, and PostgreSQL refuses it); nothing but dicts, lists, strings, numbers,
    booleans and None; at most :data:`MAX_JSON_DEPTH` levels. The Python API
    would otherwise write such a value and fail later, when it is sent or shown.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValidationError(
                f"is nested more than {MAX_JSON_DEPTH} levels deep",
                field=field,
                code="invalid_value",
            )
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str) or not storable(key):
                    raise ValidationError(
                        "has an object key that is not a string without NUL or unpaired "
                        "surrogate characters",
                        field=field,
                        code="invalid_value",
                    )
            stack.extend((inner, depth + 1) for inner in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, str):
            if not storable(item):
                raise ValidationError(
                    "has a string with NUL or unpaired surrogate characters",
                    field=field,
                    code="invalid_value",
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValidationError(
                    "has a number that is not finite: NaN and Infinity are not JSON",
                    field=field,
                    code="invalid_value",
                )
        elif item is not None and not isinstance(item, int):  # bool is an int too
            raise ValidationError(
                f"holds a {type(item).__name__}, which is not a JSON value",
                field=field,
                code="invalid_type",
            )
    return value


# -- Web Push subscriptions --------------------------------------------------


def is_special_address(host: str) -> bool:
    """Is ``host`` an IP literal, or a name that always means this machine?"""
    if any(fnmatch.fnmatchcase(host, name) for name in _LOOPBACK_NAMES):
        return True
    if _ends_in_number(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _ends_in_number(host: str) -> bool:
    return bool(_NUMBER.match(host.rstrip(".").rpartition(".")[2]))


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    if is_special_address(host):
        # An IP literal or loopback name only ever passes by being named exactly,
        # so that a wildcard such as "*" can never open the way to 127.0.0.1,
        # 169.254.169.254 (cloud metadata) or the private network.
        return any(host == pattern for pattern in patterns)
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


def endpoint(value: Any, *, allowed_hosts: Iterable[str], allow_http: bool) -> str:
    """A Web Push endpoint our server may later POST to, checked against SSRF.

    :func:`endpoint_url` must accept it, and one of ``allowed_hosts`` (fnmatch
    patterns, port ignored) must match its host; IP literals and loopback names
    only when a pattern names them exactly. The endpoint is returned as given:
    what is stored is exactly what was checked.
    """
    url = text(value, "endpoint", max_length=MAX_ENDPOINT_LENGTH, required=True) or ""
    host = (endpoint_url(url, allow_http=allow_http).raw_host or "").rstrip(".")
    if not host_allowed(host, allowed_hosts):
        raise ValidationError(
            f"points at {host!r}, which is not a known push service; "
            "add it to PUSH_ENDPOINT_HOSTS if it is one",
            field="endpoint",
            code="endpoint_not_allowed",
        )
    return url


def endpoint_url(value: str, *, allow_http: bool) -> URL:
    """``value`` parsed by yarl, as aiohttp parses the URL it connects to.

    The check when a browser subscribes and the connection at delivery both
    use this URL, so they cannot read the host differently. Its host must be
    written as the client will connect to it: yarl turns ``①②⑦.0.0.1`` into
    127.0.0.1 and the system resolver reads ``0x7f.0.0.1`` the same way, and a
    host pattern's ``*`` would match a ``\\`` or a ``%``. So the URL must be
    printable ASCII, and its host either a name of letters, digits and hyphens
    (an internationalized name in its ``xn--`` form) or an IP address in its
    canonical form.

    :raises ValidationError: ``invalid_endpoint``; ``endpoint_not_allowed`` for
        an IP address spelled any other way than its canonical form.
    """
    if not _URI_CHARS.match(value):
        raise _not_a_uri(value)
    try:
        url = URL(value)
        written = urlsplit(value)
        port = written.port  # raises ValueError on a bad port
    except ValueError as err:
        raise _bad_endpoint(f"is not a valid URL ({err})") from err
    schemes = ("https", "http") if allow_http else ("https",)
    if url.scheme not in schemes:
        raise _bad_endpoint(
            "must be an https URL"
            + ("" if allow_http else " (set PUSH_ALLOW_HTTP_ENDPOINTS for a local test service)")
        )
    host = url.raw_host or ""
    if not host or written.username is not None or written.password is not None:
        raise _bad_endpoint("must name a host and carry no user name or password")
    _check_host(host, written.hostname or "", bracketed="[" in written.netloc)
    if port == 0:  # no service listens there; a connection would fail
        raise _bad_endpoint("must not name port 0")
    return url


# Every push re-checks its endpoint, and a fan-out's endpoints share a few hosts:
# the verdict on one host is kept (a refusal raises, and is never cached).
@functools.lru_cache(maxsize=1024)
def _check_host(host: str, written: str, *, bracketed: bool) -> None:
    """Refuse ``host`` (as yarl will connect to it) unless ``written``, the host as
    the endpoint spells it, says the same in its one plain form."""
    if ":" in host or _ends_in_number(host):
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is None or str(ip) != written:
            what = "an IP address written other than in its canonical form (such as 127.0.0.1)"
        elif _is_mapped_or_scoped(ip):
            # ::ffff:7f00:1 is 127.0.0.1 again, and a pattern naming 127.0.0.1
            # must not open it, nor a wildcard the address behind it.
            what = "an IPv4 address written as IPv6, or an address with a zone"
        else:
            return
        raise ValidationError(
            f"points at {written!r}, {what}; no push service is reached that way",
            field="endpoint",
            code="endpoint_not_allowed",
        )
    labels = host.removesuffix(".").split(".")
    if bracketed or written != host or not all(_LABEL.match(label) for label in labels):
        raise _bad_endpoint(
            f"has the host {written!r}, but a push service's host name is ASCII letters, "
            "digits and hyphens, in labels separated by dots"
        )


def _is_mapped_or_scoped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Is ``ip`` an IPv4 address inside IPv6 (another spelling of that IPv4
    address), or a link-local one with a zone (never a push service)?"""
    return isinstance(ip, ipaddress.IPv6Address) and (
        ip.ipv4_mapped is not None or ip.scope_id is not None
    )


def _not_a_uri(value: str) -> ValidationError:
    if any(char.isspace() or not char.isprintable() for char in value):
        return _bad_endpoint("must not contain spaces or control characters")
    try:
        written, read = urlsplit(value).hostname, URL(value).raw_host
    except ValueError:
        written = read = None
    seen = f" (HTTP clients read its host {written!r} as {read!r})" if written != read else ""
    return _bad_endpoint(
        "must be an ASCII URL, as push services hand out: write an internationalized "
        f"host name in its xn-- form{seen}"
    )


def _bad_endpoint(message: str) -> ValidationError:
    return ValidationError(message, field="endpoint", code="invalid_endpoint")


def host_pattern(pattern: str) -> str:
    """A ``PUSH_ENDPOINT_HOSTS`` entry in the form endpoint hosts are compared with.

    :raises ValueError: for an entry no endpoint host could ever match.
    """
    name = pattern.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        if _is_mapped_or_scoped(ip):
            raise ValueError(f"has {pattern!r}: write an IPv4 address as such, e.g. '127.0.0.1'")
        return str(ip)
    if not _PATTERN.match(name):
        raise ValueError(
            f"has {pattern!r}: a host pattern is ASCII letters, digits, '-', '.' and the "
            "wildcards '*', '?' and '[...]' (an internationalized name in its xn-- form)"
        )
    if not any(char in name for char in "*?[") and _ends_in_number(name):
        raise ValueError(
            f"has {pattern!r}, which no endpoint can match: write an IP address in its "
            "canonical form, e.g. '127.0.0.1'"
        )
    return name


def _b64url(value: Any, field: str) -> bytes:
    raw = text(value, field, max_length=256, required=True) or ""
    try:
        return bytes(b64urldecode(raw.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeEncodeError) as err:
        raise ValidationError("must be base64url", field=field, code="invalid_key") from err


#: what a browser key that is not a P-256 point is told
P256DH_REFUSED = "must be an uncompressed P-256 public key (65 bytes, base64url)"


def p256dh(value: Any, field: str = "keys.p256dh") -> str:
    """The browser's ECDH key: a 65-byte uncompressed point that lies on P-256."""
    raw = _b64url(value, field)
    try:
        if len(raw) != 65 or raw[0] != 4:
            raise ValueError("not an uncompressed point")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as err:
        raise ValidationError(P256DH_REFUSED, field=field, code="invalid_key") from err
    return str(value).rstrip("=")


def auth_secret(value: Any, field: str = "keys.auth") -> str:
    """The browser's authentication secret: exactly 16 bytes."""
    if len(_b64url(value, field)) != 16:
        raise ValidationError("must be 16 bytes, base64url", field=field, code="invalid_key")
    return str(value).rstrip("=")


# -- Mobile installations -----------------------------------------------------


def device_token(value: Any, device_type: str) -> str:
    """A device token in the shape its platform's provider declares (hex for APNs,
    base64url-ish for FCM); a device type no provider serves gets no shape check."""
    from .providers import platforms

    token = text(value, "deviceToken", max_length=512, required=True) or ""
    kind = platforms().get(device_type)
    return kind.device_token(token) if kind is not None else token


def origin_allowed(given: str | None, host: str, allowed: tuple[str, ...]) -> bool:
    """May a page of origin ``given`` make this request to ``host`` (open the websocket,
    post a console form)?

    Without an ``Origin`` the client is not a browser (an app, a server): it has
    no victim's cookies to carry, and it could send any Origin it liked anyway.
    The request's own origin is the Origin's scheme with the request's ``Host``
    (as gorilla/websocket compares them): behind a proxy that terminates TLS the
    request itself looks like plain http, but its Host is the one the browser used.
    """
    if given is None:
        return True
    try:
        page = origin(given, "Origin")  # refuses "null" too
        scheme = page.partition("://")[0]
        own = origin(f"{scheme}://{host}", "Host")
    except ValidationError:
        return False
    return page == own or page in allowed
