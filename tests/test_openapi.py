"""The OpenAPI document: valid, complete, and never contradicted by the server.

The schemathesis run drives every operation of the document against a real app
(on SQLite and on PostgreSQL) as an administrator, with the document's examples,
boundary ("coverage") cases and fuzzed input, valid and not: every answer must be
a documented status with the documented content type and schema, never a 5xx; a
request the document forbids must be refused (4xx), and a request it allows must
not be refused for its shape: a 400 to one names a rule of :data:`BUSINESS_RULES`,
which depend on rows, time, configuration or real keys, not on the request's shape.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flask_push import __version__, categories, credentials
from flask_push.api.openapi import document
from flask_push.schemas.base import Context

from conftest import as_user, b64url, pem, service_account

PREFIX = "/push"
#: the fuzzer acts as an administrator, so that admin routes are exercised too
HEADERS = as_user("alice", admin=True)

#: 400s that a request the document allows may still get, by operation: rules that
#: depend on what is stored, on the clock, on configuration or on real keys, which no
#: JSON Schema can state. Any other 400 to a valid request is a document that
#: promises more than the server takes.
BUSINESS_RULES: dict[str, set[tuple[str, str]]] = {
    # PUSH_ENDPOINT_HOSTS, and the SSRF rules (a host spelled in its one canonical
    # form), which the document says in words: a regex would be a second copy of them
    "createSubscription": {("endpoint_not_allowed", "endpoint"), ("invalid_endpoint", "endpoint")},
    # a new item needs a title; whether the id names an existing item is in the database
    "upsertNotification": {("required", "title")},
    # a token must have the shape of the tokens of the device type it was registered with
    "updateInstallation": {
        ("invalid_device_token", "deviceToken"),
        # only an installation of an app that runs Live Activities (iOS) takes these
        ("invalid_value", "pushToStartToken"),
    },
    "registerActivityToken": {("invalid_value", "pushToken")},
    # at most a year ahead, counted from now; and what the push services take
    "sendMessage": {
        ("invalid_value", "notification.sendAt"),
        ("payload_too_large", "notification"),
    },
    # quiet hours from a time to the same time are no window; JSON Schema cannot
    # compare two fields
    "updatePreferences": {("invalid_value", "quietHours.end")},
    # real keys, and projectId when the credentials name none
    **{
        operation: {
            (code, f"settings.{setting.name}")
            for kind in credentials.KINDS.values()
            for setting in kind.settings
            for code in ("invalid_setting", "missing_setting")
        }
        for operation in ("createProvider", "updateProvider")
    },
}
# a PATCH changes the settings of the stored provider's kind, which its body does not name
BUSINESS_RULES["updateProvider"] |= {
    ("unknown_field", setting.name)
    for kind in credentials.KINDS.values()
    for setting in kind.settings
}


@schemathesis.check
def valid_requests_are_refused_only_by_business_rules(
    ctx: CheckContext, response: Any, case: Any
) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    error = response.json()["error"]
    operation = DOC["paths"][case.operation.path][str(case.operation.method).lower()]
    allowed = BUSINESS_RULES.get(operation["operationId"], set())
    if (error["code"], error.get("field")) not in allowed:
        raise Failure(
            operation=case.operation.label,
            title="A request the document allows was refused",
            message=f"400 {error}: the document does not say why",
        )
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    valid_requests_are_refused_only_by_business_rules,
]
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            # Refused is any 4xx: 413 too, for a body over PUSH_MAX_REQUEST_BYTES (a
            # list at its maxItems and beyond, say).
            "negative_data_rejection": {"expected-statuses": ["4xx"]},
            # 400 is judged by the check above
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "413", "429"]
            },
        }
    }
)
_AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}


def _p256_public_key(secret: int) -> str:
    key = ec.derive_private_key(secret, ec.SECP256R1()).public_key()
    raw = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


# The formats the document names for what a pattern cannot say: what they generate is
# what the server takes (a point on the curve, an endpoint PUSH_ENDPOINT_HOSTS allows).
schemathesis.openapi.format("p256-public-key", st.integers(1, 2**255).map(_p256_public_key))
schemathesis.openapi.format(
    "push-endpoint",
    st.from_regex(r"[A-Za-z0-9_:-]{1,200}", fullmatch=True).map(
        lambda token: f"https://fcm.googleapis.com/fcm/send/{token}"
    ),
)

#: the fuzzed app's categories: a required one, one with some channels, an opt-in one
CATEGORIES = {
    "order_status": {"label": "Order updates", "required": True},
    "shares": {"label": "Shares", "channels": ["web", "inbox"], "max_per_day": 3},
    "news": {"label": "News", "default": False},
}
LIMITS = Context(categories=tuple(categories.load({"PUSH_CATEGORIES": CATEGORIES}).values()))
DOC = document(PREFIX, server="http://localhost", limits=LIMITS)
#: loaded from the document itself, so that pytest can make one test per operation;
#: ``test_served_document_covers_every_route`` ties it to what the app serves
schema = schemathesis.openapi.from_dict(DOC, config=CONFIG)


def _routes(app: Flask, prefix: str) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every URL rule under ``prefix``."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.websocket:  # <prefix>/ws: OpenAPI does not describe websockets
            continue
        if rule.endpoint.startswith("push_console."):  # HTML pages, not the JSON API
            continue
        if rule.rule == prefix or rule.rule.startswith(prefix + "/"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            methods = (rule.methods or set()) - _AUTOMATIC_METHODS
            routes |= {(method, path) for method in methods}
    return routes


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op) for path, item in doc["paths"].items() for method, op in item.items()
    ]


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    # The fuzzer makes hundreds of subscriptions from one address, far over
    # PUSH_SUBSCRIBE_RATE_LIMIT; the limit has tests of its own (test_subscriptions.py).
    return make_app(PUSH_SUBSCRIBE_RATE_LIMIT=None, PUSH_CATEGORIES=CATEGORIES)


# -- the document -------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    doc = document(PREFIX, server="https://shop.example")
    validate(doc)  # raises on any departure from the OpenAPI 3.1 schema
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "flask-push"
    assert doc["info"]["version"] == __version__
    assert doc["servers"] == [{"url": "https://shop.example"}]
    assert "session" in doc["info"]["description"]
    json.dumps(doc, allow_nan=False)  # plain JSON, as the route serves it


def test_served_document_covers_every_route(client: Any, app: Flask) -> None:
    response = client.get(f"{PREFIX}/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = response.get_json()
    assert served == document(
        PREFIX, server="http://localhost", limits=LIMITS, service_worker="/push-sw.js"
    )
    routes = _routes(app, PREFIX)
    assert routes, "no routes under the prefix"
    # and the service worker, which the app serves at its root
    assert _documented(served) == routes | {("GET", "/push-sw.js")}
    worker = served["paths"]["/push-sw.js"]["get"]["responses"]["200"]
    assert client.get("/push-sw.js").mimetype in worker["content"]


def test_document_follows_the_prefix(make_app: Callable[..., Flask]) -> None:
    app = make_app(PUSH_URL_PREFIX="/api/v1/push")
    doc = app.test_client().get("/api/v1/push/openapi.json").get_json()
    worker = ("GET", "/push-sw.js")
    assert _documented(doc) == _routes(app, "/api/v1/push") | {worker}
    assert all(path.startswith("/api/v1/push/") for path in doc["paths"] if path != worker[1])


def test_document_names_the_configured_service_worker(make_app: Callable[..., Flask]) -> None:
    """Section 3 lists `GET <PUSH_SERVICE_WORKER_URL>`; the document has it where it is."""
    app = make_app(PUSH_SERVICE_WORKER_URL="/static/js/sw.js")
    doc = app.test_client().get("/push/openapi.json").get_json()
    assert "/push-sw.js" not in doc["paths"]
    operation = doc["paths"]["/static/js/sw.js"]["get"]
    assert operation["operationId"] == "getServiceWorker"
    assert "application/javascript" in operation["responses"]["200"]["content"]


def test_server_url_includes_the_mount_point(app: Flask) -> None:
    """Under a WSGI mount (``SCRIPT_NAME``), paths are relative to the mount point."""
    response = app.test_client().get("/push/openapi.json", base_url="http://localhost/shop/")
    assert response.status_code == 200
    assert response.get_json()["servers"] == [{"url": "http://localhost/shop"}]


def test_operations_are_described_consistently() -> None:
    ids = [op["operationId"] for _, _, op in _operations(DOC)]
    assert len(ids) == len(set(ids))
    shared = DOC["components"]["responses"]
    for path, method, op in _operations(DOC):
        where = (method, path)
        for status, answer in op["responses"].items():
            if "$ref" in answer:
                answer = shared[answer["$ref"].rsplit("/", 1)[1]]
            if path.endswith("/health"):  # a load balancer reads the same body at 200 and 503
                assert answer["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Health"
                }, (where, status)
            elif int(status) >= 400:
                assert answer["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }, (where, status)
            elif status == "204":
                assert "content" not in answer, where
            elif path.endswith("/static/{filename}"):  # the browser client and its CSS
                assert list(answer["content"]) == ["application/javascript", "text/css"], where
            elif path.endswith("/metrics"):  # Prometheus' text format
                assert list(answer["content"]) == ["text/plain"], where
            else:
                assert "application/json" in answer["content"], (where, status)
            for link in answer.get("links", {}).values():
                assert link["operationId"] in ids, (where, link)
        if "requestBody" in op:
            # optional only where no field is taken: a POST that may have no body
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            optional = schema == {"$ref": "#/components/schemas/NoFields"}
            assert op["requestBody"]["required"] is not optional, where
            assert not optional or method == "post", where
            assert list(op["requestBody"]["content"]) == ["application/json"], where
            assert {"400", "413", "415"} <= set(op["responses"]), where
        if "{id}" in path:
            assert "404" in op["responses"], where


#: the fields each request body takes (CONTRACT.md section 3)
REQUEST_FIELDS = {
    "SubscriptionCreate": {"endpoint", "expirationTime", "keys", "topics", "oldEndpoint"},
    "PushKeys": {"p256dh", "auth"},
    "InstallationCreate": {
        "appId", "deviceToken", "deviceType", "userId", "subscriptions", "badge",
        "timeZone", "appVersion", "pushToStartToken",
    },
    "InstallationUpdate": {
        "deviceToken", "userId", "subscriptions", "badge", "timeZone", "appVersion",
        "pushToStartToken",
    },
    "ActivityTokenCreate": {"activityId", "pushToken"},
    "InboxItemUpsert": {
        "id", "userId", "type", "title", "body", "url", "data", "isNew", "progress",
    },
    "ProviderUpdate": {"settings"},
    "MessageCreate": {"audience", "notification"},
    "MessageNotification": {
        "title", "body", "url", "icon", "image", "badge", "sound", "tag", "data", "ttl",
        "urgency", "collapseKey", "sendAt", "idempotencyKey", "inbox", "notifyType",
        "category",
    },
    "PreferencesUpdate": {"categories", "quietHours"},
    "QuietHours": {"start", "end", "timeZone"},
    "MessageClick": {"clickToken"},
}  # fmt: skip


def test_request_schemas_name_the_fields_the_server_takes() -> None:
    """Unknown fields are refused, so the document must list exactly the accepted ones."""
    schemas = DOC["components"]["schemas"]

    def fields(name: str) -> set[str]:
        assert schemas[name]["additionalProperties"] is False, name
        return set(schemas[name]["properties"])

    for name, expected in REQUEST_FIELDS.items():
        assert fields(name) == expected, name
    audiences = DOC["components"]["schemas"]["MessageAudience"]["oneOf"]
    assert [list(shape["properties"]) for shape in audiences] == [
        ["users"], ["topic"], ["query"], ["everyone"]
    ]  # fmt: skip
    assert all(shape["additionalProperties"] is False for shape in audiences)
    for title, kind in credentials.KINDS.items():
        name = {"webpush": "WebPush", "fcm": "Fcm", "apns": "Apns"}[title]
        assert fields(f"{name}Settings") == {setting.name for setting in kind.settings}
        assert fields(f"{name}ProviderCreate") == {"appId", "kind", "settings"}


# -- schemathesis ---------------------------------------------------------------------


def _example(name: str) -> dict[str, Any]:
    example: dict[str, Any] = DOC["components"]["schemas"][name]["examples"][0]
    return example


def _call(app: Flask, method: str, path: str, body: Any = None, id: str | None = None) -> Any:
    """One request that must conform to the document, made through schemathesis."""
    operation = schema[f"{PREFIX}{path}"][method]
    parts: dict[str, Any] = {"path_parameters": {"id": id}} if id is not None else {}
    if body is not None:
        parts.update(body=body, media_type="application/json")
    case = operation.Case(**parts)
    return case.call_and_validate(app=app, headers=HEADERS, checks=CHECKS)


class Rows:
    """Rows that exist, made through the API, for the operations that take an id.

    Random ids only ever meet 404s; half the cases get the id of a real row instead,
    made again (the same way) when an earlier case deleted it.
    """

    def __init__(self, app: Flask, vapid_private_key: str) -> None:
        self.app = app
        self.provider = {
            "appId": "com.example.shop",
            "kind": "webpush",
            "settings": {"privateKey": vapid_private_key, "subject": "mailto:ops@shop.example"},
        }

    def _create(self, path: str, body: dict[str, Any]) -> str:
        response = _call(self.app, "POST", path, body)
        assert response.status_code in (200, 201, 202), response.json()
        return str(response.json()["id"])

    def id_for(self, path: str) -> str:
        resource = path.removeprefix(PREFIX).split("/")[1]
        if resource == "subscriptions":
            return self._create("/subscriptions", _example("SubscriptionCreate"))
        if resource == "installations":
            return self._create("/installations", _example("InstallationCreate"))
        if resource == "notifications":
            return self._create("/notifications", _example("InboxItemUpsert"))
        if resource == "messages":
            return self._create("/messages", _example("MessageCreate"))
        if resource == "users":
            # a user is known by a subscription of theirs: the caller's own
            self._create("/subscriptions", _example("SubscriptionCreate"))
            return "alice"
        assert resource == "providers", path
        existing = _call(self.app, "GET", "/providers").json()["items"]
        return str(existing[0]["id"]) if existing else self._create("/providers", self.provider)


@pytest.fixture
def rows(app: Flask, vapid_private_key: str) -> Rows:
    return Rows(app, vapid_private_key)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    # One app (and database) per operation, shared by its cases: rows that a case
    # makes are there for the next one, which is what we want.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_never_contradicts_its_document(case: Any, app: Flask, rows: Rows) -> None:
    """Examples, boundary cases and fuzzed input, valid and not, for each operation."""
    given = (case.path_parameters or {}).get("id")
    # Decided by the case itself, so that Hypothesis replays a case the same way.
    if isinstance(given, str) and zlib.crc32(given.encode("utf-8", "replace")) % 2:
        case.path_parameters = {**case.path_parameters, "id": rows.id_for(case.operation.path)}
    case.call_and_validate(app=app, headers=HEADERS, checks=CHECKS)


def test_every_provider_kind_conforms(app: Flask, vapid_private_key: str) -> None:
    """The fuzzer cannot make valid keys: one provider of each kind, made by hand."""
    settings_by_kind = {
        "webpush": {"privateKey": vapid_private_key, "subject": "https://shop.example"},
        "fcm": {"credentials": service_account()},
        "apns": {
            "key": pem(ec.generate_private_key(ec.SECP256R1())),
            "keyId": "ABC123DEFG",
            "teamId": "DEF123GHIJ",
            "topic": "com.example.shop",
            "sandbox": True,
        },
    }
    for kind, settings_ in settings_by_kind.items():
        created = _call(
            app,
            "POST",
            "/providers",
            {"appId": "com.example.shop", "kind": kind, "settings": settings_},
        )
        assert created.status_code == 201, created.json()
        assert created.json()["kind"] == kind
        again = _call(
            app,
            "POST",
            "/providers",
            {"appId": "com.example.shop", "kind": kind, "settings": settings_},
        )
        assert again.status_code == 409
        id = created.json()["id"]
        patched = _call(app, "PATCH", "/providers/{id}", {"settings": {}}, id=id)
        assert patched.status_code == 200
        assert patched.json()["settings"] == created.json()["settings"]
        assert _call(app, "GET", "/providers/{id}", id=id).json() == patched.json()
    listing = _call(app, "GET", "/providers").json()
    assert sorted(item["kind"] for item in listing["items"]) == ["apns", "fcm", "webpush"]


# -- inputs that once answered 500 (found by the run above, or next to what it found) --


def _encrypted_pem() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        .decode()
    )


def _apns(**settings_: Any) -> str:
    base = {"key": pem(ec.generate_private_key(ec.SECP256R1())), "keyId": "ABC123DEFG"}
    base.update(teamId="DEF123GHIJ", topic="com.example.shop", **settings_)
    return json.dumps({"appId": "com.example.shop", "kind": "apns", "settings": base})


_SUBSCRIPTION = _example("SubscriptionCreate")
_DEEP = '{"title": "x", "data": ' + '{"a": ' * 2000 + "1" + "}" * 2000 + "}"

REFUSED = {
    "expiration after the year 9999": (
        "POST",
        "/subscriptions",
        json.dumps({**_SUBSCRIPTION, "expirationTime": 253_402_300_800_000}),
        400,
        "expirationTime",
    ),
    "unhashable provider kind": (
        "POST",
        "/providers",
        '{"appId": "a", "kind": {}, "settings": {}}',
        400,
        "kind",
    ),
    "NUL in a string": (
        "POST",
        "/providers",
        '{"appId": "a\\u0000b", "kind": "apns", "settings": {}}',
        400,
        "appId",
    ),
    "unpaired surrogate in a string": (
        "POST",
        "/notifications",
        '{"title": "a\\ud800"}',
        400,
        "title",
    ),
    "NUL in a path id": ("DELETE", "/subscriptions/a%00b", None, 404, None),
    "unbalanced IPv6 bracket in a link": (
        "POST",
        "/notifications",
        '{"title": "x", "url": "http://["}',
        400,
        "url",
    ),
    "unbalanced IPv6 bracket in a base URL": (
        "POST",
        "/providers",
        _apns(baseUrl="https://["),
        400,
        "settings.baseUrl",
    ),
    "encrypted APNs key": ("POST", "/providers", _apns(key=_encrypted_pem()), 400, "settings.key"),
    "NaN": ("POST", "/notifications", '{"title": "x", "data": {"a": NaN}}', 400, None),
    "Infinity": (
        "POST",
        "/notifications",
        '{"title": "x", "progress": {"total": Infinity, "processed": 1}}',
        400,
        None,
    ),
    "a number too large for a float": (
        "POST",
        "/notifications",
        '{"title": "x", "data": {"a": 1e400}}',
        400,
        None,
    ),
    "JSON nested past the recursion limit": ("POST", "/notifications", _DEEP, 400, None),
    "a topic with a trailing newline": (
        "POST",
        "/subscriptions",
        json.dumps({**_SUBSCRIPTION, "topics": ["offers\n"]}),
        400,
        "topics",
    ),
}


@pytest.mark.parametrize("what", list(REFUSED))
def test_bad_input_is_refused_not_a_crash(client: Any, what: str) -> None:
    method, path, body, status, field = REFUSED[what]
    headers = {**HEADERS, "Content-Type": "application/json"}
    response = client.open(f"{PREFIX}{path}", method=method, data=body, headers=headers)
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error.get("field") == field, error
